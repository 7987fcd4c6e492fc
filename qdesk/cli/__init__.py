"""``qdesk``: the app's jobs without a screen, one module per subcommand.

Exit codes (DESIGN.md): 0 ok, 2 bad input, 3 out of resources, 130 cancelled.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from qdesk.cli.chat import add_chat_parser
from qdesk.cli.common import Parser, end_status_line, quiet_libraries
from qdesk.cli.compare import add_compare_parser
from qdesk.cli.export import add_export_parser
from qdesk.cli.gui import add_gui_parser
from qdesk.cli.info import add_info_parser
from qdesk.cli.quantize import add_quantize_parser
from qdesk.core.errors import Cancelled, OutOfResources, QdeskError, is_disk_full
from qdesk.core.threads import configure_openmp

configure_openmp()  # before torch or llama.cpp start their thread pools

log = logging.getLogger("qdesk")


def build_parser() -> Parser:
    p = Parser(prog="qdesk", description="Quantize a language model and see what changed.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (add_gui_parser, add_info_parser, add_chat_parser, add_quantize_parser,
                add_compare_parser, add_export_parser):
        add(sub)
    return p


def _terminate_like_interrupt(signum, frame):
    """SIGTERM (a logout, ``kill``, a service manager) ends a job the way Ctrl-C
    does: the running step's cleanup removes its partial files, exit 130."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():  # signals live there only
        return _main(argv)
    before = signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(argv: Sequence[str] | None) -> int:
    verbose = False
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        if args.command == "gui" and threading.current_thread() is threading.main_thread():
            # Raised inside a Qt slot, KeyboardInterrupt would not end the event
            # loop: the window keeps the default SIGTERM (the process ends).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        quiet_libraries()
        return args.func(args)
    except QdeskError as e:
        end_status_line()
        print(f"qdesk: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        end_status_line()
        print("qdesk: cancelled", file=sys.stderr)
        return Cancelled.exit_code
    except MemoryError:
        end_status_line()
        print("qdesk: error: out of memory", file=sys.stderr)
        return OutOfResources.exit_code
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
            end_status_line()
            print(f"qdesk: error: out of memory ({e})".splitlines()[0], file=sys.stderr)
            return OutOfResources.exit_code
        if is_disk_full(e):  # a writer without its own message (the job's own say how much)
            where = getattr(e, "filename", None)
            print(f"qdesk: error: disk full{f' writing {where}' if where else ''}: free some "
                  "space and try again", file=sys.stderr)
            return OutOfResources.exit_code
        # A bug, not bad input: still one line; -v shows the traceback for a report.
        if verbose:
            traceback.print_exc()
        text = " ".join(str(e).split())[:300]
        print(f"qdesk: internal error: {type(e).__name__}: {text} (run with -v for details)",
              file=sys.stderr)
        return 1
