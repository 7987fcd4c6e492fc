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
    CalibrationProgress,
    LayerKept,
    LayerQuantized,
    QuantizeSummary,
    SavingCheckpoint,
)
from qdesk.core.quant.methods import method_for
from qdesk.core.quant.plans import Plan
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.stats import InputStats, relative_output_error

log = logging.getLogger(__name__)

ERROR_SAMPLES = 1024  # calibration tokens kept per Linear input to measure output error


@dataclass
class QuantizeResult:
    """What the job returns (``StopIteration.value``), for saving or inspection."""

    records: dict[str, QuantizedWeight] = field(default_factory=dict)
    configs: dict[str, QuantConfig | None] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    summary: QuantizeSummary | None = None


class _StopForward(Exception):
    pass


def decoder_layers(model) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise BadInput(f"{type(model).__name__}: no decoder layers found (model.model.layers)")
    return layers


def _layer_prefix(model, layers: nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is layers:
            return name
    return "model.layers"


def linear_widths(model) -> dict[str, int]:
    """Full name -> input width of every Linear inside the decoder layers."""
    layers = decoder_layers(model)
    prefix = _layer_prefix(model, layers)
    out = {}
    for i, layer in enumerate(layers):
        for n, m in layer.named_modules():
            if isinstance(m, nn.Linear):
                out[f"{prefix}.{i}.{n}"] = m.in_features
    return out


def bits_per_weight(configs: dict[str, QuantConfig | None], records: dict[str, QuantizedWeight],
                    numels: dict[str, int], kept_bits: int = 16) -> float:
    total_bits = 0
    total = 0
    for name, n in numels.items():
        qw = records.get(name)
        total_bits += qw.storage_bits() if qw is not None else n * kept_bits
        total += n
    return total_bits / max(1, total)


def fast_compute_dtype(model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype for the calibration forwards: bfloat16 for a float32 model where
    bfloat16 matrix products are fast (CUDA, or a CPU with AMX / AVX512-BF16:
    about 6x float32 on the 2-core benchmark machine); otherwise the model's."""
    if model_dtype != torch.float32:
        return model_dtype
    if device.type == "cuda":
        return torch.bfloat16
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read(200_000)
    except OSError:
        return model_dtype
    return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else model_dtype


def _working_copy(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The layer in the compute dtype, for forwards only (a copy if that differs)."""
    if next(layer.parameters()).dtype == dtype:
        return layer
    import copy

    return copy.deepcopy(layer).to(dtype)


def _cast_kwargs(kwargs: dict, dtype: torch.dtype) -> dict:
    def cast(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.to(dtype)
        if isinstance(v, tuple):
            return tuple(cast(x) for x in v)
        return v

    return {k: cast(v) for k, v in kwargs.items()}


def _run_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _capture_inputs(model, layers, input_ids: torch.Tensor, device, dtype=None) -> Iterator:
    """Yield progress; finally yield (inputs, kwargs) of decoder layer 0, in ``dtype``."""
    inputs: list[torch.Tensor] = []
    kwargs: dict = {}

    def hook(module, args, kw):
        x = args[0] if args else kw["hidden_states"]
        inputs.append(x.detach().to(dtype or x.dtype))
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i, ids in enumerate(input_ids):
            try:
                model.model(input_ids=ids.unsqueeze(0).to(device), use_cache=False)
            except _StopForward:
                pass
            yield CalibrationProgress("capture", i + 1, len(input_ids))
    finally:
        handle.remove()
    kwargs.pop("past_key_values", None)
    kwargs.pop("past_key_value", None)
    kwargs["use_cache"] = False
    yield (inputs, _cast_kwargs(kwargs, dtype) if dtype is not None else kwargs)


def _gather_stats(layer, names, want_hessian, inputs, kwargs, tokens_total):
    modules = dict(layer.named_modules())
    stats: dict[str, InputStats] = {}
    owners: set[str] = set()
    last: list = [None, None]
    stride = max(1, tokens_total // ERROR_SAMPLES)

    def make_hook(name):
        def hook(module, args):
            x = args[0]
            if name not in stats:
                if x is last[0]:
                    stats[name] = last[1]
                else:
                    stats[name] = InputStats(
                        module.in_features, x.device, want_hessian, ERROR_SAMPLES, stride
                    )
                    owners.add(name)
            if name in owners:
                stats[name].add(x.detach())
            last[0], last[1] = x, stats[name]

        return hook

    if not want_hessian:  # only error samples wanted: a few evenly spread inputs suffice
        per = inputs[0].shape[-2] if inputs[0].dim() > 1 else 1
        k = min(len(inputs), max(1, -(-2 * ERROR_SAMPLES // per)))
        inputs = [inputs[round(i * (len(inputs) - 1) / max(1, k - 1))] for i in range(k)]
        stride = 2
    handles = [modules[n].register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        for x in inputs:
            _run_layer(layer, x, kwargs)
    finally:
        for h in handles:
            h.remove()
        last[0] = None
    return stats


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
    prefix = _layer_prefix(model, layers)
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
        for item in _capture_inputs(model, layers, input_ids, device, dtype):
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
                work = _working_copy(layer, dtype)
                inputs = [_run_layer(work, x, kwargs) for x in inputs]
                continue
            originals[li] = {k: v.detach().to("cpu", copy=True) for k, v in layer.state_dict().items()}
            t0 = time.perf_counter()
            want_h = any(method_for(local[n]).needs_hessian for n in names)
            stats = _gather_stats(_working_copy(layer, dtype), names, want_h, inputs, kwargs,
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
            work = _working_copy(layer, dtype)
            inputs = [_run_layer(work, x, kwargs) for x in inputs]
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
    from qdesk.core.device import available_memory_bytes

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
