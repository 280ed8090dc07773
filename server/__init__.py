"""OpenAI-compatible HTTP service in front of the drafting engine."""
