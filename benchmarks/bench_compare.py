"""Comparison engine speed on the demo model (dense BF16 reference, Q4_1 GGUF pane).

1. Live agreement: a two-pane chat (reference on transformers, the shipped
   Q4_1 GGUF on llama.cpp), greedy, a fixed number of tokens per pane; decode
   tokens/s of the whole session with agreement off (plain ChatSession) and on
   (ComparedSession), the latter both as shipped (reusing the reference pane's
   logits while the paths agree) and forced to step the scorer for every token
   (the worst case: the paths part at the first token), with the scorer's step
   batched into the reference pane's own forward pass (as shipped) and alone
   (the previous design). Runs alternate and the median is reported.
   Target (issue 4): on / off >= 0.60.
2. ``qdesk compare``: divergence_steps over the built-in held-out text,
   WINDOWS windows of CTX tokens, reference vs the GGUF, wall time per run.
   Target: 32 windows of 512 in under 120 s on the CPU.

    .venv/bin/python benchmarks/bench_compare.py [--runs 3] [--tokens 48] [--windows 32]

On a 2-core machine shared with other work, transformers' two intra-op threads
stall whenever one of them is descheduled, which swamps any ratio; the default
--torch-threads 1 keeps the runs comparable (llama.cpp decodes on one thread).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def _session_rate(session, n_panes: int) -> float:
    """Decode tokens/s of a whole session: tokens after each pane's first, over the time
    from the last pane's first token to the end."""
    t_first = None
    tokens = 0
    seen = set()
    for ev in session.send(PROMPT):
        pane = getattr(ev, "pane", None)
        if type(ev).__name__ in ("PaneToken", "ComparedToken"):
            if pane not in seen:
                seen.add(pane)
                if len(seen) == n_panes:
                    t_first = time.perf_counter()
                continue
            if t_first is not None:
                tokens += 1
    return tokens / (time.perf_counter() - t_first)


def bench_live(ref, pane, runs: int, n_tokens: int) -> None:
    from qdesk.core.chat.events import SamplingConfig
    from qdesk.core.chat.session import ChatSession
    from qdesk.core.compare.live import ComparedSession

    # The end token is not suppressed; a long-story prompt keeps both panes going.
    sampling = SamplingConfig(max_new_tokens=n_tokens)
    setups = {
        "on, as shipped": {},
        "on, scorer every token": {"reuse_reference": False},
        "  same, scorer alone": {"reuse_reference": False, "batch": False},
    }
    rates = {"off": [], **{k: [] for k in setups}}
    batched = {k: 0 for k in setups}
    for _ in range(runs):
        rates["off"].append(_session_rate(ChatSession([ref, pane], sampling), 2))
        for name, options in setups.items():
            s = ComparedSession(ref, [pane], sampling, reverse=False, **options)
            rates[name].append(_session_rate(s, 2))
            batched[name] = s.batched_steps
            s.close_scorers()
    off = statistics.median(rates["off"])
    print(f"\nlive agreement, 2 panes ({ref.name} [{ref.kind}] + {pane.name} [{pane.kind}]), "
          f"{n_tokens} tokens each, median of {runs}")
    print(f"{'agreement':<26}{'tokens/s':>10}{'ratio to off':>14}{'batched steps':>15}   runs")
    for k, v in rates.items():
        m = statistics.median(v)
        runs_s = " ".join(f"{x:.1f}" for x in v)
        print(f"{k:<26}{m:>10.2f}{m / off:>14.2f}{batched.get(k, 0):>15}   {runs_s}")


def bench_divergence(ref, pane, runs: int, windows: int, ctx: int) -> None:
    from qdesk.core.compare.divergence import DivergenceDone, divergence_steps
    from qdesk.core.compare.texts import encode_text, load_text

    ids, bos = encode_text(ref.tokenizer, load_text("heldout")[1])
    have = len(ids) // ctx
    times, report = [], None
    spent = {ref.name: 0.0, pane.name: 0.0}
    scores = {}
    for b in (ref, pane):  # time each backend's scoring, the rest is statistics
        def timed(window, _b=b, _score=b.score):
            t = time.perf_counter()
            out = _score(window)
            spent[_b.name] += time.perf_counter() - t
            return out
        scores[b.name] = b.score
        b.score = timed
    for _ in range(runs):
        t = time.perf_counter()
        for ev in divergence_steps(ref, [pane], ids, ctx=ctx, chunks=windows, bos_id=bos):
            if isinstance(ev, DivergenceDone):
                report = ev.reports[0]
            else:
                print(f"  window {ev.index + 1}/{ev.total}: {ev.seconds:.1f} s", flush=True)
        times.append(time.perf_counter() - t)
    for b in (ref, pane):
        b.score = scores[b.name]
    n = min(have, windows)
    med = statistics.median(times)
    print(f"\nqdesk compare: {n} windows of {ctx} (the built-in text holds {have}), "
          f"median of {runs}")
    print(f"{'wall s':>8}{'s/window':>10}{'32-window estimate s':>22}   runs")
    print(f"{med:>8.1f}{med / n:>10.2f}{32 * med / n:>22.1f}   "
          + " ".join(f"{x:.1f}" for x in times))
    total = sum(times)
    print(f"share of time: reference scoring {spent[ref.name] / total:.0%}, "
          f"model scoring {spent[pane.name] / total:.0%}, statistics and the rest "
          f"{1 - (spent[ref.name] + spent[pane.name]) / total:.0%}")
    print(f"mean KLD {report.mean_kld:.6f} ± {report.mean_kld_unc:.6f}, "
          f"same top p {100 * report.same_top_p:.2f}%, PPL(Q) {report.ppl_q:.3f}, "
          f"PPL(base) {report.ppl_base:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument(
        "--torch-threads", type=int, default=1,
        help="intra-op threads for transformers (1 keeps runs steady on a shared 2-core box)",
    )
    ap.add_argument(
        "--llama-threads", type=int, default=0,
        help="if > 0, llama.cpp's decode and batch threads for the GGUF pane (0: as loaded)",
    )
    ap.add_argument("--pane", default="demo",
                    help="the compared model: a reference as `qdesk chat` takes (default: demo)")
    ap.add_argument("--pane-backend", default="llamacpp",
                    help="its backend (default llamacpp: the demo's shipped Q4_1 GGUF)")
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-divergence", action="store_true")
    args = ap.parse_args()

    import torch

    from qdesk.core.models import open_model

    torch.set_num_threads(args.torch_threads)
    # the backends size their pools before each forward (qdesk.core.threads); pin them
    os.environ["QDESK_THREADS"] = str(args.torch_threads)
    print(f"torch threads: {torch.get_num_threads()}")

    ref = open_model("demo", backend="hf")
    pane = open_model(args.pane, backend=args.pane_backend)
    if args.llama_threads > 0 and pane.backend.kind == "llamacpp":
        import llama_cpp

        llama_cpp.llama_set_n_threads(pane.backend.llm._ctx.ctx, args.llama_threads,
                                      args.llama_threads)
    print(f"llama.cpp threads: {args.llama_threads or 'as loaded'}")
    if not args.skip_live:
        bench_live(ref.backend, pane.backend, args.runs, args.tokens)
    if not args.skip_divergence:
        bench_divergence(ref.backend, pane.backend, args.runs, args.windows, args.ctx)


if __name__ == "__main__":
    main()
