"""Where models come from and how they become OpenVINO IR: catalog, GGUF assembly, conversion, export, compatibility."""
