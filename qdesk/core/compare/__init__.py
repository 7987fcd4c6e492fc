"""Comparing a model with its reference: live per-token agreement during a chat,
llama.cpp-compatible divergence statistics over fixed text, reply lengths."""
