"""``qdesk gui``: open the app (or drive it with a script and save a screenshot)."""

from __future__ import annotations

import logging
from pathlib import Path

from qdesk.core.errors import BadInput


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        size = int(w), int(h)
    except ValueError:
        size = None
    if not sep or size is None or min(size) < 200 or max(size) > 10000:
        raise BadInput(f"--size wants WIDTHxHEIGHT (e.g. 1280x800), not {text!r}")
    return size


def add_gui_parser(sub) -> None:
    g = sub.add_parser("gui", help="open the app")
    g.add_argument("model", nargs="*", help="models to load (default: the demo model)")
    g.add_argument("--script", type=Path, default=None,
                   help="run the actions of this file (see qdesk/gui/script.py), then exit")
    g.add_argument("--screenshot", type=Path, default=None,
                   help="with --script: save a PNG of the whole window at the end")
    g.add_argument("--size", default=None, help="window size WIDTHxHEIGHT, e.g. 1280x800")
    g.add_argument("--language", choices=("en", "zh_CN"), default=None,
                   help="show the window in this language (default: the settings, else the system's)")
    g.set_defaults(func=cmd_gui)


def cmd_gui(args) -> int:
    from qdesk.gui.system_check import check_system

    if args.screenshot is not None and args.script is None:
        raise BadInput("--screenshot needs --script (the actions to run before the picture)")
    if args.screenshot is not None and not args.screenshot.expanduser().parent.is_dir():
        raise BadInput(f"{args.screenshot.parent}: no such folder for the screenshot")
    size = _size(args.size) if args.size else None
    problem = check_system()
    if problem:
        raise BadInput(problem)
    from qdesk.app import run_app

    models = args.model if args.model else None
    code = run_app(models, script=args.script, screenshot=args.screenshot,
                   language=args.language, size=size)
    # The window is closed, its jobs ended and the settings written (every change
    # syncs). End here without the interpreter's teardown: the Triton kernels
    # (qdesk_kernels, imported once a quantized model opens) print nanobind leak
    # reports to stderr there, and Qt's objects are freed in an arbitrary order.
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
