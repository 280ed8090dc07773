"""fastdraft: speculative decoding on the OpenVINO runtime, and the factory for its draft models."""
