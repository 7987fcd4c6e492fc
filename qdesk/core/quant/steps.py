"""The quantization job: a generator of events, layer by layer.

1. Embed the calibration samples once and capture the inputs of decoder layer 0.
2. For each decoder layer: run it on the current inputs with hooks that gather
   each Linear's input statistics; let the method prepare the layer (AWQ scales);
   quantize its Linears (one event each); run the now-quantized layer to get the
   inputs of the next layer. Peak memory: one layer's statistics plus activations.
   GPTQ with ``true_sequential`` does this per stage of the layer instead: statistics
   of q/k/v, quantize them, then o_proj's statistics through them, and so on.
3. After the last layer: the self-check (``selfcheck``) scores the quantized
   model against the original on held-out text (the original's logits were
   taken before step 1) and against plain RTN of the same format.
4. Only at the end: write the checkpoint (temporary folder, renamed), then the
   summary event. Closing the generator at any yield (cancel) restores the layers
   already changed and writes nothing.

Layouts differ between families; what the job needs of one lives in
``layouts`` (AWQ's scale groups, the refusal of fused experts), and every
layout-dependent step is checked as it runs (AWQ's fold, layer by layer).

The model is modified in place: afterwards it is qdesk's in-memory quantized
model (each quantized weight replaced by its dequantized value).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.quant.awq import FOLD_TOLERANCE, fold_change
from qdesk.core.quant.configs import AWQConfig, QuantConfig
from qdesk.core.quant.events import (
    LayerKept,
    LayerQuantized,
    QuantizeSummary,
    SavingCheckpoint,
    SelfCheck,
)
from qdesk.core.quant.layerwalk import (
    ERROR_SAMPLES,
    call_stages,
    capture_inputs,
    cast_kwargs,
    decoder_layers,
    fast_compute_dtype,
    gather_stats,
    layer_prefix,
    linear_widths,
    run_layer,
    working_copy,
)
from qdesk.core.quant.layouts import awq_family, family_of, refuse_fused_experts
from qdesk.core.quant.methods import method_for
from qdesk.core.quant.plans import Plan
from qdesk.core.quant.primitives import QuantizedWeight
from qdesk.core.quant.selfcheck import (
    RTNBaseline,
    SelfCheckSpec,
    check_memory_bytes,
    check_windows,
    finish_steps,
    reference_steps,
)
from qdesk.core.quant.stats import relative_output_error
from qdesk.core.threads import compute_stream

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


DEFAULT_CHECK = SelfCheckSpec()


@torch.no_grad()
def quantize_steps(model, config: QuantConfig, plan: Plan | None = None, calibration=None,
                   **options) -> Iterator:
    """Quantize ``model`` (a LoadedModel or a transformers causal LM) in place.

    calibration: a ``CalibrationSet`` (``input_ids`` (n, T) long). Yields
    ``CalibrationProgress``, ``LayerQuantized``/``LayerKept`` per Linear, the
    ``SelfCheck`` (when ``check`` is set and a tokenizer is at hand),
    ``SavingCheckpoint`` when ``output_dir`` is given, then ``QuantizeSummary``;
    returns a ``QuantizeResult``.

    A LoadedModel whose dense weights were dequantized from a quantized file (a
    GGUF's dense copy: ``facts.derived_from_quantized``) is refused unless
    ``from_quantized``: the result would carry two roundings. The demo is the
    exception, its dense copy being the project's reference. Either way the
    source's quantization is recorded (``source_quantization`` names it when the
    facts do not) in the summary and the recipe. Options: see ``_quantize_steps``.

    While it runs the job is one compute stream (``qdesk.core.threads``): a chat
    beside it shares the cores with it, even while a layer's tuning runs long.
    """
    with compute_stream():
        return (yield from _quantize_steps(model, config, plan, calibration, **options))


def _quantize_steps(
    model,
    config: QuantConfig,
    plan: Plan | None = None,
    calibration=None,
    *,
    output_dir: str | Path | None = None,
    force: bool = False,
    tokenizer=None,
    source: str = "",
    check: SelfCheckSpec | None = DEFAULT_CHECK,
    from_quantized: bool = False,
    source_quantization: str | None = None,
) -> Iterator:
    t_start = time.perf_counter()
    if hasattr(model, "facts") and hasattr(model, "model"):
        tokenizer = tokenizer or model.hf_tokenizer
        source = source or model.facts.path
        if model.facts.quantization:
            raise BadInput(f"{model.facts.name} is already quantized; quantize the original model")
        derived = getattr(model.facts, "derived_from_quantized", None)
        if derived and not from_quantized and model.facts.source != "demo":
            raise BadInput(
                f"{model.facts.name} was dequantized from a {derived}: quantizing it again "
                "starts from quantized weights; ask for it explicitly (qdesk quantize "
                "--from-quantized) or quantize the original model"
            )
        source_quantization = derived or source_quantization
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
    refuse_fused_experts(model, layers)
    prefix = layer_prefix(model, layers)
    widths = linear_widths(model)
    if not widths:
        raise BadInput(
            f"{type(model).__name__}: its decoder layers hold no Linear layers (GPT-2 keeps "
            "its weights in Conv1D modules): qdesk quantizes Linear layers only"
        )
    numels = {n: model.get_submodule(n).weight.numel() for n in widths}
    device = next(model.parameters()).device
    input_ids = calibration.input_ids
    tokens_total = int(input_ids.numel())
    dtype = fast_compute_dtype(next(model.parameters()).dtype, device)
    # AWQ needs its family's description: refuse before any work when there is none.
    family = awq_family(model) if isinstance(config, AWQConfig) or any(
        r.method == "awq" for r in plan.rules) else family_of(model)

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
    if not any(method_for(configs[n]).uses_calibration for n in todo):
        # Calibration-free methods use the samples only to measure output error:
        # a few evenly spread samples (about 4 x ERROR_SAMPLES tokens) suffice.
        k = min(len(input_ids), max(1, -(-4 * ERROR_SAMPLES // input_ids.shape[1])))
        input_ids = input_ids[torch.linspace(0, len(input_ids) - 1, k).round().long()]
        tokens_total = int(input_ids.numel())

    if tokenizer is None and check is not None:
        log.info("no tokenizer: the self-check on held-out text is skipped")
        check = None
    dense_stream = any(getattr(configs[n], "dense_targets", False) for n in todo)
    _check_memory(model, layers, input_ids, dtype, device,
                  any(method_for(configs[n]).needs_hessian for n in todo), check, dense_stream)
    originals: dict[int, dict] = {}
    result = QuantizeResult(configs=configs)
    index = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        if check is not None:  # the original's logits, before any layer changes
            t_check = time.perf_counter()
            windows = check_windows(tokenizer, check, _max_positions(model))
            base = yield from reference_steps(model, windows, _vocab(model))
            t_check = time.perf_counter() - t_check
        captured = None
        for item in capture_inputs(model, layers, input_ids, device, dtype):
            if isinstance(item, tuple):
                captured = item
            else:
                yield item
        inputs, kwargs = captured  # kwargs: one dict per layer
        # Block tuners that aim at the dense model's own activations need them
        # carried alongside the quantized stream (SignRoundConfig.dense_targets).
        dense_inputs = list(inputs) if dense_stream else None
        for li, layer in enumerate(layers):
            dense_out = None
            if dense_inputs is not None:  # before any of this layer's weights change
                work = working_copy(layer, dtype)
                dense_out = [run_layer(work, x, kwargs[li]) for x in dense_inputs]
                del work
            local = {n[len(f"{prefix}.{li}."):]: c for n, c in configs.items()
                     if n.startswith(f"{prefix}.{li}.")}
            names = [n for n, c in local.items() if c is not None]
            for n, c in local.items():
                if c is None:
                    yield LayerKept(f"{prefix}.{li}.{n}", "kept by the plan")
            if not names:
                work = working_copy(layer, dtype)
                inputs = [run_layer(work, x, kwargs[li]) for x in inputs]
                dense_inputs = dense_out
                continue
            originals[li] = {k: v.detach().to("cpu", copy=True) for k, v in layer.state_dict().items()}
            want_h = any(method_for(local[n]).needs_hessian for n in names)
            sequential = want_h and all(getattr(local[n], "true_sequential", False) for n in names)
            stages = (call_stages(working_copy(layer, dtype), names, inputs[0], kwargs[li])
                      if sequential else [names])
            for stage in stages:
                t0 = time.perf_counter()
                # GPTQ aimed at the dense model's outputs pairs each token's
                # inputs in both streams (GPTQConfig.dense_targets).
                pair = want_h and not sequential and dense_inputs is not None and any(
                    getattr(local[n], "dense_targets", False) and method_for(local[n]).needs_hessian
                    for n in stage)
                stats = gather_stats(working_copy(layer, dtype), stage, want_h, inputs,
                                     kwargs[li], tokens_total,
                                     stop_after=stage[-1] if sequential else None,
                                     dense_inputs=dense_inputs if pair else None)
                preparers = {method_for(local[n]).prepare_layer for n in stage} - {None}
                if preparers:
                    _prepare_checked(layer, preparers, local, stats, family, inputs[0],
                                     kwargs[li], f"{prefix}.{li}")
                tuned = {}
                tuners = {method_for(local[n]).tune_block for n in stage} - {None}
                for tune in tuners:  # whole-block methods (SignRound), on the dense layer
                    part = {n: local[n] for n in stage if method_for(local[n]).tune_block is tune}
                    aim = dense_out if any(getattr(c, "dense_targets", False)
                                           for c in part.values()) else None
                    tuned.update((yield from tune(layer, part, inputs, kwargs[li], dtype, li,
                                                  len(layers), targets=aim)))
                shared = (time.perf_counter() - t0) / len(stage)
                modules = dict(layer.named_modules())
                for n in stage:
                    t1 = time.perf_counter()
                    lin, cfg = modules[n], local[n]
                    w = lin.weight.data
                    qw = tuned[n] if n in tuned else method_for(cfg).quantize(w, cfg, stats[n])
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
            inputs = [run_layer(work, x, kwargs[li]) for x in inputs]
            dense_inputs = dense_out
            del work
        del inputs, dense_inputs
        self_check = None
        if check is not None:
            all_rtn = all(configs[n].method == "rtn" for n in todo)
            baseline = None if all_rtn else RTNBaseline(layers, prefix, originals, result.records)
            for item in finish_steps(model, windows, base, check, baseline, t_check):
                if isinstance(item, SelfCheck):
                    self_check = item
                yield item
            del base
        peak = _peak_memory(device)
        bpw = bits_per_weight(configs, result.records, numels)
        recipe = _recipe(config, plan, calibration, result, bpw, source,
                         time.perf_counter() - t_start, sum(p.numel() for p in model.parameters()),
                         self_check, source_quantization, family)
        if output_dir is not None:
            from qdesk.core.quant.checkpoint import write_checkpoint

            yield SavingCheckpoint(str(output_dir))
            write_checkpoint(model, tokenizer, result.records, Path(output_dir), recipe, force)
    except (torch.OutOfMemoryError, MemoryError):
        _restore(layers, originals)
        need = job_memory_bytes(model, layers, input_ids, dtype, True, check, dense_stream)
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
        check=self_check,
        source_quantization=source_quantization,
    )
    yield result.summary
    return result


def _prepare_checked(layer, preparers, local, stats, family, probe, kwargs, where: str) -> None:
    """Run the methods' layer preparation (AWQ's scale folding) and check that it
    left the float layer's output unchanged on one calibration sample: a fold
    into the wrong op, or the wrong way, changes it by tens of percent."""
    def float_output(module):
        ref = copy.deepcopy(module).float()
        return run_layer(ref, probe.float(), cast_kwargs(kwargs, torch.float32))

    before = float_output(layer)
    for prepare in preparers:
        prepare(layer, local, stats, family)
    change = fold_change(before, float_output(layer), probe.float())
    log.debug("%s: the fold changed the float output by %.2e", where, change)
    if not change <= FOLD_TOLERANCE:
        name = family.name if family is not None else "unknown"
        raise BadInput(
            f"AWQ's scale folding changed {where}'s float output by {100 * change:.1f}% before "
            f"any rounding (at most {100 * FOLD_TOLERANCE:g}% is rounding): the {name} family's "
            "description does not fit this model; nothing was written (use gptq, rtn or hqq)"
        )


def _max_positions(model) -> int:
    config = model.config
    text = getattr(config, "text_config", None)
    for c in (config, text):
        n = getattr(c, "max_position_embeddings", None) if c is not None else None
        if isinstance(n, int) and n > 0:
            return n
    return 4096


def _vocab(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(getattr(model.config, "vocab_size", 0) or 0)


def job_memory_parts(model, layers, input_ids, dtype, hessian: bool,
                     check: SelfCheckSpec | None = None,
                     dense_stream: bool = False) -> tuple[int, int]:
    """About what the job holds besides the model, as (bytes on the model's
    device, bytes on the CPU).

    Device: two sets of decoder-layer activations (n x T x hidden in the compute
    dtype; four with ``dense_stream``: the dense model's own and a block tuner's
    targets), one layer's working copy, Hessians (one per Linear at most, in x in
    float32, and GPTQ's inverse of the widest), the self-check's forward logits
    (ctx/2 x vocab float32, twice: 4 GB at a 256k vocabulary and ctx 2048, which
    is why the check's windows are short). CPU: the original weights kept for
    cancel and the RTN baseline, the int8 codes, the self-check's reference logits.
    """
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    hidden = (int(embeddings.weight.shape[1]) if embeddings is not None
              else int(getattr(model.config, "hidden_size", 0) or 0))
    itemsize = torch.empty((), dtype=dtype).element_size()
    acts = (4 if dense_stream else 2) * input_ids.numel() * hidden * itemsize
    layer = layers[0]
    widths = [m.in_features for m in layer.modules() if isinstance(m, nn.Linear)]
    hess = (sum(w * w * 4 for w in widths) + 2 * max(widths, default=0) ** 2 * 4) if hessian else 0
    per_layer = sum(p.numel() for p in layer.parameters())
    elsize = next(layer.parameters()).element_size()
    vocab = _vocab(model)
    check_bytes = check_memory_bytes(check, vocab)
    logits_on_device = 0 if check is None else check_memory_bytes(check, vocab) - (
        4 * vocab * check.windows * check.scored)  # one scoring batch's logits, twice
    device_bytes = acts + hess + 3 * per_layer * 4 + logits_on_device
    cpu_bytes = len(layers) * per_layer * (elsize + 1) + check_bytes - logits_on_device
    return int(device_bytes), int(cpu_bytes)


def job_memory_bytes(model, layers, input_ids, dtype, hessian: bool,
                     check: SelfCheckSpec | None = None, dense_stream: bool = False) -> int:
    """What ``job_memory_parts`` counts, on one machine (a CPU job holds both)."""
    return sum(job_memory_parts(model, layers, input_ids, dtype, hessian, check, dense_stream))


def _check_memory(model, layers, input_ids, dtype, device, hessian: bool,
                  check: SelfCheckSpec | None, dense_stream: bool = False) -> None:
    from qdesk.core.models import available_memory_bytes

    on_device, on_cpu = job_memory_parts(model, layers, input_ids, dtype, hessian, check,
                                         dense_stream)
    needs = {"cpu": on_device + on_cpu} if device.type == "cpu" else {device.type: on_device,
                                                                       "cpu": on_cpu}
    for kind, need in needs.items():
        have = available_memory_bytes(kind)
        if need > have:
            raise OutOfResources(
                f"quantizing needs about {need / 2**30:.1f} GiB of {kind} memory besides "
                f"the model and {have / 2**30:.1f} GiB is free (use fewer calibration samples "
                "or tokens)"
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
            parameters: int, check: SelfCheck | None, source_quantization: str | None,
            family) -> dict:
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
        "family": None if family is None else family.name,
        "source_quantization": source_quantization,
        "self_check": None if check is None else asdict(check),
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
