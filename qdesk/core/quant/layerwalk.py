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
from qdesk.core.threads import apply_torch_threads, compute_stream

ERROR_SAMPLES = 1024  # calibration tokens kept per Linear input to measure output error


class StopForward(Exception):
    pass


def _layer_count(model) -> int:
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) if config is not None else None
    for c in (config, text):
        n = getattr(c, "num_hidden_layers", None)
        if isinstance(n, int) and n > 0:
            return n
    return 0


def _has_weights(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules()) or any(
        p.ndim >= 2 for p in module.parameters()
    )


def decoder_layers(model) -> nn.ModuleList:
    """The decoder's list of layers, found by what it is, not where Llama keeps it:
    the ``layers`` of ``model.get_decoder()`` when that is such a list (Llama,
    Gemma, Phi-3, Qwen, and the language model inside multimodal wrappers),
    otherwise the one ModuleList of ``num_hidden_layers`` modules of one class
    that hold weights (GPT-2's ``transformer.h``, GPT-NeoX's ``layers``)."""
    n = _layer_count(model)

    def is_stack(m) -> bool:
        return (isinstance(m, nn.ModuleList) and len(m) > 0 and (n == 0 or len(m) == n)
                and len({type(x) for x in m}) == 1 and _has_weights(m[0]))

    decoder = None
    if hasattr(model, "get_decoder"):
        try:
            decoder = model.get_decoder()
        except Exception:  # transformers raises for models it cannot tell
            decoder = None
    if decoder is not None and is_stack(getattr(decoder, "layers", None)):
        return decoder.layers
    stacks = [m for _, m in model.named_modules() if is_stack(m)]
    if n and stacks:
        # Several candidates (experts in a list as long as the stack): the outermost.
        return stacks[0]
    raise BadInput(
        f"{type(model).__name__}: no stack of decoder layers found "
        f"(looked for a list of {n or 'its'} layers under the decoder)"
    )


def layer_prefix(model, layers: nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise BadInput(f"{type(model).__name__}: its decoder layers are not part of the model")


def layer_owner(model, layers: nn.ModuleList) -> nn.Module:
    """The module that runs the layers (embeddings -> layers -> final norm):
    what the calibration forward calls, without the output head."""
    prefix = layer_prefix(model, layers)
    owner = prefix.rpartition(".")[0]
    return model.get_submodule(owner) if owner else model


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


def _cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read(200_000)
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def fast_compute_dtype(model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype for the calibration forwards (hundreds of tokens per product, not
    a decode step's one row): bfloat16 where its matrix products are fast (CUDA,
    or a CPU with AMX / AVX512-BF16); on other CPUs float32, even for a 16-bit
    model. Measured on the 2-core AVX2 development CPU, one demo layer over
    8 x 512 tokens: 1.64 s in bfloat16, 0.32 s in float32 (the model still
    chats in bfloat16 there: a decode step's products are memory-bound and
    faster in bfloat16, ``models.device.choose_placement``). Decided from the
    CPU's flags, not timed, so that the same job gives the same codes."""
    if device.type == "cuda":
        return torch.bfloat16 if model_dtype == torch.float32 else model_dtype
    if device.type != "cpu" or model_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return model_dtype
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


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
    # The job is a compute stream like a chat pane: a team wider than the cores
    # other work leaves free waits at every barrier for a descheduled member
    # (qdesk/core/threads.py), which made jobs beside a chat many times slower.
    with compute_stream():
        apply_torch_threads()
        out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


# What a decoder layer's call carries that the walk must not pass on: the KV
# cache (transformers 5.24 names it ``cache``; earlier ``past_key_values``).
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def _layer_kwargs(kw: dict) -> dict:
    out = {k: v for k, v in kw.items() if k != "hidden_states" and k not in _CACHE_KWARGS}
    out["use_cache"] = False
    return out


def capture_inputs(model, layers, input_ids: torch.Tensor, device, dtype=None) -> Iterator:
    """Yield progress; finally yield (inputs, kwargs): the inputs of decoder layer 0
    (one (1, T, hidden) tensor per sample, in ``dtype``) and one kwargs dict per
    layer.

    Each layer keeps its own kwargs because they differ between layers: Gemma 2/3
    give sliding-window layers another attention mask, and Gemma 3 another
    rotary embedding, than global ones. The first sample runs through every
    layer to record them; the others stop at layer 0. All samples have the same
    length, so the recorded masks and positions hold for every one."""
    inputs: list[torch.Tensor] = []
    per_layer: list[dict | None] = [None] * len(layers)

    def make_hook(i: int):
        def hook(module, args, kw):
            if len(args) > 1:
                raise BadInput(
                    f"{type(module).__name__} is called with positional arguments besides "
                    "the hidden states; qdesk's layer walk cannot replay them"
                )
            if i == 0:
                x = args[0] if args else kw["hidden_states"]
                inputs.append(x.detach().to(dtype or x.dtype))
            if per_layer[i] is None:
                per_layer[i] = _layer_kwargs(kw)
            elif i == 0:
                raise StopForward  # kwargs known for every layer: layer 0's input suffices

        return hook

    owner = layer_owner(model, layers)
    handles = [layer.register_forward_pre_hook(make_hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        for i, ids in enumerate(input_ids):
            try:
                owner(input_ids=ids.unsqueeze(0).to(device), use_cache=False)
            except StopForward:
                pass
            yield CalibrationProgress("capture", i + 1, len(input_ids))
    finally:
        for h in handles:
            h.remove()
    if any(kw is None for kw in per_layer):
        raise BadInput(f"{type(model).__name__}: the forward pass skipped some decoder layers")
    kwargs = [cast_kwargs(kw, dtype) if dtype is not None else kw for kw in per_layer]
    yield (inputs, kwargs)


def call_stages(layer, names, x, kwargs) -> list[list[str]]:
    """``names`` in the order the layer's forward calls them, grouped into stages
    of the Linears that read one tensor (q/k/v; gate/up). True-sequential GPTQ
    quantizes a stage, then gathers the next stage's inputs through it, so that
    o_proj's and down_proj's Hessians describe what they will be fed."""
    modules = dict(layer.named_modules())
    stages: list[list[str]] = []
    seen: set[str] = set()
    last: list = [None]

    def make_hook(name):
        def hook(module, args):
            if name in seen:
                return  # called again (a shared module): its first call places it
            seen.add(name)
            if stages and args[0] is last[0]:
                stages[-1].append(name)
            else:
                stages.append([name])
            last[0] = args[0]

        return hook

    handles = [modules[n].register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        run_layer(layer, x, kwargs)
    finally:
        for h in handles:
            h.remove()
        last[0] = None
    unused = [n for n in names if n not in seen]  # never called: quantized last
    return stages + ([unused] if unused else [])


def gather_stats(layer, names, want_hessian, inputs, kwargs, tokens_total, stop_after=None,
                 dense_inputs=None):
    """Each of ``names``'s input statistics over ``inputs``. stop_after: a name whose
    input is the last one wanted; each forward stops there. ``dense_inputs`` (the
    dense model's own inputs to this layer, sample for sample; ``layer`` must hold
    its dense weights): also the cross statistics of each Linear's dense and
    quantized-stream inputs (``InputStats.cross``)."""
    modules = dict(layer.named_modules())
    stats: dict[str, InputStats] = {}
    owners: set[str] = set()
    last: list = [None, None]
    stride = max(1, tokens_total // ERROR_SAMPLES)
    cross = dense_inputs is not None
    dense_x: dict[str, torch.Tensor] = {}  # this sample's inputs in the dense model
    collecting_dense = [False]

    def make_hook(name):
        def hook(module, args):
            x = args[0]
            if collecting_dense[0]:
                dense_x.setdefault(name, x.detach())
            else:
                if name not in stats:
                    if x is last[0]:
                        stats[name] = last[1]
                    else:
                        stats[name] = InputStats(
                            module.in_features, x.device, want_hessian, ERROR_SAMPLES, stride,
                            want_cross=cross,
                        )
                        owners.add(name)
                if name in owners:
                    stats[name].add(x.detach(), dense_x.get(name))
                last[0], last[1] = x, stats[name]
            if name == stop_after:
                raise StopForward

        return hook

    if not want_hessian:  # only error samples wanted: a few evenly spread inputs suffice
        per = inputs[0].shape[-2] if inputs[0].dim() > 1 else 1
        k = min(len(inputs), max(1, -(-2 * ERROR_SAMPLES // per)))
        inputs = [inputs[round(i * (len(inputs) - 1) / max(1, k - 1))] for i in range(k)]
        stride = 2
    handles = [modules[n].register_forward_pre_hook(make_hook(n)) for n in names]
    try:
        for i, x in enumerate(inputs):
            if cross:  # the same token's inputs in the dense model, first
                dense_x.clear()
                collecting_dense[0] = True
                try:
                    run_layer(layer, dense_inputs[i], kwargs)
                except StopForward:
                    pass
                collecting_dense[0] = False
            try:
                run_layer(layer, x, kwargs)
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
        last[0] = None
        dense_x.clear()
    return stats
