"""Controls, one per module. A widget gets plain data (core's frozen events and
dataclasses) and emits signals; it never starts work itself."""
