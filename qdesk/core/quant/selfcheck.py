"""The job checks its own result: the quantized model against the original on
a few windows of held-out text, with llama.cpp's statistics (``qdesk.core.compare``).

Per-layer errors measure each Linear against its own float output on the
calibration inputs; they cannot see a scale folded into the wrong op, a layer
walk that fed a layer the wrong mask, or a checkpoint that computes something
else. Scoring the whole model end to end can. It costs three forwards over the
windows plus one RTN rounding of every weight:

1. before any layer changes, the original model's logits on the windows
   (kept on the CPU: windows x ctx/2 x vocab float32);
2. after the last layer, the quantized model's logits -> KLD, Same top p;
3. plain RTN of the same format (each quantized Linear rounded min-max to its
   own bits, group size and symmetry: the simplest rounding, the bar any method
   must clear), made from the original weights the job keeps for cancel,
   swapped in, scored, and swapped back exactly (the records dequantize to the
   very values the model held).

The forwards run in float32 when a 16-bit model sits on a CPU whose 16-bit
products are slow (``layerwalk.fast_compute_dtype``) and memory allows the
wider copy (``float32_scoring``): on the 2-core AVX2 CPU bfloat16 products of
this size are about 5x slower than float32 ones.

Windows come from the held-out texts (English and Chinese, never used for
calibration), evenly spread over each; as in ``qdesk compare`` the second half
of each window is scored and its first token becomes BOS when the tokenizer
adds one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from qdesk.core.compare.divergence import summarize
from qdesk.core.compare.llama_stats import mean_and_uncertainty, position_stats
from qdesk.core.compare.texts import TEXTS, load_text
from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import RTNConfig
from qdesk.core.quant.events import CalibrationProgress, SelfCheck
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.rtn import quantize_rtn

log = logging.getLogger(__name__)

# Above this mean KLD (nats) a result counts as broken whatever its width.
# Measured by the self-check itself on the demo model (8 x 128 held-out
# windows, benchmarks/bench_selfcheck.py): qdesk's RTN, symmetric g64, at 8 / 4 / 3 / 2
# bits 0.002 / 0.48 / 1.72 (same top 23%) / 12.9 (same top 0.4%); GPTQ, AWQ, HQQ
# 4-bit 0.32 / 0.22 / 0.41; a model that predicts uniformly 7.8; AWQ with a
# wrong fold 12.7. The Gemma 3 model a Llama-style fold destroyed measured 8.4.
# So 2: above every result that still predicts, far below the broken ones.
KLD_LIMIT = 2.0
# Worse than RTN means: the paired per-position difference is positive beyond
# twice its standard error, and the mean KLD is this factor above RTN's.
RTN_FACTOR = 1.1


@dataclass(frozen=True)
class SelfCheckSpec:
    """Which held-out text, how many windows of how many tokens."""

    text: str = "heldout"
    windows: int = 8
    ctx: int = 128

    def __post_init__(self) -> None:
        if self.text not in TEXTS:
            raise BadInput(f"self-check text must be one of {', '.join(TEXTS)}, not {self.text!r}")
        if not 1 <= self.windows <= 64:
            raise BadInput(f"self-check windows must be 1..64, not {self.windows}")
        if not 16 <= self.ctx <= 4096:
            raise BadInput(f"self-check window length must be 16..4096 tokens, not {self.ctx}")

    @property
    def first(self) -> int:
        """The first scored position: the logits at first .. ctx-2 are scored."""
        return self.ctx // 2

    @property
    def scored(self) -> int:
        return self.ctx - 1 - self.first


def check_memory_bytes(spec: SelfCheckSpec | None, vocab: int) -> int:
    """The reference logits kept on the CPU, plus one scoring batch's logits twice."""
    if spec is None:
        return 0
    return 4 * vocab * spec.windows * spec.scored + 2 * min(
        LOGITS_BUDGET, 4 * vocab * spec.windows * (spec.scored + 1))


def check_windows(tokenizer, spec: SelfCheckSpec, max_ctx: int) -> torch.Tensor:
    """(windows, ctx) int64 token ids, spread evenly over each part of the text."""
    ctx = min(spec.ctx, max_ctx)
    parts = TEXTS[spec.text]
    rows: list[list[int]] = []
    for i, part in enumerate(parts):
        want = spec.windows // len(parts) + (1 if i < spec.windows % len(parts) else 0)
        _, text = load_text(part)
        ids = [int(t) for t in tokenizer(text, add_special_tokens=True)["input_ids"]]
        bos = getattr(tokenizer, "bos_token_id", None)
        bos = bos if ids and bos is not None and ids[0] == bos else None
        slots = len(ids) // ctx
        for s in np.linspace(0, slots - 1, min(want, slots)).round().astype(int):
            window = ids[s * ctx:(s + 1) * ctx]
            if bos is not None:
                window[0] = bos
            rows.append(window)
    if not rows:
        raise BadInput(f"the self-check text {spec.text} is shorter than one window of {ctx}")
    return torch.tensor(rows, dtype=torch.int64)


# The logits one scoring forward may hold (float32): windows go through the
# model in batches this allows. One batched forward instead of one per window
# is 4x faster on the 2-core CPU when other programs compete for the cores
# (measured on the demo: 8 windows of 128 in 5-8 s against 21-35 s one by one):
# each of a forward's many small parallel regions waits for both cores.
LOGITS_BUDGET = 256 * 2**20


def batches(windows: torch.Tensor, vocab: int) -> list[torch.Tensor]:
    keep = windows.shape[1] - windows.shape[1] // 2
    per = max(1, LOGITS_BUDGET // max(1, 4 * keep * vocab))
    return list(windows.split(per))


@torch.no_grad()
def scored_logits(model, windows: torch.Tensor, first: int) -> list[np.ndarray]:
    """Float32 logits (ctx - 1 - first, vocab) at positions first .. ctx-2 of each
    window of ``windows`` (b, ctx), one array a window; the output head runs
    only for the positions kept."""
    ctx = int(windows.shape[1])
    device = next(model.parameters()).device
    ids = windows.to(device)
    keep = ctx - first
    try:
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(input_ids=ids, use_cache=False).logits
    rows = logits[:, -keep:-1].float().cpu().numpy()
    return list(rows)


@contextmanager
def float32_scoring(model):
    """While open, a 16-bit model's parameters are float32 if its CPU computes
    16-bit products slowly and there is memory for the copy (twice the 16-bit
    weights must be free); closing gives back the very 16-bit values (the cast
    is exact both ways). Buffers (rotary frequencies, masks) are left alone."""
    from qdesk.core.models.device import available_memory_bytes
    from qdesk.core.quant.layerwalk import fast_compute_dtype

    params = list(model.parameters())
    narrow = [p for p in params if p.dtype in (torch.bfloat16, torch.float16)]
    if not narrow or any(p.device.type != "cpu" for p in params):
        yield
        return
    extra = sum(p.numel() * 2 for p in narrow)
    dtype = narrow[0].dtype
    if fast_compute_dtype(dtype, narrow[0].device) != torch.float32 or (
            available_memory_bytes("cpu") < 2 * extra):
        yield
        return
    originals = [p.dtype for p in narrow]
    try:
        for p in narrow:
            p.data = p.data.float()
        yield
    finally:
        for p, d in zip(narrow, originals):
            p.data = p.data.to(d)


def reference_steps(model, windows: torch.Tensor, vocab: int) -> Iterator:
    """Yield progress; return the original model's scored logits, one array a window."""
    base: list[np.ndarray] = []
    with float32_scoring(model):
        for batch in batches(windows, vocab):
            base += scored_logits(model, batch, windows.shape[1] // 2)
            yield CalibrationProgress("self-check", len(base), 2 * len(windows))
    return base


def _score(model, windows: torch.Tensor, base: list[np.ndarray]) -> dict[str, np.ndarray]:
    first = windows.shape[1] // 2
    parts = []
    done = 0
    with float32_scoring(model):
        for batch in batches(windows, base[0].shape[1]):
            for window, q in zip(batch, scored_logits(model, batch, first)):
                parts.append(position_stats(base[done], q, window[first + 1:].numpy()))
                done += 1
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class RTNBaseline:
    """While open, every quantized Linear holds plain RTN of its own format made
    from its original weight, and every other tensor of a changed layer (AWQ's
    folded norms, biases) its original value; closing restores the quantized
    model exactly: its Linears from the records, the rest from copies."""

    def __init__(self, layers, prefix: str, originals: dict[int, dict],
                 records: dict[str, QuantizedWeight]) -> None:
        self.layers, self.prefix = layers, prefix
        self.originals, self.records = originals, records
        self.saved: dict[tuple[int, str], torch.Tensor] = {}

    def _live(self, li: int) -> dict[str, torch.Tensor]:
        return self.layers[li].state_dict(keep_vars=True)

    def __enter__(self) -> RTNBaseline:
        for li, state in self.originals.items():
            live = self._live(li)
            for key, orig in state.items():
                full = f"{self.prefix}.{li}.{key.rpartition('.')[0]}"
                target = live[key].data
                if key.endswith(".weight") and full in self.records:
                    qw = self.records[full]
                    config = RTNConfig(bits=qw.bits, group_size=qw.group_size,
                                       symmetric=qw.symmetric, clip_search=False)
                    w = orig.to(target.device)
                    target.copy_(quantize_rtn(w, config).dequantize(target.dtype))
                elif not torch.equal(target.cpu(), orig):
                    self.saved[(li, key)] = target.detach().clone()
                    target.copy_(orig.to(target.device))
        return self

    def __exit__(self, *exc) -> None:
        for li, state in self.originals.items():
            live = self._live(li)
            for key in state:
                full = f"{self.prefix}.{li}.{key.rpartition('.')[0]}"
                target = live[key].data
                if key.endswith(".weight") and full in self.records:
                    target.copy_(self.records[full].dequantize(target.dtype).to(target.device))
                elif (li, key) in self.saved:
                    target.copy_(self.saved[(li, key)])
        self.saved.clear()


def judge(mean_kld: float, rtn_mean_kld: float | None, diff: np.ndarray | None,
          limit: float | None = None) -> str | None:
    """Why the result is implausible, or None. diff: per-position KLD of the
    method minus RTN's (paired: the same positions); limit: KLD_LIMIT unless given."""
    limit = KLD_LIMIT if limit is None else limit
    if not math.isfinite(mean_kld) or mean_kld > limit:
        return (f"mean KLD {mean_kld:.3g} against the original is beyond {limit:g}, where "
                "working quantizations end (a uniform guess scores about 8 on the demo): the "
                "quantized model has lost what the original predicts")
    if rtn_mean_kld is not None and diff is not None:
        d, unc = mean_and_uncertainty(diff)
        if mean_kld > RTN_FACTOR * rtn_mean_kld and d > 2 * unc:
            return (f"worse than plain RTN of the same format (mean KLD {mean_kld:.3g} "
                    f"against {rtn_mean_kld:.3g}): the method made the model worse than "
                    "rounding alone (too little calibration data, or a layout it gets wrong)")
    return None


def finish_steps(model, windows: torch.Tensor, base: list[np.ndarray], spec: SelfCheckSpec,
                 baseline: RTNBaseline | None, seconds_before: float) -> Iterator:
    """Yield progress, then the ``SelfCheck``; ``baseline`` None: RTN not measured."""
    t0 = time.perf_counter()
    stats = _score(model, windows, base)
    report = summarize(stats)
    yield CalibrationProgress("self-check", len(windows) + len(windows) // 2, 2 * len(windows))
    rtn_kld = rtn_same = None
    diff = None
    if baseline is not None:
        with baseline:
            rtn_stats = _score(model, windows, base)
        rtn_report = summarize(rtn_stats)
        rtn_kld, rtn_same = rtn_report.mean_kld, rtn_report.same_top_p
        diff = stats["kld"] - rtn_stats["kld"]
    yield CalibrationProgress("self-check", 2 * len(windows), 2 * len(windows))
    warning = judge(report.mean_kld, rtn_kld, diff)
    log.info("self-check: mean KLD %.4f, RTN %s, %s", report.mean_kld, rtn_kld,
             warning or "plausible")
    yield SelfCheck(
        text=spec.text, windows=int(windows.shape[0]), tokens=report.tokens,
        mean_kld=report.mean_kld, same_top_p=report.same_top_p, rtn_mean_kld=rtn_kld,
        seconds=seconds_before + time.perf_counter() - t0, plausible=warning is None,
        warning=warning, rtn_same_top_p=rtn_same, kld_limit=KLD_LIMIT,
    )
