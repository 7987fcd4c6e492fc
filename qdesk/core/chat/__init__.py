"""Streaming chat with per-token statistics, on any backend that yields logits."""
