"""SignRound (Cheng et al. 2023, "Optimize Weight Rounding via Signed Gradient
Descent"): per decoder block, learn for every weight a rounding offset
v in [-0.5, 0.5] (q = round(w / s + v)) and per group the clipping factors of
its minimum and maximum (in [0.5, 1], scaling the range the scale comes from),
by signed gradient descent on the block's output error: the mean square of
(quantized block)(x) - (dense block)(x) over calibration inputs x, the dense
outputs coming from the unquantized block on the same inputs. Rounding is
straight-through. The step size decays linearly from ``lr`` (1 / iterations by
default, as the paper) to 0; then the rounding is fixed, from the parameters
``SignRoundConfig.select`` picks: those of the lowest mini-batch loss (the
paper's and auto-round's, the default), of the lowest loss on one fixed batch
measured every ``TICK_EVERY`` iterations, or the last.

Shapes: a block's inputs are a list of (1, T, hidden) tensors; a mini-batch
concatenates ``batch_size`` of them. The block runs in the job's compute dtype
(bfloat16 on CPUs with AMX and on CUDA); the learned parameters are float32.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from qdesk.core.quant.configs import SignRoundConfig
from qdesk.core.quant.events import BlockTuned, TuningProgress
from qdesk.core.quant.primitives import (
    QuantizedWeight,
    _grouped,
    qrange,
    scale_dtype_for,
)

CLIP_RANGE = (0.5, 1.0)  # per-group clipping factors stay in this interval
TICK_EVERY = 10  # iterations between progress events (the cancel points)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


@dataclass
class TunedWeight:
    """The learnable state of one Linear: offsets v (out, n_groups, g), clipping of the
    group minimum and maximum (out, n_groups), all float32; the dense weight
    grouped (out, n_groups, g) and its group minimum and maximum, fixed."""

    wg: torch.Tensor  # float32 (out, n_groups, g), the dense weight
    wmin: torch.Tensor  # (out, n_groups): min(group, 0)
    wmax: torch.Tensor  # (out, n_groups): max(group, 0)
    v: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    config: SignRoundConfig

    @classmethod
    def start(cls, w: torch.Tensor, config: SignRoundConfig) -> TunedWeight:
        wg = _grouped(w.detach(), config.group_size).clone()
        ones = torch.ones(wg.shape[:2], device=w.device)
        return cls(wg, wg.amin(-1).clamp_max(0.0), wg.amax(-1).clamp_min(0.0),
                   torch.zeros_like(wg), ones.clone(), ones.clone(), config)

    def params(self) -> list[torch.Tensor]:
        return [self.v, self.lo, self.hi] if self.config.minmax_tuning else [self.v]

    def qparams(self, ste: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale (out, n_groups, 1) float32 and zero (or None) from the clipped range;
        the full symmetric grid maps the larger clipped side to -2^(b-1)."""
        c = self.config
        qmin, qmax = qrange(c.bits)
        wmin = self.wmin * self.lo
        wmax = self.wmax * self.hi
        if c.symmetric:
            # The positive side is larger: scale negative, so w = wmax codes to qmin.
            scale = torch.where(wmax >= -wmin, wmax / qmin, wmin / qmin)
            tiny = scale.abs() < 1e-8
            scale = torch.where(tiny, torch.full_like(scale, 1e-8), scale)
            return scale.unsqueeze(-1), None
        scale = ((wmax - wmin) / (qmax - qmin)).clamp_min(1e-8)
        z = qmin - wmin / scale
        z = (_round_ste(z) if ste else torch.round(z)).clamp(qmin, qmax)
        return scale.unsqueeze(-1), z.unsqueeze(-1)

    def fake_quantized(self) -> torch.Tensor:
        """Dequantized weight (out, in) float32, differentiable in v, lo, hi."""
        c = self.config
        qmin, qmax = qrange(c.bits)
        scale, zero = self.qparams()
        x = self.wg / scale + self.v
        if zero is not None:
            x = x + zero
        q = _round_ste(x).clamp(qmin, qmax)
        if zero is not None:
            q = q - zero
        return (q * scale).reshape(self.shape)

    @property
    def shape(self) -> tuple[int, int]:
        out, ng, g = self.wg.shape
        return out, ng * g

    def final(self, weight_dtype: torch.dtype) -> QuantizedWeight:
        """Fix the rounding: 16-bit scales, int8 codes, as the other methods store them."""
        c = self.config
        qmin, qmax = qrange(c.bits)
        with torch.no_grad():
            scale, _ = self.qparams(ste=False)
            scale = scale.squeeze(-1).to(scale_dtype_for(weight_dtype))
            zero = None
            if not c.symmetric:
                zero = torch.round(qmin - self.wmin * self.lo / scale.float()).clamp(qmin, qmax)
            x = self.wg / scale.float().unsqueeze(-1) + self.v
            if zero is not None:
                x = x + zero.unsqueeze(-1)
            q = torch.round(x).clamp(qmin, qmax).to(torch.int8).reshape(self.shape)
            zq = None if zero is None else zero.to(torch.int8)
        return QuantizedWeight(q, scale, zq, c.bits, c.group_size)

    def snapshot(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach().clone() for p in (self.v, self.lo, self.hi))

    def restore(self, state: tuple[torch.Tensor, ...]) -> None:
        for p, s in zip((self.v, self.lo, self.hi), state):
            p.data.copy_(s)


def sign_step(tuned: list[TunedWeight], lr: float) -> None:
    """One signed-gradient update of every tuned parameter, then the clamps."""
    with torch.no_grad():
        for t in tuned:
            for p in t.params():
                if p.grad is not None:
                    p.sub_(lr * torch.sign(p.grad))
                    p.grad = None
            t.v.clamp_(-0.5, 0.5)
            t.lo.clamp_(*CLIP_RANGE)
            t.hi.clamp_(*CLIP_RANGE)


def block_loss(block: nn.Module, tuned: dict[str, TunedWeight], x: torch.Tensor,
               target: torch.Tensor, kwargs: dict, dtype: torch.dtype) -> torch.Tensor:
    """Mean square of the quantized block's output minus ``target`` (float32 scalar)."""
    weights = {f"{n}.weight": t.fake_quantized().to(dtype) for n, t in tuned.items()}
    out = functional_call(block, weights, (x,), kwargs)
    out = out[0] if isinstance(out, tuple) else out
    return (out.float() - target.float()).pow(2).mean()


def _batches(n: int, size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless random mini-batches of sample indices, each sample once per epoch."""
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for i in range(0, n - size + 1, size):
            yield order[i:i + size]


def tune_block(layer: nn.Module, configs: dict[str, SignRoundConfig], inputs: list[torch.Tensor],
               kwargs: dict, dtype: torch.dtype, index: int, total: int,
               targets: list[torch.Tensor] | None = None) -> Iterator:
    """Tune one decoder block; yields ``TuningProgress`` every ``TICK_EVERY``
    iterations and a ``BlockTuned`` at the end; returns {name: QuantizedWeight}.

    ``layer`` holds the dense weights (left unchanged; the block runs as a copy in
    ``dtype``); configs: Linear name
    inside the layer -> its config (all share iterations, lr and batch size:
    the first one's). ``targets``: what the block should output for each input
    (the job passes the dense model's own activations, see
    ``SignRoundConfig.dense_targets``); None: the dense block's output on
    ``inputs``."""
    t0 = time.perf_counter()
    first = next(iter(configs.values()))
    modules = dict(layer.named_modules())
    weight_dtype = {n: modules[n].weight.dtype for n in configs}
    block = _copy_to(layer, dtype)  # a frozen copy: the model's own flags stay as they were
    for p in block.parameters():
        p.requires_grad_(False)
    tuned = {n: TunedWeight.start(modules[n].weight, c) for n, c in configs.items()}
    for t in tuned.values():
        for p in t.params():
            p.requires_grad_(True)
    if targets is None:
        with torch.no_grad():
            targets = [_forward(block, x, kwargs) for x in inputs]
    select, (check_x, check_y), (inputs, targets) = _selection_split(
        first.select, first.batch_size, inputs, targets)
    size = max(1, min(first.batch_size, len(inputs)))
    iters = first.iters
    lr0 = first.lr if first.lr is not None else 1.0 / max(1, iters)
    batches = _batches(len(inputs), size, torch.Generator().manual_seed(index))
    keep = _Keeper(select, block, tuned, check_x, check_y, kwargs, dtype)
    loss = None
    for it in range(iters):
        idx = next(batches)
        x = torch.cat([inputs[i] for i in idx])
        y = torch.cat([targets[i] for i in idx])
        with torch.enable_grad():
            loss_t = block_loss(block, tuned, x, y, kwargs, dtype)
            loss_t.backward()
        loss = float(loss_t.detach())
        keep.batch_measured(loss)
        sign_step(list(tuned.values()), lr0 * (1.0 - it / iters))
        if (it + 1) % TICK_EVERY == 0 or it + 1 == iters:
            keep.tick()
            if it + 1 < iters:
                yield TuningProgress(index + 1, total, it + 1, iters, loss)
    keep.restore_best()
    result = {n: t.final(weight_dtype[n]) for n, t in tuned.items()}
    yield BlockTuned(index + 1, total, iters, keep.start_loss or 0.0, keep.best_loss,
                     time.perf_counter() - t0)
    return result


def _selection_split(select: str, batch_size: int, inputs: list, targets: list):
    """(the rule _Keeper applies, its check batch (inputs, targets), the samples
    to tune on). "heldout" sets the last ``batch_size`` samples aside, never
    tuned on, and keeps the state that scores best on them ("fixed"); with
    fewer than 8 batches of samples there are too few to spare: "batch", since
    a fixed batch that is also tuned on rewards overfitting it (a tiny random
    Qwen2 at 6 iterations kept a state the self-check judged worse than RTN)."""
    size = max(1, min(batch_size, len(inputs)))
    if select == "heldout":
        if len(inputs) >= 8 * size:
            return "fixed", (inputs[-size:], targets[-size:]), (inputs[:-size], targets[:-size])
        select = "batch"
    return select, (inputs[:size], targets[:size]), (inputs, targets)


class _Keeper:
    """Which parameters the tuning ends with (``SignRoundConfig.select``).

    "fixed": the lowest loss on one fixed batch (the first samples), measured at
    the start and every tick. Mini-batch losses differ by their samples more than
    by the parameters once there are many samples, so "batch" (the lowest
    mini-batch loss, auto-round's rule) tends to keep whichever state met the
    easiest batch. "last": the state after the last step."""

    def __init__(self, select: str, block, tuned: dict[str, TunedWeight], xs, ys, kwargs, dtype):
        self.select, self.block, self.tuned = select, block, tuned
        self.kwargs, self.dtype = kwargs, dtype
        self.best_loss, self.best_state, self.start_loss = float("inf"), None, None
        if select == "fixed":
            self.x, self.y = torch.cat(xs), torch.cat(ys)
            self._consider(self._fixed_loss())

    def _fixed_loss(self) -> float:
        with torch.no_grad():
            return float(block_loss(self.block, self.tuned, self.x, self.y, self.kwargs, self.dtype))

    def _consider(self, loss: float) -> None:
        self.start_loss = loss if self.start_loss is None else self.start_loss
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = {n: t.snapshot() for n, t in self.tuned.items()}

    def batch_measured(self, loss: float) -> None:
        """A mini-batch's loss, measured before this iteration's step."""
        if self.select == "batch":
            self._consider(loss)
        elif self.select == "last":
            self.start_loss = loss if self.start_loss is None else self.start_loss
            self.best_loss = loss

    def tick(self) -> None:
        if self.select == "fixed":
            self._consider(self._fixed_loss())

    def restore_best(self) -> None:
        if self.select != "last" and self.best_state is not None:
            for n, t in self.tuned.items():
                t.restore(self.best_state[n])
        if self.best_state is None and self.select != "last":
            self.best_loss = 0.0


def _forward(block: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = block(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _copy_to(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(layer).to(dtype)


def quantize_signround_alone(w: torch.Tensor, config: SignRoundConfig, stats=None
                             ) -> QuantizedWeight:
    """One weight without its block (``quantize_weight``): the untuned start,
    i.e. round to nearest on the full grid."""
    return TunedWeight.start(w, config).final(w.dtype)
