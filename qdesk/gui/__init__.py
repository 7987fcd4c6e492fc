"""PySide6 + pyqtgraph widgets. Talks to qdesk.core only through workers and
core's plain dataclasses; never imports torch, transformers or llama_cpp."""
