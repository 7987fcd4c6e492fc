"""What a quantization will produce and cost, said before it runs.

``model_shapes(model)`` takes one look at a model (its decoder Linears, what
its other tensors take in a checkpoint, what the job will hold in memory) and
returns plain data; ``predict(shapes, config, plan, samples, tokens)`` is a
pure function of that data: bits per weight (the job's own formula, so the
figure is the one the job will report), the checkpoint's size, the memory the
job needs besides the model, and an estimated time.

The time is a model of the job's work (forwards over the calibration tokens,
Hessians, each method's per-weight and per-column work), scaled by this
machine's matrix-product speed measured when the model is looked at. Its
per-weight and per-column constants come from one measurement: GPTQ 4-bit g64
of the demo model on 4 x 64 calibration tokens took 44 s on an idle 2-core
machine; they and the forward efficiency were refitted to four jobs on the
2-core AVX2 machine CI runs on (``_FORWARD_EFFICIENCY``), which measures about
92 GFLOP/s. Other machines scale by their measured speed, not verified. It is an estimate: on a machine other
programs keep busy a job takes many times longer (``benchmarks/bench_ui.py``
prints predicted against measured); the page's time left during a run comes
from the layers actually done.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import GPTQConfig, HQQConfig, QuantConfig
from qdesk.core.quant.plans import Plan

# Calibration-free methods measure error on about this many tokens (steps.py).
_ERROR_TOKENS = 4 * 1024
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
                    "added_tokens.json")


@dataclass(frozen=True)
class LinearShape:
    name: str  # full module name
    out_features: int
    in_features: int
    stored_itemsize: int  # bytes per value when the checkpoint keeps it unquantized

    @property
    def numel(self) -> int:
        return self.out_features * self.in_features


@dataclass(frozen=True)
class ModelShapes:
    """What prediction needs to know about one model; plain data."""

    linears: tuple[LinearShape, ...]  # the decoder Linears, in the job's order
    layers: int
    hidden_size: int
    parameters: int
    scale_itemsize: int  # the checkpoint stores scales in the model's dtype
    other_bytes: int  # every other tensor as the checkpoint stores it
    other_tensors: int
    side_files_bytes: int  # tokenizer and configuration files copied beside the weights
    memory_base: tuple[int, int]  # job memory besides the model at 0 tokens: (no Hessian, Hessian)
    memory_per_token: tuple[int, int]
    dense_stream_per_token: int  # what a block tuner's dense activations add per token
    matmul_flops: float  # this machine's float32 matrix-product speed, flop/s

    def widths(self) -> dict[str, int]:
        return {lin.name: lin.in_features for lin in self.linears}

    def divisors(self, group_sizes) -> tuple[list[int], list[int]]:
        """(group sizes that divide every Linear's input width, those that do not)."""
        widths = {lin.in_features for lin in self.linears}
        good = [g for g in group_sizes if g == -1 or all(w % g == 0 for w in widths)]
        return good, [g for g in group_sizes if g not in good]


@dataclass(frozen=True)
class Prediction:
    bits_per_weight: float  # an upper bound (the budget) for the sensitivity plan
    exact: bool  # False: the sensitivity search decides the bits while it runs
    layers_quantized: int
    layers_kept: int
    weights_bytes: int  # model.safetensors
    output_bytes: int  # the whole checkpoint folder
    memory_bytes: int  # what the job holds besides the model
    seconds: float


def storage_bits(lin: LinearShape, config: QuantConfig | None) -> int:
    """Bits the job counts for one Linear (``QuantizedWeight.storage_bits``, 16 kept)."""
    if config is None:
        return lin.numel * 16
    groups = lin.out_features * (1 if config.group_size == -1 else lin.in_features // config.group_size)
    return lin.numel * config.bits + groups * (16 + zero_bits(config))


def zero_bits(config: QuantConfig) -> int:
    if config.symmetric:
        return 0
    return 16 if isinstance(config, HQQConfig) and config.zero == "float" else config.bits


def resolve_plan(shapes: ModelShapes, config: QuantConfig, plan: Plan) -> dict[str, QuantConfig | None]:
    """The config of every Linear, as the job resolves it (the sensitivity plan's
    base before its search). Raises BadInput for a group size that does not divide."""
    if plan.sensitivity:
        plan = replace(plan, sensitivity=False)
    return plan.resolve(shapes.widths(), config)


def bits_per_weight(shapes: ModelShapes, configs: dict[str, QuantConfig | None]) -> float:
    total = sum(storage_bits(lin, configs.get(lin.name)) for lin in shapes.linears)
    return total / max(1, sum(lin.numel for lin in shapes.linears))


def predict(shapes: ModelShapes, config: QuantConfig, plan: Plan, samples: int,
            tokens: int, self_check: bool = True) -> Prediction:
    """The outcome of ``quantize_steps`` with these settings (see the module doc);
    ``self_check``: the job runs its default held-out check (the app's always does)."""
    if samples < 1 or tokens < 1:
        raise BadInput(f"calibration needs at least 1 sample of 1 token, not {samples} x {tokens}")
    configs = resolve_plan(shapes, config, plan)
    bpw = bits_per_weight(shapes, configs)
    exact = not plan.sensitivity
    if plan.sensitivity:
        bpw = plan.budget_bpw if plan.budget_bpw is not None else bpw + 0.5
    quantized = [lin for lin in shapes.linears if configs.get(lin.name) is not None]
    if not quantized:
        raise BadInput(f"plan '{plan.name}' keeps every layer: nothing to quantize")
    hessian = any(_needs_hessian(configs[lin.name]) for lin in quantized)
    job_tokens = samples * tokens
    tuned = any(configs[lin.name].method == "signround" for lin in quantized)
    if not hessian and not tuned:  # the job keeps a few samples only to measure the error
        k = min(samples, max(1, math.ceil(_ERROR_TOKENS / tokens)))
        job_tokens = k * tokens
    weights = _weights_bytes(shapes, configs)
    recipe = 1500 + 260 * len(quantized) + 80 * (len(shapes.linears) - len(quantized))
    config_json = 2000 + 60 * len(shapes.linears)
    memory = shapes.memory_base[hessian] + shapes.memory_per_token[hessian] * job_tokens
    if any(getattr(configs[lin.name], "dense_targets", False) for lin in quantized):
        memory += shapes.dense_stream_per_token * job_tokens
    seconds = _seconds(shapes, configs, plan, job_tokens, tokens, self_check)
    return Prediction(
        bits_per_weight=bpw, exact=exact, layers_quantized=len(quantized),
        layers_kept=len(shapes.linears) - len(quantized), weights_bytes=weights,
        output_bytes=weights + shapes.side_files_bytes + recipe + config_json,
        memory_bytes=int(memory), seconds=seconds,
    )


def _needs_hessian(config: QuantConfig) -> bool:
    return config.method in ("gptq", "awq") or bool(getattr(config, "act_weighted", False))


def _weights_bytes(shapes: ModelShapes, configs: dict[str, QuantConfig | None]) -> int:
    """model.safetensors as ``checkpoint.compressed_state_dict`` writes it."""
    schemes = {(c.bits, c.group_size, c.symmetric, zero_bits(c))
               for c in configs.values() if c is not None}
    uniform = len(schemes) == 1
    data = shapes.other_bytes
    tensors = shapes.other_tensors
    for lin in shapes.linears:
        c = configs.get(lin.name)
        if c is None:
            data += lin.numel * lin.stored_itemsize
            tensors += 1
            continue
        groups = 1 if c.group_size == -1 else lin.in_features // c.group_size
        data += lin.out_features * groups * shapes.scale_itemsize
        naive = not c.symmetric and (not uniform or zero_bits(c) == 16)
        if naive:  # int8 codes unpacked, the zero in its own dtype
            zero_size = 2 if zero_bits(c) == 16 else 1
            data += lin.numel + lin.out_features * groups * zero_size
            tensors += 3
            continue
        data += lin.out_features * math.ceil(lin.in_features * c.bits / 32) * 4
        if not c.symmetric:
            data += math.ceil(lin.out_features * c.bits / 32) * groups * 4
        data += 16  # weight_shape, two int64
        tensors += 3 + (not c.symmetric)
    # The JSON header: about 110 bytes per tensor name and entry, padded to 8.
    return 8 + tensors * 110 + data


# The job's work, in seconds per unit on the 2-core machine the constants were
# measured on, with its matrix-product speed _REFERENCE_FLOPS (see module doc).
# 350e9 before: the speed of the machine the per-weight and per-column constants
# were first measured on; 92e9 is the 2-core AVX2 CI machine's, where the four
# jobs below were timed (with 350e9 their ratios were 0.45-0.97, with 92e9 0.78-1.06).
_REFERENCE_FLOPS = 92e9
# Layer forwards and Hessian products against the square product's speed.
# Measured on the 2-core AVX2 CPU (92 GFLOP/s by measure_matmul_flops), demo
# 4-bit g64, calibration forwards in float32: measured / predicted time was
# 0.78 (GPTQ 32 x 512), 1.06 (AWQ 32 x 512), 0.86 (SignRound 128 x 512) and 0.81
# (SignRound 16 x 256) with 1.0 here; the 1/3 used before (when the forwards ran
# in bfloat16) predicted 3-4x the measured times.
_FORWARD_EFFICIENCY = 1.0
_FORWARDS_PER_LAYER = 3.0  # statistics pass, error measurement, the pass to the next layer
_SECONDS_PER_COLUMN = {"gptq": 110e-6}  # GPTQ's column loop (Python per column)
_WEIGHT_PASSES = {"rtn": 12, "gptq": 14, "awq": 40, "hqq": 60}  # elementwise passes over W
_SECONDS_PER_WEIGHT_PASS = 0.9e-9
_SECONDS_PER_LINEAR = 0.004  # fixed cost: packing the codes, bookkeeping
_CHECK_TOKENS = 8 * 128  # the default self-check: SelfCheckSpec's windows x ctx


def _seconds(shapes: ModelShapes, configs, plan: Plan, job_tokens: int,
             sample_tokens: int = 512, self_check: bool = True) -> float:
    speed = shapes.matmul_flops / _REFERENCE_FLOPS if shapes.matmul_flops > 0 else 1.0
    decoder_params = sum(lin.numel for lin in shapes.linears)
    passes = _FORWARDS_PER_LAYER + (2 if plan.sensitivity else 0)
    flops = passes * 2 * decoder_params * job_tokens
    if self_check:
        # three whole-model forwards over the windows (the original, the result,
        # plain RTN), the output head on the scored half; embeddings and head are
        # most of the parameters outside the decoder Linears
        head = max(0, shapes.parameters - decoder_params)
        flops += 3 * 2 * _CHECK_TOKENS * (decoder_params + head / 2)
    seconds = 0.0
    seen_inputs = set()
    for lin in shapes.linears:
        c = configs.get(lin.name)
        if c is None:
            continue
        layer_input = (lin.name.rsplit(".", 1)[0], lin.in_features)
        if _needs_hessian(c) and layer_input not in seen_inputs:
            seen_inputs.add(layer_input)
            flops += 2 * job_tokens * lin.in_features ** 2
        if isinstance(c, GPTQConfig):
            flops += 2 * lin.out_features * lin.in_features ** 2 / max(1, c.block_size) * 8
            flops += lin.in_features ** 3 / 3 * 3  # damped Cholesky and its inverse
            seconds += lin.in_features * _SECONDS_PER_COLUMN["gptq"] * (
                1 + lin.out_features / 4096)
            if c.dense_targets:
                # the dense model's stream through the layer, and the cross term
                # between its inputs and the quantized stream's (measured: 1.94x
                # the job's time on the demo)
                flops += 2 * lin.numel * job_tokens + 2 * job_tokens * lin.in_features ** 2
            if c.true_sequential:
                # the stages' own forwards, each stopping at its stage: in a Llama
                # layer q/k/v run in three of them, o in two, gate/up in one
                flops += 2 * lin.numel * job_tokens
        seconds += _WEIGHT_PASSES.get(c.method, 20) * lin.numel * _SECONDS_PER_WEIGHT_PASS
        seconds += _SECONDS_PER_LINEAR
        if c.method == "signround":
            # Every iteration: a forward and a backward (about twice a forward) of a
            # mini-batch through the block, and about 30 elementwise passes over W.
            flops += c.iters * 3 * 2 * lin.numel * c.batch_size * sample_tokens
            seconds += c.iters * 30 * lin.numel * _SECONDS_PER_WEIGHT_PASS
    seconds += flops / (_FORWARD_EFFICIENCY * _REFERENCE_FLOPS)
    return seconds / speed + 1.0


def measure_matmul_flops() -> float:
    """float32 matrix-product speed of this machine (flop/s), about 50 ms to measure."""
    import torch

    a = torch.randn(256, 1024)
    b = torch.randn(1024, 1024)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * 256 * 1024 * 1024 / best


def model_shapes(model, source_path: str | None = None) -> ModelShapes:
    """One look at a model (a LoadedModel or a transformers causal LM): no copies
    of its weights, a fraction of a second on the demo model."""
    import torch

    from qdesk.core.quant.checkpoint import compact
    from qdesk.core.quant.layerwalk import decoder_layers, fast_compute_dtype, linear_widths
    from qdesk.core.quant.steps import job_memory_bytes

    if hasattr(model, "facts") and hasattr(model, "model"):
        source_path = source_path or model.facts.path
        model = model.model
    if model is None:
        raise BadInput("this model has no torch module to quantize (use the transformers backend)")
    widths = linear_widths(model)
    layers = decoder_layers(model)
    linears = []
    with torch.no_grad():
        for name in widths:
            w = model.get_submodule(name).weight
            linears.append(LinearShape(name, int(w.shape[0]), int(w.shape[1]),
                                       compact(w.detach()).element_size()))
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        linear_weights = {f"{n}.weight" for n in widths}
        other_bytes = other_tensors = 0
        for key, value in model.state_dict().items():
            if key in linear_weights or (tied and key == "lm_head.weight"):
                continue
            other_bytes += value.numel() * compact(value.detach()).element_size()
            other_tensors += 1
    param = next(model.parameters())
    device = param.device
    dtype = fast_compute_dtype(param.dtype, device)

    def memory(tokens: int, hessian: bool, dense_stream: bool = False) -> int:
        ids = torch.empty(1, tokens, dtype=torch.int64, device="meta")
        return job_memory_bytes(model, layers, ids, dtype, hessian, dense_stream=dense_stream)

    base = (memory(0, False), memory(0, True))
    per_token = (memory(1, False) - base[0], memory(1, True) - base[1])
    side = 0
    if source_path:
        folder = Path(source_path)
        for name in _TOKENIZER_FILES + ("generation_config.json",):
            f = folder / name
            if f.is_file():
                side += f.stat().st_size
    return ModelShapes(
        linears=tuple(linears),
        layers=len(layers),
        hidden_size=int(getattr(model.config, "hidden_size", 0) or 0),
        parameters=sum(p.numel() for p in model.parameters()),
        scale_itemsize=param.element_size(),
        other_bytes=other_bytes,
        other_tensors=other_tensors,
        side_files_bytes=side,
        memory_base=base,
        memory_per_token=per_token,
        dense_stream_per_token=memory(1, False, True) - memory(1, False),
        matmul_flops=measure_matmul_flops(),
    )
