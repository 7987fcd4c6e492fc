"""Verification: the exported file reopened in the program that consumes it,
held-out text through it and through qdesk's in-memory model, and the
llama-perplexity --kl-divergence statistics between them."""

from __future__ import annotations

import time
from collections.abc import Iterator

from qdesk.core.export.events import ExportProgress, Verification

EXACT_MAX_KLD = 0.001
EXACT_MIN_SAME_TOP = 0.99

ACTIVATION_NOTE = (
    "llama.cpp's CPU backend rounds activations to 8 bits (Q8_0 blocks) in every Q4_0/Q5_0/"
    "Q8_0 matrix product, so even exact weights differ from qdesk's float computation")


def verify_steps(reference, candidate, consumer: str, text: str, ctx: int, chunks: int,
                 exact_expected: bool, weights_exact: bool | None = None,
                 rounded_scales: int = 0, note: str = "") -> Iterator[ExportProgress]:
    """Score ``text`` (a built-in text name or file) on ``reference`` (the
    LoadedModel the export came from) and ``candidate`` (a LogitsBackend on the
    exported file); one event per window. Returns a ``Verification``."""
    from qdesk.core.compare.divergence import DivergenceDone, divergence_steps
    from qdesk.core.compare.texts import encode_text, load_text

    t0 = time.perf_counter()
    name, body = load_text(text)
    ids, bos = encode_text(reference.backend.tokenizer, body)
    ctx = min(ctx, reference.backend.n_ctx, candidate.n_ctx)
    windows = max(1, min(chunks, len(ids) // ctx))
    done = None
    for ev in divergence_steps(reference.backend, [candidate], ids, ctx=ctx, chunks=windows,
                               bos_id=bos):
        if isinstance(ev, DivergenceDone):
            done = ev.reports[0]
        else:
            yield ExportProgress("verify", ev.index + 1, ev.total, f"window {ev.index + 1}")
    passed = None
    if exact_expected:
        passed = bool(weights_exact is not False and done.mean_kld < EXACT_MAX_KLD
                      and done.same_top_p >= EXACT_MIN_SAME_TOP)
    return Verification(
        consumer=consumer, text=name, ctx=ctx, windows=done.windows, tokens=done.tokens,
        mean_kld=float(done.mean_kld), same_top_p=float(done.same_top_p),
        ppl_ratio=float(done.ppl_ratio), seconds=time.perf_counter() - t0,
        exact_expected=exact_expected, passed=passed, weights_exact=weights_exact,
        rounded_scales=rounded_scales, note=note,
    )
