"""Packed quantized weights against dense ones: kernels, decode speed, memory (issue 13).

1. Kernels: one row (a decode step) and many (prefill) through each product
   shape of the demo and of Llama-3.2-1B: torch's int4 op, its int8 op, a dense
   matmul in bfloat16 and in float32, and the prefill path (dequantize, then a
   dense bfloat16 matmul), median microseconds, one thread.
2. The demo model on the transformers backend: dense (as ``open_model`` places
   it) against a 4-bit group-64 symmetric checkpoint loaded packed (placed by
   the same measured policy, for its own products): qdesk's generation with
   every per-token statistic, decode tokens/s, runs alternating, medians
   (both models also through transformers' own forward instead of qdesk's
   decode step, ``qdesk/core/chat/decode_step.py``, to show what it adds); the
   weights' resident bytes (``ModelFacts.memory_bytes``) and the process's
   resident memory after loading each model alone (a child process each).
3. A random-weight model of Llama-3.2-1B's shape, dense against 4-bit g64
   packed (RTN of the same random weights), the same decode loop (statistics
   on, no detokenizer: the vocabulary is random).

Each packed model runs twice: as loaded (the checkpoint's exact product) and
with the opt-in int8-activation decode step (``--int8-activations``: llama.cpp's
way, approximate); for the demo, what the switch costs in agreement is measured
decode step by decode step against the exact product.

Targets: demo >= 1.6x dense tokens/s and weights <= 0.45x; 1B shape >= 3x.

    .venv/bin/python benchmarks/bench_speed.py [--runs 5] [--tokens 64] [--checkpoint DIR]
        [--skip-kernels] [--skip-demo] [--skip-1b]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0)


def median_us(fn, reps: int = 30) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def bench_kernels() -> None:
    import torch
    import torch.nn.functional as F

    from qdesk.core.packed import QuantLinear
    from qdesk.core.quant.primitives import QuantizedWeight

    torch.set_num_threads(1)
    shapes = [(576, 576), (576, 1536), (1536, 576), (576, 49152), (2048, 2048), (2048, 8192),
              (8192, 2048)]
    from qdesk.core.packed import native

    native_ok = native.library() is not None
    print("\nkernels, one thread, median microseconds (speedup over dense bf16 / float32); "
          f"qdesk's kernel: {native.simd() or native.why_not()}")
    print("| in -> out | rows | qdesk int4 g64 (f32) | same, int8 activations | "
          "torch int4 g64 (bf16) | int8 channel | dense bf16 | dense f32 |")
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for k, n in shapes:
        q = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
        qw4 = QuantizedWeight(q, (torch.rand(n, k // 64, generator=g) / 64).to(torch.bfloat16),
                              None, 4, 64)
        qw8 = QuantizedWeight(q, (torch.rand(n, 1, generator=g) / 64).to(torch.bfloat16),
                              None, 8, -1)
        l4 = QuantLinear(qw4, dtype=torch.bfloat16, kernel="int4")
        l8 = QuantLinear(qw8, dtype=torch.bfloat16, kernel="int8")
        ln = QuantLinear(qw4, dtype=torch.float32, kernel="native") if native_ok else None
        lq = QuantLinear(qw4, dtype=torch.float32, kernel="native") if native_ok else None
        if lq is not None:
            lq.impl.int8_activations = True
        wb = qw4.dequantize(torch.bfloat16)
        wf = wb.float()
        # 64 / 128 rows: qdesk's kernel / torch's ops dequantize + matmul from there (DENSE_FROM_ROWS)
        for rows in (1, 2, 16, 63, 64, 127, 128) if n * k < 2e7 else (1, 2):
            reps = 30 if rows <= 16 else 5
            xb = torch.randn(rows, k, generator=g).to(torch.bfloat16)
            xf = xb.float()
            with torch.inference_mode():
                tn = median_us(functools.partial(ln, xf), reps) if ln is not None else float("nan")
                tq = (median_us(functools.partial(lq, xf), reps)
                      if lq is not None and rows == 1 else float("nan"))  # one row only
                t4 = median_us(functools.partial(l4, xb), reps)
                t8 = median_us(functools.partial(l8, xb), reps)
                tb = median_us(functools.partial(F.linear, xb, wb), reps)
                tf = median_us(functools.partial(F.linear, xf, wf), reps)
            print(f"| {k} -> {n} | {rows} | {tn:.0f} ({tb / tn:.1f}x / {tf / tn:.1f}x) | "
                  f"{f'{tq:.0f} ({tb / tq:.1f}x / {tf / tq:.1f}x)' if rows == 1 else '—'} | "
                  f"{t4:.0f} ({tb / t4:.1f}x / {tf / t4:.1f}x) | "
                  f"{t8:.0f} ({tb / t8:.1f}x / {tf / t8:.1f}x) | {tb:.0f} | {tf:.0f} |")
    torch.set_num_threads(torch.get_num_interop_threads())


def decode_with_stats(backend, prompt_ids, n_tokens: int) -> float:
    """Decode tokens/s of a greedy loop that computes every per-token statistic
    (top-k, margin, entropy) as generation does, without a detokenizer."""
    import numpy as np

    from qdesk.core.chat.stats import token_distribution

    backend.reset()
    logits = backend.prefill(prompt_ids)
    token_distribution(logits, 5)
    tok = int(np.argmax(logits))
    t = time.perf_counter()
    for _ in range(n_tokens - 1):
        logits = backend.feed([tok])
        token_distribution(logits, 5)
        tok = int(np.argmax(logits))
    return (n_tokens - 1) / (time.perf_counter() - t)


def qdesk_generation(backend, prompt_ids, n_tokens: int) -> float:
    from qdesk.core.chat.events import ReplyDone, SamplingConfig
    from qdesk.core.chat.generate import generate_steps

    backend.reset()
    done = None
    for ev in generate_steps(backend, prompt_ids, SamplingConfig(max_new_tokens=n_tokens)):
        if isinstance(ev, ReplyDone):
            done = ev
    return done.decode_tokens_per_second


def resident_after_load(model: str) -> dict:
    """Load ``model`` alone in a child process; its resident memory before and after."""
    code = (
        "import gc, json, sys\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "import torch, transformers  # noqa\n"
        "from qdesk.core.models import open_model\n"
        "from qdesk.core.threads import configure_openmp\n"
        "configure_openmp()\n"
        "before = rss()\n"
        f"m = open_model({model!r}, backend='hf')\n"
        "gc.collect()\n"
        "print(json.dumps({'before': before, 'after': rss(), "
        "'weights': m.facts.memory_bytes, 'dtype': m.facts.dtype}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_checkpoint(out: Path) -> Path:
    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    dense = open_model("demo", backend="hf")
    calib = build_calibration("mix", dense.hf_tokenizer, samples=8, tokens=128)
    run_quantize(dense, make_config("rtn", bits=4, group_size=64, symmetric=True), None, calib,
                 output_dir=out)
    dense.close()
    return out


INT8_ROW = "4-bit g64 packed, int8 activations"


def bench_demo(checkpoint: Path, runs: int, n_tokens: int) -> dict:
    from qdesk.core.chat.decode_step import use_decode_step
    from qdesk.core.models import open_model
    from qdesk.core.packed.native_kernels import use_int8_activations

    models = {"dense": open_model("demo", backend="hf"),
              "4-bit g64 packed": open_model(str(checkpoint), backend="hf")}
    prompt = models["dense"].backend.tokenizer.encode_chat([{"role": "user", "content": PROMPT}])
    # (label, model, int8 activations, qdesk's decode step): the packed model once
    # more with the opt-in int8-activation decode step, and both models through
    # transformers' own forward, each switch set around its own runs
    rows = [(k, m, False, True) for k, m in models.items()]
    rows.append((INT8_ROW, models["4-bit g64 packed"], True, True))
    rows += [(f"{k}, transformers' forward", m, False, False) for k, m in models.items()]
    rates = {k: [] for k, *_ in rows}
    for m in models.values():  # warm-up
        qdesk_generation(m.backend, prompt, 8)
    for _ in range(runs):
        for k, m, int8, step in rows:
            use_int8_activations(m.model, int8)
            use_decode_step(m.model, step)
            rates[k].append(qdesk_generation(m.backend, prompt, n_tokens))
    use_int8_activations(models["4-bit g64 packed"].model, False)
    facts = {k: m.facts for k, m, *_ in rows}
    for m in models.values():
        m.close()
    del models
    gc.collect()
    memory = {"dense": resident_after_load("demo"),
              "4-bit g64 packed": resident_after_load(str(checkpoint))}
    return {"rates": rates, "facts": facts, "memory": memory}


def bench_fidelity(checkpoint: Path, windows: int = 8, ctx: int = 256) -> dict:
    """What the packed model's compute dtype costs in agreement: the packed model
    (its own dtype) against the same checkpoint computed exactly in float32
    (dequantized weights), on the built-in held-out text."""
    from qdesk.core.compare.divergence import DivergenceDone, divergence_steps
    from qdesk.core.compare.texts import encode_text, load_text
    from qdesk.core.models import open_model

    exact = open_model(str(checkpoint), backend="hf", dtype="float32")
    packed = open_model(str(checkpoint), backend="hf")
    ids, bos = encode_text(exact.backend.tokenizer, load_text("heldout")[1])
    report = None
    for ev in divergence_steps(exact.backend, [packed.backend], ids, ctx=ctx, chunks=windows,
                               bos_id=bos):
        if isinstance(ev, DivergenceDone):
            report = ev.reports[0]
    out = {"dtype": packed.facts.dtype, "mean_kld": report.mean_kld,
           "same_top_p": report.same_top_p, "windows": windows, "ctx": ctx}
    exact.close()
    packed.close()
    return out


def bench_int8_fidelity(checkpoint: Path, tokens: int = 256) -> dict:
    """What the int8-activation decode step costs in agreement: the packed model
    fed the held-out text one token at a time (decode steps, the only ones the
    switch changes), with the switch on against off (the checkpoint's exact
    product): mean KLD and how often the top token is the same."""
    import numpy as np
    import torch

    from qdesk.core.compare.texts import encode_text, load_text
    from qdesk.core.models import open_model
    from qdesk.core.packed.native_kernels import use_int8_activations

    packed = open_model(str(checkpoint), backend="hf")
    ids, _ = encode_text(packed.backend.tokenizer, load_text("heldout")[1])
    ids = ids[:tokens]

    def stepwise(int8: bool) -> torch.Tensor:
        use_int8_activations(packed.model, int8)
        b = packed.backend
        b.reset()
        out = [b.prefill(ids[:1])]
        out += [b.feed([t]) for t in ids[1:]]
        return torch.from_numpy(np.stack(out)).double()

    exact, fast = stepwise(False), stepwise(True)
    lp, lq = exact.log_softmax(-1), fast.log_softmax(-1)
    kld = (lp.exp() * (lp - lq)).sum(-1)
    packed.close()
    return {"tokens": len(ids), "mean_kld": float(kld.mean()), "max_kld": float(kld.max()),
            "same_top": float((exact.argmax(-1) == fast.argmax(-1)).double().mean())}


def random_llama_1b(dtype_name: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers import initialization as init

    config = LlamaConfig(**LLAMA_1B)
    with init.no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype_name))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.tie_weights()
    return model.eval()


def bench_1b(runs: int, n_tokens: int) -> dict:
    import torch

    from qdesk.core.chat.hf_backend import HFBackend
    from qdesk.core.models.device import DecodeShape, choose_placement
    from qdesk.core.packed import pack_linears, packed_placement
    from qdesk.core.packed.native_kernels import use_int8_activations
    from qdesk.core.quant.primitives import QuantizedWeight, choose_qparams, quantize

    c = LLAMA_1B
    shape = DecodeShape(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                        c["num_key_value_heads"] * c["head_dim"], c["vocab_size"])
    dense_place = choose_placement(shape)
    packed_place = packed_placement(shape, 4, 64)
    dense = random_llama_1b(dense_place.dtype)

    def packed_model(with_head: bool):
        # the same random weights (same seed), as a bfloat16 checkpoint holds them:
        # pack_linears leaves the rest as the checkpoint loader does
        model = random_llama_1b("bfloat16")
        records = {}
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and (with_head or name != "lm_head"):
                w = mod.weight.float()
                s, z = choose_qparams(w, 4, 64, True)
                records[name] = QuantizedWeight(quantize(w, s, z, 4, 64), s, z, 4, 64)
        counts = pack_linears(model, records, getattr(torch, packed_place.dtype))
        del records
        gc.collect()
        return model, counts

    # qdesk's plans keep the output head (tied to the embedding here) in 16 bits, as
    # GPTQ and AWQ checkpoints usually do; at this shape the head is a fifth of the
    # weights read per token, so the second packed row quantizes it too (the
    # embedding lookup keeps its bfloat16 table).
    packed, kernels = packed_model(False)
    packed_head, _ = packed_model(True)

    class _Tok:  # the loop never detokenizes
        pass

    p = packed_place.dtype
    backends = {f"dense {dense_place.dtype}": HFBackend(dense, _Tok(), "dense", 4096),
                f"4-bit g64 packed {p}": HFBackend(packed, _Tok(), "q4", 4096),
                f"4-bit g64 packed {p}, head 4-bit too":
                    HFBackend(packed_head, _Tok(), "q4h", 4096)}
    # the same two packed models with the opt-in int8-activation decode step,
    # switched on and off around their own runs
    rows = [(k, b, False) for k, b in backends.items()]
    rows += [(f"{k}, int8 activations", backends[k], True) for k in list(backends)[1:]]
    prompt = list(range(1000, 1040))
    rates = {k: [] for k, _, _ in rows}
    for b in backends.values():
        decode_with_stats(b, prompt, 4)
    for _ in range(runs):
        for k, b, int8 in rows:
            use_int8_activations(b.model, int8)
            rates[k].append(decode_with_stats(b, prompt, n_tokens))
    weights = {k: b.model.get_memory_footprint() for k, b, _ in rows}
    return {"rates": rates, "weights": weights, "kernels": kernels,
            "reasons": (dense_place.reason, packed_place.reason)}


def _ratio_table(title: str, rates: dict, weights: dict) -> None:
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = next(iter(med))
    print(f"\n{title}")
    print("| model | tokens/s (median) | runs | speed ratio (medians) | median of paired ratios "
          "| weights MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for k, m in med.items():
        runs = " ".join(f"{x:.1f}" for x in rates[k])
        # each run against the base model's run of the same round: the machine's
        # drift (10-25% over minutes here) cancels within a round
        paired = statistics.median(a / b for a, b in zip(rates[k], rates[base]))
        print(f"| {k} | {m:.1f} | {runs} | {m / med[base]:.2f}x | {paired:.2f}x | "
              f"{weights[k] / 2**20:.0f} | {weights[k] / weights[base]:.2f}x |")


def main() -> None:
    from qdesk.core.threads import configure_openmp

    configure_openmp()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--checkpoint", type=Path, help="a 4-bit g64 qdesk checkpoint of the demo")
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-1b", action="store_true")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {open('/proc/loadavg').read().split()[:3]}")
    if not args.skip_kernels:
        bench_kernels()
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = args.checkpoint or make_checkpoint(Path(tmp) / "smol-rtn4-g64")
            r = bench_demo(ckpt, args.runs, args.tokens)
        names = list(r["rates"])
        labelled = {f"{k} ({r['facts'][k].dtype})": v for k, v in r["rates"].items()}
        weights = {f"{k} ({r['facts'][k].dtype})": r["facts"][k].memory_bytes for k in names}
        _ratio_table(f"demo model, transformers backend, qdesk generation with statistics, "
                     f"{args.tokens} tokens", labelled, weights)
        print("\nresident memory of a process that loaded only that model (child processes)")
        print("| model | before load MiB | after MiB | growth MiB | weights MiB |")
        print("|---|---|---|---|---|")
        for k, m in r["memory"].items():
            print(f"| {k} ({m['dtype']}) | {m['before'] / 2**20:.0f} | {m['after'] / 2**20:.0f} | "
                  f"{(m['after'] - m['before']) / 2**20:.0f} | {m['weights'] / 2**20:.0f} |")
        for k in names[:2]:
            print(f"{k}: {r['facts'][k].dtype_reason}; {r['facts'][k].quantization.get('runtime', '')}")
        with tempfile.TemporaryDirectory() as tmp:
            f = bench_fidelity(args.checkpoint or make_checkpoint(Path(tmp) / "smol-rtn4-g64"))
        print(f"\nthe packed model in {f['dtype']} against the same checkpoint in exact float32, "
              f"held-out text, {f['windows']} windows of {f['ctx']}: mean KLD {f['mean_kld']:.5f}, "
              f"same top p {100 * f['same_top_p']:.2f}%")
        with tempfile.TemporaryDirectory() as tmp:
            f = bench_int8_fidelity(args.checkpoint or make_checkpoint(Path(tmp) / "smol-rtn4-g64"))
        print(f"int8 activations on against off (the exact product), the packed model fed "
              f"{f['tokens']} held-out tokens one decode step at a time: mean KLD "
              f"{f['mean_kld']:.5f} (largest {f['max_kld']:.4f}), same top token "
              f"{100 * f['same_top']:.2f}%")
    if not args.skip_1b:
        r = bench_1b(args.runs, args.tokens)
        _ratio_table(f"random-weight Llama-3.2-1B shape, decode with statistics, {args.tokens} "
                     "tokens", r["rates"], r["weights"])
        print(f"packed kernels: {r['kernels']}")
        print(f"dense: {r['reasons'][0]}\npacked: {r['reasons'][1]}")


if __name__ == "__main__":
    main()
