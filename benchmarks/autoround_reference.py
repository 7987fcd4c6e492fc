"""auto-round's SignRound on the demo with qdesk's calibration samples, timed on
this machine: the same-CPU yardstick for ``bench_quantize.py``'s signround rows.

auto-round is not a dependency of qdesk (it pins its own stack); run this in a
separate environment, at auto-round's defaults except the iteration count:

    python3 -m venv /tmp/arvenv
    /tmp/arvenv/bin/pip install torch==2.13.0 auto-round==0.16.1 transformers==<qdesk's>
    .venv/bin/python benchmarks/autoround_reference.py --save-ids /tmp/ids.pt   # qdesk's mix
    /tmp/arvenv/bin/python benchmarks/autoround_reference.py --ids /tmp/ids.pt --iters 2
    /tmp/arvenv/bin/python benchmarks/autoround_reference.py --ids /tmp/ids.pt --iters 10

It prints the seconds per decoder block (block boundaries from forward hooks
on the blocks' first use after caching), so two iteration counts give the cost
of one iteration and of a block's fixed work; auto-round's own default is 200.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def save_ids(path: Path, samples: int, tokens: int) -> None:
    import torch
    from transformers import AutoTokenizer

    from qdesk.core.models.demo import demo_dense_dir
    from qdesk.core.quant.calibration import build_calibration

    tok = AutoTokenizer.from_pretrained(demo_dense_dir())
    calib = build_calibration("mix", tok, samples, tokens, seed=0)
    torch.save(calib.input_ids.clone(), path)
    print(f"{tuple(calib.input_ids.shape)} sha256 {calib.sha256[:12]} -> {path}; "
          f"the dense demo (--model): {demo_dense_dir()}")


def run(ids_path: Path, iters: int, model_dir: str) -> None:
    import torch
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.load(ids_path, weights_only=True)
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(model_dir)
    # auto-round tunes each block after caching its inputs; the first forward of
    # block i+1 during tuning marks the end of block i.
    starts: dict[int, float] = {}

    def mark(index: int):
        def hook(module, args) -> None:  # returns None: the inputs stay as they are
            starts.setdefault(index, time.perf_counter())
        return hook

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(mark(i))
    data = [ids[i:i + 1] for i in range(len(ids))]
    ar = AutoRound(model, tok, bits=4, group_size=64, sym=True, iters=iters,
                   nsamples=len(ids), seqlen=ids.shape[1], batch_size=8, dataset=data)
    t0 = time.perf_counter()
    ar.quantize()
    total = time.perf_counter() - t0
    marks = [starts[i] for i in sorted(starts)]
    per_block = [b - a for a, b in zip(marks[1:], marks[2:])]  # skip the first (compile)
    per_block.sort()
    median = per_block[len(per_block) // 2] if per_block else float("nan")
    print(f"auto-round iters={iters} samples={len(ids)}x{ids.shape[1]}: {total:.0f} s in all, "
          f"median {median:.1f} s per block")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--save-ids", type=Path, help="write qdesk's calibration ids here and stop")
    p.add_argument("--ids", type=Path)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--model", default=str(Path.home() / ".local/share/qdesk/models/"
                                          "SmolLM2-135M-Instruct-bf16-0.1.2"))
    args = p.parse_args()
    if args.save_ids:
        save_ids(args.save_ids, args.samples, args.tokens)
    elif args.ids:
        run(args.ids, args.iters, args.model)
    else:
        p.error("give --save-ids or --ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
