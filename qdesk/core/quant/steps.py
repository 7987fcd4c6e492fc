"""The quantization job: a generator of events, layer by layer.

1. Embed the calibration samples once and capture the inputs of decoder layer 0.
2. For each decoder layer: run it on the current inputs with hooks that gather
   each Linear's input statistics; let the method prepare the layer (AWQ scales);
   quantize its Linears (one event each); run the now-quantized layer to get the
   inputs of the next layer. Peak memory: one layer's statistics plus activations.
3. Only at the end: write the checkpoint (temporary folder, renamed), then the
   summary event. Closing the generator at any yield (cancel) restores the layers
   already changed and writes nothing.

The model is modified in place: afterwards it is qdesk's in-memory quantized
model (each quantized weight replaced by its dequantized value).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.quant.configs import QuantConfig
from qdesk.core.quant.events import (
    LayerKept,
    LayerQuantized,
    QuantizeSummary,
    SavingCheckpoint,
)
from qdesk.core.quant.layerwalk import (
    ERROR_SAMPLES,
    capture_inputs,
    decoder_layers,
    fast_compute_dtype,
    gather_stats,
    layer_prefix,
    linear_widths,
    run_layer,
    working_copy,
)
from qdesk.core.quant.methods import method_for
from qdesk.core.quant.plans import Plan
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.stats import relative_output_error

log = logging.getLogger(__name__)

@dataclass
class QuantizeResult:
    """What the job returns (``StopIteration.value``), for saving or inspection."""

    records: dict[str, QuantizedWeight] = field(default_factory=dict)
    configs: dict[str, QuantConfig | None] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    summary: QuantizeSummary | None = None


def bits_per_weight(configs: dict[str, QuantConfig | None], records: dict[str, QuantizedWeight],
                    numels: dict[str, int], kept_bits: int = 16) -> float:
    total_bits = 0
    total = 0
    for name, n in numels.items():
        qw = records.get(name)
        total_bits += qw.storage_bits() if qw is not None else n * kept_bits
        total += n
    return total_bits / max(1, total)


@torch.no_grad()
def quantize_steps(
    model,
    config: QuantConfig,
    plan: Plan | None = None,
    calibration=None,
    *,
    output_dir: str | Path | None = None,
    force: bool = False,
    tokenizer=None,
    source: str = "",
) -> Iterator:
    """Quantize ``model`` (a LoadedModel or a transformers causal LM) in place.

    calibration: a ``CalibrationSet`` (``input_ids`` (n, T) long). Yields
    ``CalibrationProgress``, ``LayerQuantized``/``LayerKept`` per Linear,
    ``SavingCheckpoint`` when ``output_dir`` is given, then ``QuantizeSummary``;
    returns a ``QuantizeResult``.
    """
    t_start = time.perf_counter()
    if hasattr(model, "facts") and hasattr(model, "model"):
        tokenizer = tokenizer or model.hf_tokenizer
        source = source or model.facts.path
        if model.facts.quantization:
            raise BadInput(f"{model.facts.name} is already quantized; quantize the original model")
        model = model.model
    if model is None:
        raise BadInput("this model has no torch module to quantize (use the transformers backend)")
    if _already_quantized(model):
        raise BadInput("this model is already quantized; quantize the original model")
    if calibration is None:
        raise BadInput("quantization needs calibration samples (see qdesk.core.quant.calibration)")
    plan = plan or Plan()
    if output_dir is not None:
        from qdesk.core.quant.checkpoint import check_output_dir

        check_output_dir(Path(output_dir), force)

    layers = decoder_layers(model)
    prefix = layer_prefix(model, layers)
    widths = linear_widths(model)
    numels = {n: model.get_submodule(n).weight.numel() for n in widths}
    device = next(model.parameters()).device
    input_ids = calibration.input_ids
    tokens_total = int(input_ids.numel())
    dtype = fast_compute_dtype(next(model.parameters()).dtype, device)

    if plan.sensitivity:
        from qdesk.core.quant.sensitivity import sensitivity_configs

        configs = yield from sensitivity_configs(
            model, layers, prefix, config, plan, widths, numels, input_ids, device
        )
    else:
        configs = plan.resolve(widths, config)
    todo = [n for n, c in configs.items() if c is not None]
    if not todo:
        raise BadInput(f"plan '{plan.name}' keeps every layer: nothing to quantize")
    if not any(method_for(configs[n]).needs_hessian for n in todo):
        # Calibration-free methods use the samples only to measure output error:
        # a few evenly spread samples (about 4 x ERROR_SAMPLES tokens) suffice.
        k = min(len(input_ids), max(1, -(-4 * ERROR_SAMPLES // input_ids.shape[1])))
        input_ids = input_ids[torch.linspace(0, len(input_ids) - 1, k).round().long()]
        tokens_total = int(input_ids.numel())

    _check_memory(model, layers, input_ids, dtype, device,
                  any(method_for(configs[n]).needs_hessian for n in todo))
    originals: dict[int, dict] = {}
    result = QuantizeResult(configs=configs)
    index = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        captured = None
        for item in capture_inputs(model, layers, input_ids, device, dtype):
            if isinstance(item, tuple):
                captured = item
            else:
                yield item
        inputs, kwargs = captured
        for li, layer in enumerate(layers):
            local = {n[len(f"{prefix}.{li}."):]: c for n, c in configs.items()
                     if n.startswith(f"{prefix}.{li}.")}
            names = [n for n, c in local.items() if c is not None]
            for n, c in local.items():
                if c is None:
                    yield LayerKept(f"{prefix}.{li}.{n}", "kept by the plan")
            if not names:
                work = working_copy(layer, dtype)
                inputs = [run_layer(work, x, kwargs) for x in inputs]
                continue
            originals[li] = {k: v.detach().to("cpu", copy=True) for k, v in layer.state_dict().items()}
            t0 = time.perf_counter()
            want_h = any(method_for(local[n]).needs_hessian for n in names)
            stats = gather_stats(working_copy(layer, dtype), names, want_h, inputs, kwargs,
                                  tokens_total)
            for prepare in {method_for(local[n]).prepare_layer for n in names} - {None}:
                prepare(layer, local, stats)
            shared = (time.perf_counter() - t0) / len(names)
            modules = dict(layer.named_modules())
            for n in names:
                t1 = time.perf_counter()
                lin, cfg = modules[n], local[n]
                w = lin.weight.data
                qw = method_for(cfg).quantize(w, cfg, stats[n])
                deq = qw.dequantize(w.dtype)
                err = relative_output_error(w, deq, stats[n].samples)
                lin.weight.data.copy_(deq)
                full = f"{prefix}.{li}.{n}"
                result.records[full] = replace(
                    qw, q=qw.q.cpu(), scale=qw.scale.cpu(),
                    zero=None if qw.zero is None else qw.zero.cpu(),
                )
                result.errors[full] = err
                result.seconds[full] = time.perf_counter() - t1 + shared
                index += 1
                yield LayerQuantized(
                    index, len(todo), full, cfg.method, cfg.bits, cfg.group_size,
                    cfg.symmetric, err, result.seconds[full],
                )
            del stats
            work = working_copy(layer, dtype)
            inputs = [run_layer(work, x, kwargs) for x in inputs]
            del work
        del inputs
        peak = _peak_memory(device)
        bpw = bits_per_weight(configs, result.records, numels)
        recipe = _recipe(config, plan, calibration, result, bpw, source,
                         time.perf_counter() - t_start, sum(p.numel() for p in model.parameters()))
        if output_dir is not None:
            from qdesk.core.quant.checkpoint import write_checkpoint

            yield SavingCheckpoint(str(output_dir))
            write_checkpoint(model, tokenizer, result.records, Path(output_dir), recipe, force)
    except (torch.OutOfMemoryError, MemoryError):
        _restore(layers, originals)
        need = job_memory_bytes(model, layers, input_ids, dtype, True)
        raise OutOfResources(
            f"out of {device.type} memory while quantizing: the job needs about "
            f"{need / 2**30:.1f} GiB besides the model (fewer calibration samples or tokens need less)"
        ) from None
    except BaseException:  # cancel (GeneratorExit) or failure: leave the model as it was
        _restore(layers, originals)
        raise
    errors = list(result.errors.values())
    result.summary = QuantizeSummary(
        method=config.method,
        plan=plan.name,
        layers_quantized=len(result.records),
        layers_kept=len(configs) - len(result.records),
        bits_per_weight=round(bpw, 4),
        mean_rel_error=sum(errors) / len(errors),
        seconds=time.perf_counter() - t_start,
        calibration=calibration.name,
        calibration_hash=calibration.sha256,
        output_dir=None if output_dir is None else str(output_dir),
        peak_memory_bytes=peak,
    )
    yield result.summary
    return result


def job_memory_bytes(model, layers, input_ids, dtype, hessian: bool) -> int:
    """About what the job holds besides the model: two sets of decoder-layer
    activations, one layer's Hessians and copies, the original weights kept for
    cancel (on the CPU), and the int8 codes."""
    hidden = int(getattr(model.config, "hidden_size", 0) or 0)
    itemsize = torch.empty((), dtype=dtype).element_size()
    acts = 2 * input_ids.numel() * hidden * itemsize
    layer = layers[0]
    widths = [m.in_features for m in layer.modules() if isinstance(m, nn.Linear)]
    hess = sum(w * w * 4 for w in set(widths)) if hessian else 0
    per_layer = sum(p.numel() for p in layer.parameters())
    weights = len(layers) * per_layer * (next(layer.parameters()).element_size() + 1)
    return int(acts + hess + 3 * per_layer * 4 + weights)


def _check_memory(model, layers, input_ids, dtype, device, hessian: bool) -> None:
    from qdesk.core.models import available_memory_bytes

    need = job_memory_bytes(model, layers, input_ids, dtype, hessian)
    have = available_memory_bytes(device.type)
    if need > have:
        raise OutOfResources(
            f"quantizing needs about {need / 2**30:.1f} GiB of {device.type} memory besides "
            f"the model and {have / 2**30:.1f} GiB is free (use fewer calibration samples or tokens)"
        )


def _already_quantized(model) -> bool:
    """True for a quantized config, or a model loaded from a quantized folder
    (transformers drops quantization_config when it dequantizes while loading)."""
    if getattr(model.config, "quantization_config", None):
        return True
    origin = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    if not origin.is_dir():
        return False
    if (origin / "qdesk.json").is_file():
        return True
    try:
        import json

        return bool(json.loads((origin / "config.json").read_text(encoding="utf-8"))
                    .get("quantization_config"))
    except (OSError, ValueError):
        return False


def _restore(layers, originals: dict[int, dict]) -> None:
    for li, state in originals.items():
        layers[li].load_state_dict(state)


def _peak_memory(device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return 0


def _recipe(config, plan, calibration, result: QuantizeResult, bpw, source, seconds,
            parameters: int) -> dict:
    import platform

    import transformers

    from qdesk import __version__

    layers = {
        name: {
            "method": result.configs[name].method,
            "bits": qw.bits,
            "group_size": qw.group_size,
            "symmetric": qw.symmetric,
            "rel_error": result.errors[name],
            "seconds": round(result.seconds[name], 4),
        }
        for name, qw in result.records.items()
    }
    return {
        "format": "compressed-tensors/pack-quantized",
        "source": source,
        "config": config.to_json(),
        "plan": plan.to_json(),
        "bits_per_weight": round(bpw, 4),
        "parameters": parameters,
        "kept": sorted(n for n, c in result.configs.items() if c is None),
        "calibration": calibration.describe(),
        "layers": layers,
        "seconds": round(seconds, 3),
        "versions": {
            "qdesk": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def run_quantize(*args, on_event=None, **kwargs) -> QuantizeResult:
    """Drive ``quantize_steps`` to the end (optionally seeing each event)."""
    gen = quantize_steps(*args, **kwargs)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
