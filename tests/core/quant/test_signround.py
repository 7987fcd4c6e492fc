"""SignRound against a direct, slow reference of one step on one tiny layer,
and inside the job (one event per block, progress ticks, cancel)."""

from __future__ import annotations

import pytest
import torch
from quant_helpers import calib, make_tiny
from torch import nn
from torch.testing import assert_close

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import SignRoundConfig, make_config
from qdesk.core.quant.events import BlockTuned, LayerQuantized, TuningProgress
from qdesk.core.quant.primitives import choose_qparams, qrange, quantize
from qdesk.core.quant.signround import TunedWeight, block_loss, sign_step, tune_block
from qdesk.core.quant.steps import quantize_steps


class OneLinear(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        self.lin.weight.data.copy_(w)

    def forward(self, x):
        return self.lin(x)


def _reference_step(w, v, lo, hi, x, y, bits, g, lr):
    """One SignRound step for y ~ x Wq^T, element by element: the straight-through
    gradient of mean((x Wq^T - y)^2) with respect to v, lo and hi, then the sign step
    and the clamps. Symmetric full grid."""
    qmin, qmax = qrange(bits)
    out, inp = w.shape
    ng = inp // g
    wq = torch.empty(out, inp, dtype=torch.float64)
    parts = {}
    for r in range(out):
        for k in range(ng):
            cols = range(k * g, (k + 1) * g)
            wmin = min(0.0, min(float(w[r, j]) for j in cols)) * float(lo[r, k])
            wmax = max(0.0, max(float(w[r, j]) for j in cols)) * float(hi[r, k])
            upper = wmax >= -wmin
            s = wmax / qmin if upper else wmin / qmin
            for j in cols:
                t = float(w[r, j]) / s + float(v[r, j])
                rq = round(t) if abs(t - int(t)) != 0.5 else float(torch.round(torch.tensor(t)))
                inside = qmin <= rq <= qmax
                q = min(max(rq, qmin), qmax)
                wq[r, j] = q * s
                parts[r, j] = (s, q, inside, upper, k)
    resid = x.double() @ wq.t() - y.double()
    grad_wq = 2.0 * resid.t() @ x.double() / resid.numel()  # (out, in)
    gv = torch.zeros(out, inp, dtype=torch.float64)
    glo = torch.zeros(out, ng, dtype=torch.float64)
    ghi = torch.zeros(out, ng, dtype=torch.float64)
    for (r, j), (s, q, inside, upper, k) in parts.items():
        gv[r, j] = grad_wq[r, j] * s * inside
        dwq_ds = q - (float(w[r, j]) / s) * inside  # straight-through rounding
        grp = w[r, k * g:(k + 1) * g]
        if upper:
            ghi[r, k] += grad_wq[r, j] * dwq_ds * max(0.0, float(grp.max())) / qmin
        else:
            glo[r, k] += grad_wq[r, j] * dwq_ds * min(0.0, float(grp.min())) / qmin
    new_v = (v.double() - lr * torch.sign(gv)).clamp(-0.5, 0.5)
    new_lo = (lo.double() - lr * torch.sign(glo)).clamp(0.5, 1.0)
    new_hi = (hi.double() - lr * torch.sign(ghi)).clamp(0.5, 1.0)
    return (gv, glo, ghi), (new_v, new_lo, new_hi)


def test_one_step_matches_the_slow_reference():
    torch.manual_seed(3)
    w = torch.randn(4, 32)
    x = torch.randn(24, 32)
    y = x @ w.t()
    cfg = SignRoundConfig(bits=4, group_size=16, iters=1)
    block = OneLinear(w)
    tuned = TunedWeight.start(w, cfg)
    # start away from zero so the step's clamps and both scale branches matter
    tuned.v.copy_(torch.rand_like(tuned.v) - 0.5)
    tuned.lo.copy_(0.7 + 0.3 * torch.rand_like(tuned.lo))
    tuned.hi.copy_(0.7 + 0.3 * torch.rand_like(tuned.hi))
    v0, lo0, hi0 = (t.clone() for t in (tuned.v.reshape(4, 32), tuned.lo, tuned.hi))
    for p in tuned.params():
        p.requires_grad_(True)
    loss = block_loss(block, {"lin": tuned}, x, y, {}, torch.float32)
    loss.backward()
    grads, expected = _reference_step(w, v0, lo0, hi0, x, y, 4, 16, lr=0.01)
    # float32 sums against float64 ones: tolerance relative to the largest gradient
    for got, ref in zip((tuned.v.grad.reshape(4, 32), tuned.lo.grad, tuned.hi.grad), grads):
        assert_close(got.double(), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    assert float(grads[1].abs().sum()) > 0 and float(grads[2].abs().sum()) > 0
    sign_step([tuned], 0.01)
    assert_close(tuned.v.reshape(4, 32).double(), expected[0], rtol=0, atol=1e-7)
    assert_close(tuned.lo.double(), expected[1], rtol=0, atol=1e-7)
    assert_close(tuned.hi.double(), expected[2], rtol=0, atol=1e-7)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_untuned_start_is_min_max_rounding(bits, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(8, 64)
    cfg = SignRoundConfig(bits=bits, group_size=32, symmetric=symmetric, iters=0)
    qw = TunedWeight.start(w, cfg).final(w.dtype)
    scale, zero = choose_qparams(w, bits, 32, symmetric)
    assert_close(qw.scale, scale, rtol=0, atol=0)
    assert_close(qw.q, quantize(w, scale, zero, bits, 32), rtol=0, atol=0)
    if not symmetric:
        assert_close(qw.zero, zero, rtol=0, atol=0)


def _block_mse(layer, qws, inputs, kwargs):
    import copy

    from qdesk.core.quant.layerwalk import run_layer

    work = copy.deepcopy(layer)
    mods = dict(work.named_modules())
    for n, qw in qws.items():
        mods[n].weight.data.copy_(qw.dequantize(torch.float32))
    with torch.no_grad():
        return sum(float((run_layer(work, x, kwargs) - run_layer(layer, x, kwargs)).pow(2).mean())
                   for x in inputs)


def _first_block(seed: int, samples: int):
    """(a tiny model's first decoder layer, its captured inputs, their kwargs, the
    names of its Linears) for ``samples`` calibration samples of 32 tokens."""
    from qdesk.core.quant.layerwalk import capture_inputs, decoder_layers

    model = make_tiny(seed=seed)
    layers = decoder_layers(model)
    inputs, kwargs = None, None
    for item in capture_inputs(model, layers, calib(samples, 32).input_ids, torch.device("cpu")):
        if isinstance(item, tuple):
            inputs, kwargs = item
    names = [n for n, m in layers[0].named_modules() if isinstance(m, nn.Linear)]
    return layers[0], inputs, kwargs[0], names


def test_tuning_lowers_the_block_error_below_rounding_to_nearest():
    layer, inputs, kwargs, names = _first_block(seed=1, samples=8)
    results = {}
    for iters in (0, 60):
        cfg = SignRoundConfig(bits=3, group_size=32, iters=iters, batch_size=4)
        events, results[iters] = _tune(layer, {n: cfg for n in names}, inputs, kwargs)
        assert isinstance(events[-1], BlockTuned) and events[-1].iterations == iters
        assert sum(isinstance(e, TuningProgress) for e in events) == max(0, (iters - 1) // 10)
    rtn = _block_mse(layer, results[0], inputs, kwargs)
    tuned = _block_mse(layer, results[60], inputs, kwargs)
    assert tuned < 0.8 * rtn


def test_select_fixed_keeps_the_lowest_loss_on_its_fixed_batch():
    """The three rules walk the same trajectory (select changes no step): "fixed"
    ends with the state of lowest loss on the first batch_size samples, among
    candidates that include the start (round to nearest) and the last state, so
    on that batch it is at least as good as "last", "batch" and no tuning."""
    layer, inputs, kwargs, names = _first_block(seed=2, samples=12)
    fixed_batch = [torch.cat(inputs[:4])]
    kept, done = {}, {}
    for select, iters in (("fixed", 25), ("batch", 25), ("last", 25), ("fixed", 0)):
        cfg = SignRoundConfig(bits=3, group_size=32, iters=iters, batch_size=4, select=select)
        events, kept[select, iters] = _tune(layer, {n: cfg for n in names}, inputs, kwargs)
        done[select, iters] = events[-1]
    loss = {k: _block_mse(layer, q, fixed_batch, kwargs) for k, q in kept.items()}
    # the tuner measures with float32 scales; the kept weights store 16-bit ones
    best = done["fixed", 25]
    assert best.loss_best == pytest.approx(loss["fixed", 25], rel=0.02)
    assert best.loss_start == pytest.approx(loss["fixed", 0], rel=0.02)
    assert loss["fixed", 25] <= 1.01 * min(loss["last", 25], loss["batch", 25], loss["fixed", 0])
    assert loss["fixed", 25] < loss["fixed", 0]
    assert done["batch", 25].loss_best <= done["batch", 25].loss_start


def test_select_heldout_keeps_its_check_samples_out_of_the_tuning():
    """"heldout" sets the last batch_size samples aside (never tuned on) and keeps
    the state that scores best on them; with fewer than eight batches of samples
    it is "batch", on all of them."""
    from qdesk.core.quant.signround import _selection_split

    xs, ys = list(range(40)), [f"y{i}" for i in range(40)]
    rule, (cx, cy), (tx, ty) = _selection_split("heldout", 4, xs, ys)
    assert rule == "fixed" and cx == xs[-4:] and cy == ys[-4:]
    assert tx == xs[:-4] and ty == ys[:-4] and not set(cx) & set(tx)
    rule, _, (tx, _) = _selection_split("heldout", 4, xs[:12], ys[:12])
    assert rule == "batch" and tx == xs[:12]
    assert _selection_split("batch", 4, xs, ys)[2][0] == xs
    layer, inputs, kwargs, names = _first_block(seed=3, samples=32)
    cfg = SignRoundConfig(bits=3, group_size=32, iters=20, batch_size=4, select="heldout")
    events, kept = _tune(layer, {n: cfg for n in names}, inputs, kwargs)
    check = [torch.cat(inputs[-4:])]
    # what it reports is the held-out batch's loss, and it never ends above the start
    assert events[-1].loss_best == pytest.approx(_block_mse(layer, kept, check, kwargs),
                                                 rel=0.02)
    assert events[-1].loss_best <= events[-1].loss_start


def _tune(layer, configs, inputs, kwargs):
    """(the events, the returned weights) of tuning one block in float32."""
    gen = tune_block(layer, configs, inputs, kwargs, torch.float32, 0, 2)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value


def test_job_yields_one_event_per_block_and_cancel_restores_the_model():
    model = make_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = make_config("signround", iters=12, batch_size=2)
    events = list_events(quantize_steps(model, cfg, None, calib(4, 16), check=None))
    assert sum(isinstance(e, BlockTuned) for e in events) == 2
    quantized = [e for e in events if isinstance(e, LayerQuantized)]
    assert len(quantized) == 14 and all(e.method == "signround" for e in quantized)
    assert all(0 < e.rel_error < 1 for e in quantized)

    model = make_tiny()
    gen = quantize_steps(model, cfg, None, calib(4, 16), check=None)
    for e in gen:
        if isinstance(e, TuningProgress):
            break
    gen.close()  # cancel at the first tick
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dense_targets", [True, False])
def test_the_job_aims_each_block_at_the_dense_models_activations(monkeypatch, dense_targets):
    """With dense_targets each block learns towards the dense model's own output of
    that block; without, the tuner gets no targets (it aims at the dense block's
    output on the quantized stream). The second block's inputs always come from
    the quantized first block."""
    from dataclasses import replace

    from qdesk.core.quant import layerwalk, methods

    # compared with the dense model's float32 activations: the job's forwards in
    # float32 too, as on a CPU without bf16 instructions (with AVX512-BF16 or AMX
    # the job runs them in bfloat16; test_steps checks that choice)
    monkeypatch.setattr(layerwalk, "_cpu_has_fast_bf16", lambda: False)
    model = make_tiny()
    ids = calib(4, 16).input_ids
    outputs = {}
    hooks = [layer.register_forward_hook(
        lambda m, a, out, i=i: outputs.__setitem__(i, out[0] if isinstance(out, tuple) else out))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        dense_in = model(ids, output_hidden_states=True).hidden_states[0]
    for h in hooks:
        h.remove()
    seen = []

    def recording(layer, configs, inputs, kwargs, dtype, index, total, targets=None):
        seen.append((torch.cat(inputs).clone(),
                     None if targets is None else torch.cat(targets).clone()))
        return (yield from tune_block(layer, configs, inputs, kwargs, dtype, index, total,
                                      targets=targets))

    entry = methods.METHODS[SignRoundConfig]
    monkeypatch.setitem(methods.METHODS, SignRoundConfig, replace(entry, tune_block=recording))
    cfg = make_config("signround", iters=4, batch_size=2, dense_targets=dense_targets)
    list_events(quantize_steps(model, cfg, None, calib(4, 16), check=None))
    assert len(seen) == 2
    (first_in, first_aim), (second_in, second_aim) = seen
    assert_close(first_in, dense_in, rtol=1e-5, atol=1e-5)
    assert (second_in - outputs[0]).abs().max() > 1e-3  # quantized stream
    if dense_targets:
        assert_close(first_aim, outputs[0], rtol=1e-5, atol=1e-5)
        assert_close(second_aim, outputs[1], rtol=1e-5, atol=1e-5)
    else:
        assert first_aim is None and second_aim is None


def list_events(gen):
    out = []
    try:
        while True:
            out.append(next(gen))
    except StopIteration:
        return out


def test_config_is_validated():
    with pytest.raises(BadInput):
        SignRoundConfig(iters=-1)
    with pytest.raises(BadInput):
        SignRoundConfig(batch_size=0)
    with pytest.raises(BadInput):
        make_config("signround", lr=5.0)
    with pytest.raises(BadInput):
        make_config("signround", select="best")
    config = make_config("signround")
    assert (config.iters, config.batch_size, config.select) == (100, 4, "heldout")
