"""qdesk: quantize a language model locally and see what quantization changed."""

__version__ = "0.1.0"
