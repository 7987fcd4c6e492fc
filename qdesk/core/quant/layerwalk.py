"""Walking a decoder layer by layer over calibration inputs: the part the
quantization job and the sensitivity search share.

``capture_inputs`` embeds the calibration samples once and catches what decoder
layer 0 receives; ``gather_stats`` runs one layer with hooks that collect each
Linear's input statistics; ``run_layer`` produces the next layer's inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from qdesk.core.errors import BadInput
from qdesk.core.quant.events import CalibrationProgress
from qdesk.core.quant.stats import InputStats

ERROR_SAMPLES = 1024  # calibration tokens kept per Linear input to measure output error


class StopForward(Exception):
    pass


def decoder_layers(model) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise BadInput(f"{type(model).__name__}: no decoder layers found (model.model.layers)")
    return layers


def layer_prefix(model, layers: nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is layers:
            return name
    return "model.layers"


def linear_widths(model) -> dict[str, int]:
    """Full name -> input width of every Linear inside the decoder layers."""
    layers = decoder_layers(model)
    prefix = layer_prefix(model, layers)
    out = {}
    for i, layer in enumerate(layers):
        for n, m in layer.named_modules():
            if isinstance(m, nn.Linear):
                out[f"{prefix}.{i}.{n}"] = m.in_features
    return out


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


def working_copy(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The layer in the compute dtype, for forwards only (a copy if that differs)."""
    if next(layer.parameters()).dtype == dtype:
        return layer
    return copy.deepcopy(layer).to(dtype)


def cast_kwargs(kwargs: dict, dtype: torch.dtype) -> dict:
    def cast(v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.to(dtype)
        if isinstance(v, tuple):
            return tuple(cast(x) for x in v)
        return v

    return {k: cast(v) for k, v in kwargs.items()}


def run_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def capture_inputs(model, layers, input_ids: torch.Tensor, device, dtype=None) -> Iterator:
    """Yield progress; finally yield (inputs, kwargs) of decoder layer 0, in ``dtype``."""
    inputs: list[torch.Tensor] = []
    kwargs: dict = {}

    def hook(module, args, kw):
        x = args[0] if args else kw["hidden_states"]
        inputs.append(x.detach().to(dtype or x.dtype))
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i, ids in enumerate(input_ids):
            try:
                model.model(input_ids=ids.unsqueeze(0).to(device), use_cache=False)
            except StopForward:
                pass
            yield CalibrationProgress("capture", i + 1, len(input_ids))
    finally:
        handle.remove()
    kwargs.pop("past_key_values", None)
    kwargs.pop("past_key_value", None)
    kwargs["use_cache"] = False
    yield (inputs, cast_kwargs(kwargs, dtype) if dtype is not None else kwargs)


def gather_stats(layer, names, want_hessian, inputs, kwargs, tokens_total):
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
            run_layer(layer, x, kwargs)
    finally:
        for h in handles:
            h.remove()
        last[0] = None
    return stats
