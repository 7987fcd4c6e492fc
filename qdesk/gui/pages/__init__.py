"""The pages of the main window, one module each, in the order of the page bar.

A page module defines ``create_page(context) -> QWidget``; the widget has a
``page_key`` attribute and a ``page_title()`` method (translated, asked again
when the language changes). A module listed here that does not exist (yet) is
skipped, so a developer adds a page by creating its module.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

log = logging.getLogger(__name__)

PAGE_MODULES = ("quantize", "chat", "compare", "export", "studies")


def _factory(name: str):
    module_name = f"{__name__}.{name}"
    if importlib.util.find_spec(module_name) is None:
        return None
    factory = getattr(importlib.import_module(module_name), "create_page", None)
    if factory is None:
        log.warning("%s has no create_page(context): not shown", module_name)
    return factory


def available_pages() -> list:
    """The ``create_page`` functions of the page modules that exist, in order."""
    factories = []
    for name in PAGE_MODULES:
        factory = _factory(name)
        if factory is not None:
            factories.append(factory)
    return factories
