"""Compute and data: models, chat, quantization, analysis, export. Never imports Qt."""
