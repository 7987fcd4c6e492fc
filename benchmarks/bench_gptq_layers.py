"""Why GPTQ trails AWQ: one decoder layer at a time, on the demo model.

For a few decoder layers (inputs from the dense model before them), quantize the
layer's Linears with each variant and measure the layer's output error on
held-out calibration-domain samples (drawn with another seed): ||f_q(x) - f(x)||
/ ||f(x) - x||, f the decoder layer, x its input (the layer's own contribution,
not the residual). Variants: the symmetric grid (old max|w|/7 against all 16
codes), act-order (static groups), GPTQ's range search, dampening, the number of
calibration samples behind the Hessian, RTN and AWQ for reference. 4-bit g64
symmetric. A proxy of the end-to-end KLD that runs in minutes
(``bench_quantize.py`` measures that).

    .venv/bin/python benchmarks/bench_gptq_layers.py --layers 0,10,20
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

VARIANTS = {  # name -> (method, options, calibration samples for the statistics)
    "rtn (old grid)": ("rtn", {"narrow_grid": True}, None),
    "rtn": ("rtn", {}, None),
    "rtn act-weighted": ("rtn", {"act_weighted": True}, 128),
    "gptq (old grid)": ("gptq", {"narrow_grid": True}, 128),
    "gptq": ("gptq", {}, 128),
    "gptq no range search": ("gptq", {"clip_search": False}, 128),
    "gptq act-order": ("gptq", {"act_order": True}, 128),
    "gptq act-order no search": ("gptq", {"act_order": True, "clip_search": False}, 128),
    "gptq damp 0.1": ("gptq", {"damp": 0.1}, 128),
    "gptq 16 samples": ("gptq", {}, 16),
    "awq": ("awq", {}, 128),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="0,10,20")
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)

    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.layerwalk import (
        capture_inputs,
        decoder_layers,
        fast_compute_dtype,
        gather_stats,
        run_layer,
        working_copy,
    )
    from qdesk.core.quant.layouts import awq_family
    from qdesk.core.quant.methods import method_for

    ref = open_model("demo", backend="hf")
    model = ref.model
    layers = decoder_layers(model)
    device = torch.device("cpu")
    dtype = fast_compute_dtype(torch.float32, device)
    family = awq_family(model)
    train = build_calibration("mix", ref.hf_tokenizer, 128, 512, seed=0)
    held = build_calibration("mix", ref.hf_tokenizer, 8, 512, seed=1)

    def first_inputs(ids):
        for item in capture_inputs(model, layers, ids, device, dtype):
            if isinstance(item, tuple):
                return item
        raise RuntimeError("no inputs")

    xs, kwargs = first_inputs(train.input_ids)
    hs, _ = first_inputs(held.input_ids)
    wanted = [int(i) for i in args.layers.split(",")]
    names = [n for n, m in layers[0].named_modules() if isinstance(m, torch.nn.Linear)]
    print(f"# demo model, 4-bit g64 sym, layer output error on {len(hs)} held-out samples "
          f"(x 512 tokens); statistics from mix 128 x 512; {torch.get_num_threads()} threads",
          file=sys.stderr)
    print("| variant | " + " | ".join(f"layer {i}" for i in wanted) + " | mean | s |")
    print("|---" * (len(wanted) + 3) + "|")
    results = {v: [] for v in args.variants.split(",")}
    seconds = {v: 0.0 for v in results}
    for li, layer in enumerate(layers):
        if li > max(wanted):
            break
        if li in wanted:
            dense = working_copy(layer, dtype)
            with torch.no_grad():
                d_out = [run_layer(dense, x, kwargs[li]) for x in hs]
            for v in results:
                method, options, n_samples = VARIANTS[v]
                cfg = make_config(method, bits=4, group_size=64, symmetric=True, **options)
                t0 = time.perf_counter()
                work = copy.deepcopy(layer)
                sub = xs if n_samples is None else xs[:n_samples]
                want_h = method_for(cfg).needs_hessian
                with torch.no_grad():
                    stats = gather_stats(working_copy(work, dtype), names, want_h, sub,
                                         kwargs[li], sum(x.shape[1] for x in sub))
                    local = dict.fromkeys(names, cfg)
                    prepare = method_for(cfg).prepare_layer
                    if prepare is not None:
                        prepare(work, local, stats, family)
                    mods = dict(work.named_modules())
                    for n in names:
                        w = mods[n].weight.data
                        qw = method_for(cfg).quantize(w, cfg, stats[n])
                        w.copy_(qw.dequantize(w.dtype))
                    q = working_copy(work, dtype)
                    num = den = 0.0
                    for x, d in zip(hs, d_out):
                        out = run_layer(q, x, kwargs[li])
                        num += float((out.float() - d.float()).pow(2).sum())
                        den += float((d.float() - x.float()).pow(2).sum())
                seconds[v] += time.perf_counter() - t0
                results[v].append((num / den) ** 0.5)
        with torch.no_grad():  # the dense model's inputs for the next layer
            work = working_copy(layer, dtype)
            xs = [run_layer(work, x, kwargs[li]) for x in xs]
            hs = [run_layer(work, x, kwargs[li]) for x in hs]
    for v, errs in results.items():
        print(f"| {v} | " + " | ".join(f"{e:.4f}" for e in errs)
              + f" | {sum(errs) / len(errs):.4f} | {seconds[v]:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
