"""Speculative decoding engine on the OpenVINO runtime: works on token ids only; knows nothing about HTTP."""
