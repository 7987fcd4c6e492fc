"""``qdesk gui``: open the app."""

from __future__ import annotations


def add_gui_parser(sub) -> None:
    g = sub.add_parser("gui", help="open the app")
    g.add_argument("model", nargs="?", default="demo")
    g.set_defaults(func=cmd_gui)


def cmd_gui(args) -> int:
    from qdesk.app import run_app

    return run_app(args.model)
