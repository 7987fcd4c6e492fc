"""Chat engine speed on the demo model, per backend, against the plain library.

For each backend it prints load time, time to first token, decode tokens/s of
(a) the plain library's own greedy generation (the yardstick), (b) qdesk's
generation with every per-token statistic, and (c) qdesk's backend stepping
with no statistics at all (argmax only), and the ratios b/a and b/c. Runs
alternate between the three and the median of several runs is reported.

    .venv/bin/python benchmarks/bench_chat.py [--runs 5] [--tokens 64]

Targets (issue 2): transformers b/a >= 0.9; llama.cpp b/a >= 0.7.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."


def decode_rate(n_tokens: int, t_first: float, t_end: float) -> float:
    return (n_tokens - 1) / (t_end - t_first)


def plain_hf(model, tokenizer, prompt_ids, n):
    import torch

    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                       min_new_tokens=1, do_sample=False)
        t1 = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False)
        t2 = time.perf_counter()
    # generate(n) = prefill + first token + (n-1) decode steps; subtract a 1-token run.
    return (n - 1) / ((t2 - t1) - (t1 - t0)), t1 - t0


def plain_llamacpp(llm, prompt_ids, n):
    llm.reset()
    t0 = time.perf_counter()
    t_first = None
    count = 0
    for _ in llm.generate(prompt_ids, temp=0.0, reset=True):
        count += 1
        if t_first is None:
            t_first = time.perf_counter()
        if count == n:
            break
    return decode_rate(count, t_first, time.perf_counter()), t_first - t0


def qdesk_stream(backend, prompt_ids, n):
    from qdesk.core.chat.events import ReplyDone, SamplingConfig
    from qdesk.core.chat.generate import generate_steps

    backend.reset()
    done = None
    for ev in generate_steps(backend, prompt_ids, SamplingConfig(max_new_tokens=n)):
        if isinstance(ev, ReplyDone):
            done = ev
    return done.decode_tokens_per_second, done.first_token_seconds, done.n_tokens


def bare_steps(backend, prompt_ids, n):
    backend.reset()
    t0 = time.perf_counter()
    logits = backend.prefill(prompt_ids)
    tok = int(np.argmax(logits))
    t_first = time.perf_counter()
    for _ in range(n - 1):
        logits = backend.feed([tok])
        tok = int(np.argmax(logits))
    return decode_rate(n, t_first, time.perf_counter()), t_first - t0


def main() -> None:
    from qdesk.core.threads import configure_openmp

    configure_openmp()  # the same thread settings as the app and the CLI
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    from qdesk.core.models import open_model

    rows = []
    for backend_name in ("hf", "llamacpp"):
        t = time.perf_counter()
        loaded = open_model("demo", backend=backend_name)
        load_s = time.perf_counter() - t
        backend = loaded.backend
        prompt_ids = backend.tokenizer.encode_chat([{"role": "user", "content": PROMPT}])
        plain = functools.partial(
            plain_hf, loaded.model, loaded.hf_tokenizer, prompt_ids, args.tokens
        ) if backend_name == "hf" else functools.partial(
            plain_llamacpp, backend.llm, prompt_ids, args.tokens
        )
        plain()  # warm-up
        qdesk_stream(backend, prompt_ids, 8)
        a, b, c, ttft, produced = [], [], [], [], []
        for _ in range(args.runs):
            a.append(plain()[0])
            rate, first, n = qdesk_stream(backend, prompt_ids, args.tokens)
            b.append(rate)
            ttft.append(first)
            produced.append(n)
            c.append(bare_steps(backend, prompt_ids, args.tokens)[0])
        med = statistics.median
        rows.append((
            f"{backend_name} ({loaded.facts.dtype})", load_s, med(ttft), med(a), med(b), med(c),
            med(b) / med(a), med(b) / med(c), min(produced),
        ))
        loaded.close()

    print(f"demo model, prompt {PROMPT[:30]!r}..., {args.tokens} new tokens, "
          f"median of {args.runs} runs (decode tokens/s exclude the first token)\n")
    head = ("backend", "load s", "TTFT s", "plain tok/s", "qdesk+stats tok/s",
            "qdesk bare tok/s", "stats/plain", "stats/bare", "tokens")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.3f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} | "
              f"{r[6]:.2f}x | {r[7]:.2f}x | {r[8]} |")


if __name__ == "__main__":
    main()
