"""Weight quantization schemes."""
