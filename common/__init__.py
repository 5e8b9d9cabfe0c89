"""The quantization core shared by every paper of the suite."""
