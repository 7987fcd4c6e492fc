"""The quantization job's self-check on the demo model: what it costs, what it
reports, and how close its few windows come to a full comparison.

For each method (4-bit g64; RTN, GPTQ, AWQ symmetric, HQQ asymmetric as it must
be) on a fresh copy of the dense demo model, with the same calibration samples:

- the job's wall time, the self-check's own seconds and their share;
- the self-check's mean KLD and Same top p, and the RTN baseline's;
- the same model against the original with ``qdesk compare``'s engine over the
  whole held-out text (``--full-windows`` windows of 512), to see what 8 x 128
  tokens estimate.

Then the figures behind ``selfcheck.KLD_LIMIT``: RTN symmetric g64 at 8, 3 and 2
bits, a model that predicts uniformly (KL(original || uniform) on the same
windows), and AWQ with a deliberately wrong fold (a Gemma-style ``1 + w`` fold
on the demo's plain RMSNorms, with the job's fold guard switched off): what the
self-check says when a layout is described wrong.

    .venv/bin/python benchmarks/bench_selfcheck.py                      # everything
    .venv/bin/python benchmarks/bench_selfcheck.py --methods rtn --no-full --no-limits
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from qdesk.core.threads import configure_openmp

configure_openmp()


def _load(dtype):
    from qdesk.core.models import open_model

    return open_model("demo", backend="hf", dtype=dtype)


def _config(method: str, bits: int):
    from qdesk.core.quant.configs import make_config

    return make_config(method, bits=bits, group_size=64, symmetric=method != "hqq")


def _full(reference, loaded, windows: int) -> tuple[float, float]:
    from qdesk.core.compare.divergence import divergence_report
    from qdesk.core.compare.texts import encode_text, load_text

    _, text = load_text("heldout")
    ids, bos = encode_text(reference.backend.tokenizer, text)
    r = divergence_report(reference.backend, loaded.backend, ids, ctx=512, chunks=windows,
                          bos_id=bos)
    return r.mean_kld, r.same_top_p


def _run(label, method, bits, calib, args, reference, **job):
    from qdesk.core.quant.steps import run_quantize

    loaded = _load(args.dtype)
    t0 = time.perf_counter()
    result = run_quantize(loaded, _config(method, bits), None, calib, **job)
    seconds = time.perf_counter() - t0
    c = result.summary.check
    row = {
        "label": label, "job_s": round(seconds, 1), "check_s": round(c.seconds, 2),
        "share": round(c.seconds / seconds, 3), "mean_kld": round(c.mean_kld, 4),
        "same_top": round(c.same_top_p, 4),
        "rtn_kld": None if c.rtn_mean_kld is None else round(c.rtn_mean_kld, 4),
        "plausible": c.plausible, "warning": c.warning,
    }
    if args.full and reference is not None:
        row["full_kld"], row["full_same_top"] = (round(v, 4) for v in
                                                 _full(reference, loaded, args.full_windows))
    loaded.close()
    print(json.dumps(row), flush=True)
    return row


def _uniform_kld(loaded) -> float:
    """KL(original || uniform) on the self-check's windows: log V - H(p)."""
    import numpy as np

    from qdesk.core.compare.llama_stats import log_softmax_rows
    from qdesk.core.quant.selfcheck import SelfCheckSpec, check_windows, scored_logits

    spec = SelfCheckSpec()
    windows = check_windows(loaded.hf_tokenizer, spec, 4096)
    total, n = 0.0, 0
    for logits in scored_logits(loaded.model, windows, windows.shape[1] // 2):
        lp = log_softmax_rows(logits)
        entropy = -(np.exp(lp) * lp).sum(axis=1)
        total += float((math.log(lp.shape[1]) - entropy).sum())
        n += lp.shape[0]
    return total / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="rtn,gptq,awq,hqq")
    p.add_argument("--calib", default="mix")
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--calib-tokens", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--full-windows", type=int, default=32)
    p.add_argument("--no-full", dest="full", action="store_false")
    p.add_argument("--no-limits", dest="limits", action="store_false")
    p.add_argument("--limit-bits", type=lambda t: [int(b) for b in t.split(",") if b],
                   default=[8, 3, 2], help="RTN widths measured for the KLD limit")
    args = p.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import torch

    from qdesk.core.quant.calibration import build_calibration

    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[0]}, torch threads {torch.get_num_threads()}",
              file=sys.stderr)
    reference = _load(args.dtype) if args.full else None
    tokenizer = (reference or _load(args.dtype)).hf_tokenizer
    calib = build_calibration(args.calib, tokenizer, args.calib_samples, args.calib_tokens)
    rows = [_run(f"{m} 4-bit g64", m, 4, calib, args, reference)
            for m in args.methods.split(",") if m]
    if args.limits:
        for bits in args.limit_bits:
            rows.append(_run(f"rtn {bits}-bit g64", "rtn", bits, calib, args, None))
        loaded = _load(args.dtype)
        print(json.dumps({"label": "uniform prediction", "mean_kld": round(_uniform_kld(loaded), 3)}))
        loaded.close()
        from qdesk.core.quant import layouts, steps

        wrong = layouts.Family("llama-folded-as-gemma", ("llama",),
                               layouts.family_named("gemma2").scale_groups[:1]
                               + layouts.family_named("llama").scale_groups[1:])
        layouts.FAMILIES = (wrong, *layouts.FAMILIES[1:])
        steps.FOLD_TOLERANCE = float("inf")
        rows.append(_run("awq 4-bit g64, wrong fold (guard off)", "awq", 4, calib, args, None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
