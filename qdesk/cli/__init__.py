"""``qdesk``: the app's jobs without a screen, one module per subcommand.

Exit codes (DESIGN.md): 0 ok, 2 bad input, 3 out of resources, 130 cancelled.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from qdesk.cli.chat import add_chat_parser
from qdesk.cli.common import Parser, quiet_libraries
from qdesk.cli.compare import add_compare_parser
from qdesk.cli.export import add_export_parser
from qdesk.cli.gui import add_gui_parser
from qdesk.cli.info import add_info_parser
from qdesk.cli.quantize import add_quantize_parser
from qdesk.core.errors import Cancelled, OutOfResources, QdeskError
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        quiet_libraries()
        return args.func(args)
    except QdeskError as e:
        print(f"qdesk: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("qdesk: cancelled", file=sys.stderr)
        return Cancelled.exit_code
    except MemoryError:
        print("qdesk: error: out of memory", file=sys.stderr)
        return OutOfResources.exit_code
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
            print(f"qdesk: error: out of memory ({e})".splitlines()[0], file=sys.stderr)
            return OutOfResources.exit_code
        raise
