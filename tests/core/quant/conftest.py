"""Quantization tests: helpers live in quant_helpers (tiny random models).
"""

from __future__ import annotations

