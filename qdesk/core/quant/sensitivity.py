"""The ``sensitivity`` plan: measure, then spend extra bits where they help most.

A first pass runs the original model over the calibration inputs, layer by
layer, and measures every Linear's relative output error when rounded (RTN) at
the job's bits and at each higher width. Then, greedily, the Linear with the
largest current error moves up one width (2 -> 3 -> 4 -> 8) while the average
bits per weight stays within the budget (default: 0.5 above uniform).
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import replace

from qdesk.core.quant.configs import BITS, QuantConfig, RTNConfig
from qdesk.core.quant.events import CalibrationProgress, LayerSensitivity
from qdesk.core.quant.layerwalk import (
    capture_inputs,
    fast_compute_dtype,
    gather_stats,
    run_layer,
    working_copy,
)
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.rtn import quantize_rtn
from qdesk.core.quant.stats import relative_output_error

log = logging.getLogger(__name__)


def _bits_cost(config: QuantConfig, numel: int, in_features: int) -> float:
    g = in_features if config.group_size == -1 else config.group_size
    per_group = 16 + (0 if config.symmetric else config.bits)
    return numel * (config.bits + per_group / g)


def sensitivity_configs(model, layers, prefix, config, plan, widths, numels, input_ids, device):
    """Generator: yields progress and one ``LayerSensitivity`` per Linear, returns
    {name: config} (nothing kept)."""
    base = replace(plan, sensitivity=False).resolve(widths, config)
    levels = sorted(b for b in BITS if b >= config.bits)
    errors: dict[str, dict[int, float]] = {}
    captured = None
    dtype = fast_compute_dtype(next(model.parameters()).dtype, device)
    for item in capture_inputs(model, layers, input_ids, device, dtype):
        if isinstance(item, tuple):
            captured = item
        else:
            yield CalibrationProgress("sensitivity", item.done, item.total * 2)
    inputs, kwargs = captured  # kwargs: one dict per layer
    for li, layer in enumerate(layers):
        names = [n for n in base if n.startswith(f"{prefix}.{li}.") and base[n] is not None]
        local = [n[len(f"{prefix}.{li}."):] for n in names]
        work = working_copy(layer, dtype)
        stats = gather_stats(work, local, False, inputs, kwargs[li], int(input_ids.numel()))
        modules = dict(layer.named_modules())
        for full, n in zip(names, local):
            w = modules[n].weight.data
            errors[full] = {}
            for b in levels:
                probe = RTNConfig(bits=b, group_size=base[full].group_size,
                                  symmetric=base[full].symmetric, clip_search=False)
                qw: QuantizedWeight = quantize_rtn(w, probe)
                deq = qw.dequantize(w.dtype)
                errors[full][b] = relative_output_error(w, deq, stats[n].samples)
            yield LayerSensitivity(full, tuple(errors[full].items()))
        inputs = [run_layer(work, x, kwargs[li]) for x in inputs]
        yield CalibrationProgress("sensitivity", len(input_ids) + li + 1,
                                  len(input_ids) + len(layers))
    del inputs
    chosen = dict(base)
    total = sum(numels.values())
    cost = {n: _bits_cost(c, numels[n], widths[n]) if c else 16 * numels[n] for n, c in base.items()}
    used = sum(cost.values())
    budget = (plan.budget_bpw or (used / total + 0.5)) * total
    heap = [(-errors[n][config.bits], n) for n in errors]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        cur = chosen[n]
        higher = [b for b in levels if b > cur.bits]
        if not higher:
            continue
        nxt = cur.reshaped(bits=higher[0])
        extra = _bits_cost(nxt, numels[n], widths[n]) - cost[n]
        if used + extra > budget:
            continue
        chosen[n], cost[n], used = nxt, cost[n] + extra, used + extra
        heapq.heappush(heap, (-errors[n][higher[0]], n))
    log.info("sensitivity plan: %.3f bits per weight", used / total)
    return chosen
