"""The Quantize page's time estimate (``predict``) against the measured job, per
method, on the demo model, as the app runs the job (its held-out self-check
included, no checkpoint written).

    .venv/bin/python benchmarks/bench_predict.py [--samples 16] [--tokens 256]
        [--jobs rtn,hqq,gptq,awq,signround10]

Run it on an idle machine: the estimate scales by the matrix-product speed it
measures first, and a busy machine makes both figures meaningless. The ratio
column is measured / predicted (1.0 = right; the page rounds nothing away).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JOBS = {
    "rtn": ("rtn", {}),
    "hqq": ("hqq", {"symmetric": False}),
    "gptq": ("gptq", {}),
    "awq": ("awq", {}),
    "signround10": ("signround", {"iters": 10}),
    "signround": ("signround", {}),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--jobs", default="rtn,hqq,gptq,awq,signround10")
    args = p.parse_args(argv)

    import torch

    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.plans import load_plan
    from qdesk.core.quant.predict import model_shapes, predict
    from qdesk.core.quant.steps import run_quantize

    plan = load_plan("uniform")
    print(f"# demo model, {torch.get_num_threads()} threads, calibration mix "
          f"{args.samples} x {args.tokens}, 4-bit g64")
    print("| job | predicted s | measured s | measured / predicted |")
    print("|---|---|---|---|")
    for name in args.jobs.split(","):
        method, options = JOBS[name]
        options = {"symmetric": True, **options}
        loaded = open_model("demo", backend="hf")  # a fresh copy: the job quantizes in place
        calib = build_calibration("mix", loaded.hf_tokenizer, args.samples, args.tokens, seed=0)
        config = make_config(method, bits=4, group_size=64, **options)
        shapes = model_shapes(loaded)  # measures the matrix-product speed, as the page does
        predicted = predict(shapes, config, plan, args.samples, args.tokens).seconds
        t0 = time.perf_counter()
        run_quantize(loaded, config, plan, calib)
        measured = time.perf_counter() - t0
        loaded.close()
        print(f"| {name} | {predicted:.0f} | {measured:.0f} | {measured / predicted:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
