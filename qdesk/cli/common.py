"""What every subcommand shares: the parser that turns usage errors into one
line, the model-loading options, progress on stderr, library quieting."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from qdesk.core.errors import BadInput


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other bad input
        raise BadInput(f"{self.prog}: {message}")


def quiet_libraries() -> None:
    """No third-party progress bars or advice on stderr: qdesk prints its own."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # transformers absent or changed: only noise is at stake
        pass


def progress_to_stderr(stage: str, done: int, total: int) -> None:
    if stage == "download":
        msg = f"downloading {done / 2**20:.0f} / {total / 2**20:.0f} MiB"
    else:
        msg = f"{stage} {done}/{total}"
    print(f"\r{msg}", end="\n" if done >= total else "", file=sys.stderr, flush=True)


def backends_for(models: Sequence[str], spec: str) -> list[str]:
    """One backend for every model, or a comma list with one per model."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) == 1:
        return parts * len(models)
    if len(parts) != len(models):
        raise BadInput(f"--backend names {len(parts)} backends for {len(models)} models")
    return parts


def add_load_options(p: argparse.ArgumentParser, backend_help: str) -> None:
    p.add_argument("--backend", default="auto", help=backend_help)
    p.add_argument(
        "--dtype", choices=("bfloat16", "float32", "float16"), default=None,
        help="transformers backend: compute dtype (default: bf16 on CUDA, the faster on the CPU)",
    )
    p.add_argument("--n-ctx", type=int, default=None, help="llama.cpp backend: context size")
    p.add_argument(
        "--trust-remote-code", action="store_true",
        help="run Python code shipped with the model (only for models you trust)",
    )


def load_options(args) -> dict:
    if args.n_ctx is not None and args.n_ctx < 16:
        raise BadInput(f"--n-ctx must be at least 16, got {args.n_ctx}")
    return {
        "backend": args.backend, "dtype": args.dtype, "n_ctx": args.n_ctx,
        "trust_remote_code": args.trust_remote_code,
    }
