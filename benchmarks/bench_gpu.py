"""GPU speed of packed weights, static-cache decoding and quantization, side by side
with llama.cpp built on the same machine, in one run (issue 13).

On random-weight models of Llama-3.2-1B's and Llama-3.1-8B's shapes:

1. Copy bandwidth: a device-to-device copy of 1 GiB, GB/s (the yardstick).
2. GEMV, one row: 4-bit group-128 weights through qdesk_kernels' Triton GEMV
   against a bf16 ``F.linear`` (cuBLAS), and torch's own int4 tinygemm
   (``_weight_int4pack_mm``) where it exists, per layer shape: microseconds,
   speedup over bf16, and the share of the copy bandwidth the weight bytes
   reached.
3. Decode tokens/s with per-token statistics on (128 tokens, batch 1):
   transformers bf16 with its dynamic cache (qdesk's HFBackend); bf16 with a
   static cache and the step compiled into CUDA graphs (StaticCacheBackend);
   4-bit g128 packed (QuantLinear, Triton) with the static cache; and llama.cpp
   (``llama-bench -n 128``, all layers offloaded) on GGUF files of the same
   random weights: F16, Q8_0, Q4_K_M, Q4_0.
4. Quantization wall time on the 8B shape: RTN, and GPTQ with 128 x 2048
   calibration tokens, qdesk's job on the GPU.

Targets: GEMV >= 3x bf16 and >= 70% of copy bandwidth; 8B decode bf16 >= 0.95x
llama.cpp F16 and 4-bit >= 1.25x llama.cpp Q4_K_M; 1B shape >= llama.cpp at
each precision; GPTQ 8B under 6 minutes, RTN under 30 s.

llama.cpp: pass ``--llama-bin DIR`` holding ``llama-bench`` and
``llama-quantize`` built with CUDA, or ``--build-llama-cpp`` to build them
from the vendored sdist (``.venv/src/llama_cpp_python-*.tar.gz``,
``-DGGML_CUDA=ON``; several minutes). Without either the llama.cpp rows are
skipped and say so.

    .venv/bin/python benchmarks/bench_gpu.py [--models 1b,8b] [--skip-quant]
        [--llama-bin DIR | --build-llama-cpp] [--work DIR]
    .venv/bin/python benchmarks/bench_gpu.py --smoke   # tiny shapes on the CPU: checks the script
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
               tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=4096),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
               tie_word_embeddings=False, rope_theta=500000.0, max_position_embeddings=4096),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=512,
                 tie_word_embeddings=True, max_position_embeddings=512),
}
GGUF_TYPES = ("F16", "Q8_0", "Q4_K_M", "Q4_0")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, device, reps=50) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(device) -> float:
    n = (1 << 30) if device.type == "cuda" else (1 << 24)
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    t = median_seconds(lambda: b.copy_(a), device, reps=20)
    return 2 * n / t / 1e9  # read + write


def layer_shapes(c: dict) -> list[tuple[int, int]]:
    d, f, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    return [(d, d), (d, kv), (d, f), (f, d)]


def bench_gemv(c: dict, device, bandwidth: float) -> list[str]:
    import torch.nn.functional as F

    from qdesk_kernels.packing import pack_weight
    from qdesk_kernels.wq_linear import wq_linear

    rows = []
    g = torch.Generator().manual_seed(0)
    for k, n in layer_shapes(c):
        group = 128 if k % 128 == 0 else 32
        q = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
        s = (torch.rand(n, k // group, generator=g) / 64).to(torch.bfloat16)
        w = pack_weight(q.to(device), s.to(device), None, 4, group)
        dense = ((q.float().reshape(n, -1, group) * s.float().unsqueeze(-1)).reshape(n, k)
                 .to(torch.bfloat16).to(device))
        x = torch.randn(1, k, generator=g).to(torch.bfloat16).to(device)
        t4 = median_seconds(functools.partial(wq_linear, x, w), device)
        tb = median_seconds(functools.partial(F.linear, x, dense), device)
        tiny = ""
        if device.type == "cuda" and hasattr(torch.ops.aten, "_weight_int4pack_mm"):
            try:
                u = (q.to(torch.int32) + 8).to(device)
                packed = torch.ops.aten._convert_weight_to_int4pack(  # even k: high nibble
                    ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8), 8)
                sz = torch.stack([s.t().float(), torch.zeros_like(s.t().float())], -1)
                sz = sz.to(torch.bfloat16).to(device).contiguous()
                tt = median_seconds(lambda: torch.ops.aten._weight_int4pack_mm(
                    x, packed, group, sz), device)  # noqa: B023
                tiny = f"{tt * 1e6:.1f} ({tb / tt:.2f}x)"
            except RuntimeError as e:
                tiny = f"n/a ({str(e).splitlines()[0][:40]})"
        moved = w.nbytes() + x.numel() * 2 + n * 2
        rows.append(f"| {k} -> {n} | {t4 * 1e6:.1f} | {tb * 1e6:.1f} | {tb / t4:.2f}x | "
                    f"{100 * moved / t4 / 1e9 / bandwidth:.0f}% | "
                    f"{100 * dense.numel() * 2 / tb / 1e9 / bandwidth:.0f}% | {tiny} |")
    return rows


def random_model(c: dict, dtype, device):
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers import initialization as init

    with init.no_init_weights(), torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**c), dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    model.tie_weights()
    return model.eval()


def decode_rate(backend, n_tokens: int, device_stats: bool = False) -> float:
    import numpy as np

    from qdesk.core.chat.stats import token_distribution

    backend.reset()
    vocab = backend.model.config.vocab_size
    logits = backend.prefill([(1000 + i) % vocab for i in range(32)])
    tok = int(np.argmax(logits))
    t = time.perf_counter()
    for _ in range(n_tokens - 1):
        logits = backend.feed([tok])
        if device_stats:
            backend.device_stats(5)
        else:
            token_distribution(logits, 5)
        tok = int(np.argmax(logits))
    return (n_tokens - 1) / (time.perf_counter() - t)


def bench_decode(c: dict, device, n_tokens: int) -> dict[str, float]:
    from qdesk.core.chat.hf_backend import HFBackend
    from qdesk.core.gpu import StaticCacheBackend
    from qdesk.core.packed import pack_linears
    from qdesk.core.quant.primitives import QuantizedWeight, choose_qparams, quantize

    out = {}
    model = random_model(c, torch.bfloat16, device)
    dynamic = HFBackend(model, None, "bf16", 4096)
    decode_rate(dynamic, 8)  # warm-up
    out["transformers bf16, dynamic cache"] = decode_rate(dynamic, n_tokens)
    static = StaticCacheBackend(model, None, "bf16", 4096, max_len=512)
    decode_rate(static, 16, device_stats=True)  # compile and record the graphs
    out["qdesk bf16, static cache + CUDA graphs"] = decode_rate(static, n_tokens, True)
    records = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name != "lm_head":
            w = m.weight.float()
            group = 128 if w.shape[1] % 128 == 0 else 32
            s, z = choose_qparams(w, 4, group, True)
            records[name] = QuantizedWeight(quantize(w, s, z, 4, group), s, z, 4, group)
    kernels = pack_linears(model, records, torch.bfloat16)
    del records
    static = StaticCacheBackend(model, None, "q4", 4096, max_len=512)
    decode_rate(static, 16, device_stats=True)
    out[f"qdesk 4-bit g128 packed ({kernels}), static + graphs"] = decode_rate(static, n_tokens,
                                                                              True)
    del model, static
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def build_llama_cpp(work: Path) -> Path:
    sdist = sorted((ROOT / ".venv" / "src").glob("llama_cpp_python-*.tar.gz"))[-1]
    src = work / "llama.cpp-src"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(src, members=members, filter="data")
    root = next(src.glob("*/vendor/llama.cpp"))
    build = work / "llama.cpp-build"
    subprocess.run(["cmake", "-S", str(root), "-B", str(build), "-DGGML_CUDA=ON",
                    "-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "--target", "llama-bench",
                    "llama-quantize"], check=True)
    return build / "bin"


def bench_llama_cpp(c: dict, bins: Path, work: Path, n_tokens: int) -> dict[str, float]:
    from qdesk.core.models.hf_to_gguf import convert_hf_folder

    folder = work / "hf"
    if folder.exists():
        shutil.rmtree(folder)
    model = random_model(c, torch.bfloat16, "cpu")
    model.save_pretrained(folder)
    _save_tokenizer(folder)
    del model
    f16 = convert_hf_folder(folder, work / "model-F16.gguf", "f16")
    shutil.rmtree(folder)
    out = {}
    for t in GGUF_TYPES:
        path = f16 if t == "F16" else work / f"model-{t}.gguf"
        if t != "F16":
            subprocess.run([str(bins / "llama-quantize"), str(f16), str(path), t], check=True,
                           capture_output=True)
        res = subprocess.run([str(bins / "llama-bench"), "-m", str(path), "-p", "0", "-n",
                              str(n_tokens), "-ngl", "99", "-o", "json"], check=True,
                             capture_output=True, text=True)
        out[f"llama.cpp {t}"] = float(json.loads(res.stdout)[0]["avg_ts"])
        if t != "F16":
            path.unlink()
    f16.unlink()
    return out


def _save_tokenizer(folder: Path) -> None:
    """The converter needs a tokenizer: the demo's (BPE), its vocabulary padded by
    the model's larger embedding (random weights: the ids only must exist)."""
    from transformers import AutoTokenizer

    from qdesk.core.models import ensure_demo_model

    AutoTokenizer.from_pretrained(str(ensure_demo_model())).save_pretrained(str(folder))


def bench_quantize(c: dict, device, samples: int = 128, tokens: int = 2048) -> dict[str, float]:
    from qdesk.core.quant.calibration import CalibrationSet
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    ids = torch.randint(0, c["vocab_size"], (samples, tokens),
                        generator=torch.Generator().manual_seed(0))
    calib = CalibrationSet("random", ids, 0, "bench")
    out = {}
    for method in ("rtn", "gptq"):
        model = random_model(c, torch.bfloat16, device)
        t = time.perf_counter()
        run_quantize(model, make_config(method, bits=4, group_size=128), None, calib)
        sync(device)
        out[method] = time.perf_counter() - t
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--llama-bin", type=Path)
    ap.add_argument("--build-llama-cpp", action="store_true")
    ap.add_argument("--skip-quant", action="store_true")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (interpreter)")
    args = ap.parse_args()
    if args.smoke:
        import os

        os.environ.setdefault("TRITON_INTERPRET", "1")
        device, models, args.tokens = torch.device("cpu"), ["tiny"], 8
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu.py needs a CUDA GPU (or --smoke for a check on the CPU)")
        device, models = torch.device("cuda"), args.models.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="qdesk-bench-gpu-"))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke run)"
    bw = copy_bandwidth(device)
    print(f"{name}, torch {torch.__version__}; copy bandwidth {bw:.0f} GB/s\n")
    bins = args.llama_bin
    if bins is None and args.build_llama_cpp:
        bins = build_llama_cpp(work)
    for m in models:
        c = SHAPES[m]
        print(f"## {m} shape\n\nGEMV, one row, microseconds (bf16 activations)\n")
        print("| in -> out | Triton 4-bit g128 | bf16 F.linear | speedup | 4-bit % of copy BW | "
              "bf16 % of copy BW | torch tinygemm int4 |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(bench_gemv(c, device, bw)))
        rates = bench_decode(c, device, args.tokens)
        if bins is not None and not args.smoke:
            rates.update(bench_llama_cpp(c, bins, work, args.tokens))
        else:
            print("\n(llama.cpp rows skipped: pass --llama-bin DIR or --build-llama-cpp)")
        print(f"\ndecode, batch 1, {args.tokens} tokens, statistics on\n")
        print("| runtime | tokens/s |\n|---|---|")
        for k, v in rates.items():
            print(f"| {k} | {v:.1f} |")
        if m == "8b" and not args.skip_quant:
            q = bench_quantize(c, device)
            print(f"\nquantization of the 8B shape: RTN {q['rtn']:.1f} s, GPTQ (128 x 2048 "
                  f"calibration tokens) {q['gptq']:.1f} s")
        if args.smoke and not args.skip_quant:
            q = bench_quantize(c, device, samples=4, tokens=64)
            print(f"\nquantization (smoke): RTN {q['rtn']:.1f} s, GPTQ {q['gptq']:.1f} s")


if __name__ == "__main__":
    main()
