"""GGUF exports of the demo model: size, time and quality in llama.cpp.

Rows: Q8_0 (llama.cpp's converter); Q4_0 exact from qdesk's GPTQ symmetric
group 32 and llama.cpp's own Q4_0 of the same dense model; Q5_0 exact from
qdesk's GPTQ asymmetric group 32; Q4_K_M without and with qdesk's importance
matrix; Q3_K_M, Q2_K and IQ4_XS; the exact rows also with the embedding in
Q8_0, as llama.cpp's Q4_0 stores it, so that both Q4_0 files have one size (llama.cpp's quantizer, with the matrix where
the row says so). For each: measured bits per weight of the file (8 x tensor
bytes / weights, every tensor counted, as llama.cpp reports it), file size,
export time (the export alone: GPTQ's own time is not in it), and mean KLD /
Same top p against the dense model, both run in llama.cpp: the reference is the
dense BF16 folder exported as an F32 GGUF (exact), so the figures hold the
file's error and llama.cpp's compute, not a transformers-vs-llama.cpp gap.
Statistics as llama-perplexity --kl-divergence computes them (windows of --ctx
tokens of held-out English and Chinese, second half scored).

The demo's caveat (DESIGN.md): its weights already lie on a 4-bit group-32 grid
with a float minimum (they came from Q4_1). Symmetric Q4_0 and integer-zero
Q5_0 grids do not coincide with it, but llama.cpp's K-quants (sub-blocks of 32
with a minimum) nearly do, which flatters them on this model.

    .venv/bin/python benchmarks/bench_export.py                  # all rows, all windows
    .venv/bin/python benchmarks/bench_export.py --rows q8_0,q4_0-exact --chunks 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# label -> (source: dense | gptq-sym32 | gptq-asym32, gguf type, imatrix?, dense type
# of the tensors qdesk did not quantize (exact rows): "auto" keeps the demo's BF16
# embedding; Q8_0 is what llama.cpp's own Q4_0 gives it, for a comparison at one size)
ROWS = {
    "q8_0": ("dense", "Q8_0", False, "auto"),
    "q4_0-exact": ("gptq-sym32", "exact", False, "auto"),
    "q4_0-exact-q8emb": ("gptq-sym32", "exact", False, "Q8_0"),
    "q4_0-llama": ("dense", "Q4_0", False, "auto"),
    "q5_0-exact": ("gptq-asym32", "exact", False, "auto"),
    "q5_0-exact-q8emb": ("gptq-asym32", "exact", False, "Q8_0"),
    "q4_k_m": ("dense", "Q4_K_M", False, "auto"),
    "q4_k_m-imatrix": ("dense", "Q4_K_M", True, "auto"),
    "q3_k_m": ("dense", "Q3_K_M", False, "auto"),
    "q2_k": ("dense", "Q2_K", False, "auto"),
    "iq4_xs-imatrix": ("dense", "IQ4_XS", True, "auto"),
}


def _checkpoint(work: Path, name: str, symmetric: bool, samples: int, tokens: int) -> Path:
    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    out = work / name
    if (out / "qdesk.json").is_file():
        return out
    loaded = open_model("demo", backend="hf", dtype="float32")
    cal = build_calibration("mix", loaded.hf_tokenizer, samples, tokens, 0)
    t = time.perf_counter()
    run_quantize(loaded, make_config("gptq", bits=4, group_size=32, symmetric=symmetric), None,
                 cal, output_dir=out)
    print(f"{name}: qdesk GPTQ took {time.perf_counter() - t:.0f} s", file=sys.stderr)
    loaded.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=None, help="at most this many windows")
    p.add_argument("--calib", default="mix", help="the importance matrix's calibration set")
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--calib-tokens", type=int, default=512)
    p.add_argument("--work", default="/tmp/qdesk-bench-export")
    args = p.parse_args()

    from qdesk.core.chat.llamacpp_backend import LlamaCppBackend
    from qdesk.core.compare.divergence import DivergenceDone, divergence_steps
    from qdesk.core.compare.texts import encode_text, load_text
    from qdesk.core.export import ExportConfig, run_export
    from qdesk.core.models import open_model

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)
    dense = open_model("demo", backend="hf", dtype="float32")
    ref_path = work / "dense-F32.gguf"
    if not ref_path.exists():
        run_export(dense, ExportConfig(format="gguf", type="F32", output=ref_path, verify=False))
    sources = {"dense": dense}
    for name, sym in (("gptq-sym32", True), ("gptq-asym32", False)):
        if any(ROWS[r][0] == name for r in rows):
            sources[name] = open_model(str(_checkpoint(work, name, sym, args.calib_samples,
                                                       args.calib_tokens)),
                                       backend="hf", dtype="float32")
    results = {}
    imatrix_file = None
    for r in rows:
        src, gtype, imx, dense_type = ROWS[r]
        out = work / f"{r}.gguf"
        for old in (out, work / f"{r}.imatrix.gguf"):
            if old.exists():
                old.unlink()
        calib = None
        if imx:
            # the first matrix computed is reused by the later rows (its time is in that row)
            calib = str(imatrix_file) if imatrix_file else args.calib
        config = ExportConfig(format="gguf", type=gtype, output=out, verify=False,
                              imatrix_calib=calib, dense_type=dense_type,
                              calib_samples=args.calib_samples,
                              calib_tokens=args.calib_tokens)
        t = time.perf_counter()
        done = run_export(sources[src], config)
        seconds = time.perf_counter() - t
        if imx and imatrix_file is None:
            imatrix_file = shutil.copy(done.imatrix, work / "demo.imatrix.gguf")
        results[r] = {"path": out, "bytes": done.bytes, "bpw": done.bits_per_weight,
                      "seconds": seconds, "types": done.tensor_types}
        print(f"{r}: exported in {seconds:.1f} s, {done.bits_per_weight:.2f} bpw", file=sys.stderr)

    name, text = load_text("heldout")
    reference = LlamaCppBackend(ref_path, "dense F32", None, n_ctx=args.ctx)
    ids, bos = encode_text(reference.tokenizer, text)
    models = [LlamaCppBackend(results[r]["path"], r, None, n_ctx=args.ctx) for r in rows]
    t = time.perf_counter()
    reports = None
    for ev in divergence_steps(reference, models, ids, ctx=args.ctx, chunks=args.chunks, bos_id=bos):
        if isinstance(ev, DivergenceDone):
            reports = {rep.model: rep for rep in ev.reports}
        elif ev.index % 8 == 0:
            print(f"window {ev.index + 1}/{ev.total}", file=sys.stderr)
    scored = time.perf_counter() - t
    rep0 = next(iter(reports.values()))
    print(f"\ndemo (SmolLM2-135M-Instruct) against its dense F32 GGUF in llama.cpp: {name}, "
          f"{rep0.windows} windows x {args.ctx} tokens, {rep0.tokens} positions scored "
          f"({scored:.0f} s); load average after: {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'row':<16} {'types':<30} {'bpw':>6} {'MiB':>7} {'export s':>9} "
          f"{'mean KLD':>9} {'same top p':>11}")
    for r in rows:
        res, rep = results[r], reports[r]
        types = " ".join(f"{k}:{v}" for k, v in sorted(res["types"].items(), key=lambda kv: -kv[1])
                         if k != "F32")
        print(f"{r:<16} {types[:30]:<30} {res['bpw']:>6.2f} {res['bytes'] / 2**20:>7.1f} "
              f"{res['seconds']:>9.1f} {rep.mean_kld:>9.4f} {100 * rep.same_top_p:>10.1f}%")
    for m in [reference, *models]:
        m.close()
    for s in sources.values():
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
