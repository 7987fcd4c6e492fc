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
    """No third-party progress bars or advice on stderr: qdesk prints its own.

    Runs before transformers loads (and with it tqdm and compressed-tensors)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    _quiet_tqdm()
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # transformers absent or changed: only noise is at stake
        pass


def _quiet_tqdm() -> None:
    """compressed-tensors draws tqdm bars whenever transformers loads one of its
    checkpoints on its own route ("Applying quantization config", "Compressing
    model", "Dispatching model", "Decompressing model"); some pass an explicit
    ``disable=False``, which beats TQDM_DISABLE. So the tqdm class that later
    ``from tqdm import tqdm`` statements get is one that never draws. qdesk's hub
    download subclasses it, disables it anyway and counts bytes itself."""
    try:
        import tqdm
        import tqdm.auto
        import tqdm.std
    except ImportError:
        return
    if getattr(tqdm.std.tqdm, "qdesk_quiet", False):
        return

    def quiet(base):
        class QuietTqdm(base):
            qdesk_quiet = True

            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

        QuietTqdm.__name__ = QuietTqdm.__qualname__ = base.__name__
        return QuietTqdm

    tqdm.tqdm = tqdm.std.tqdm = quiet(tqdm.std.tqdm)
    tqdm.auto.tqdm = quiet(tqdm.auto.tqdm)


_status_line_open = False  # a "\r" progress line on stderr still waits for its newline


def status_line(text: str, finished: bool = False) -> None:
    """Rewrite the one progress line on stderr; ``finished`` ends it."""
    global _status_line_open
    print(f"\r{text}", end="\n" if finished else "", file=sys.stderr, flush=True)
    _status_line_open = not finished


def end_status_line() -> None:
    """End an unfinished progress line, so that an error message starts a line of its own."""
    global _status_line_open
    if _status_line_open:
        print(file=sys.stderr, flush=True)
        _status_line_open = False


def progress_to_stderr(stage: str, done: int, total: int) -> None:
    if stage == "download":
        msg = f"downloading {done / 2**20:.0f} / {total / 2**20:.0f} MiB"
    else:
        msg = f"{stage} {done}/{total}"
    status_line(msg, finished=done >= total)


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
    p.add_argument(
        "--int8-activations", action="store_true",
        help="packed checkpoints on the CPU: decode with activations rounded to int8 per 64 "
             "values (faster, as llama.cpp does; not the checkpoint's exact product)",
    )


def note_int8_activations(args, loaded) -> None:
    """One line on stderr when ``--int8-activations`` left a model exact (a dense
    model, llama.cpp, codes the int8 step does not take): the switch is
    otherwise silent, and a user comparing speeds should know which ran it."""
    if not getattr(args, "int8_activations", False):
        return
    exact = [m.facts.name for m in loaded if not m.facts.quantization.get("int8_activations")]
    if not exact:
        return
    which = ("applies to none of the models" if len(exact) == len(loaded) > 1
             else "does not apply to " + ", ".join(exact))
    print(f"qdesk: --int8-activations {which}: it takes only packed 2-4-bit checkpoints in "
          "groups of 64s on qdesk's CPU kernels; exact products there", file=sys.stderr)


def load_options(args) -> dict:
    if args.n_ctx is not None and args.n_ctx < 16:
        raise BadInput(f"--n-ctx must be at least 16, got {args.n_ctx}")
    return {
        "backend": args.backend, "dtype": args.dtype, "n_ctx": args.n_ctx,
        "trust_remote_code": args.trust_remote_code,
        "int8_activations": getattr(args, "int8_activations", False),
    }
