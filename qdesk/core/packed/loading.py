"""Loading a compressed-tensors checkpoint with its Linear weights kept packed.

``AutoModelForCausalLM.from_pretrained`` (with compressed-tensors installed)
dequantizes every quantized weight to a dense one. This loader builds the
model's skeleton on the meta device, puts a ``QuantLinear`` where the
checkpoint holds a quantized Linear, and loads every other tensor as
transformers would (in the model's dtype, tied weights tied, non-persistent
buffers such as rotary frequencies computed by transformers' own init).

Two steps, so that ``_open_hf`` can check memory in between:
``plan_packed_load`` reads only headers and config (cheap; returns None where
this loader does not apply, and says why in the log), then ``PackedPlan.load``
reads the tensors. What it takes: ``quant_method`` compressed-tensors, formats
``pack-quantized`` (``weight_packed`` int32 codes packed along the input,
``weight_scale``, ``weight_shape``, ``weight_zero_point`` packed along the
output) and ``naive-quantized`` (``weight`` int8 codes, zero points unpacked,
integer or ``zp_dtype`` float); integer weights of 2-8 bits, strategies
channel / group / tensor; no activation quantization, no act-order index, no
sparsity. The checkpoint's keys must line up with the skeleton exactly; any
doubt returns None and the caller loads densely as before.

A float32 model on qdesk's CPU kernels keeps its 16-bit embedding and output
head in 16 bits (``native_kernels.use_sixteen_bit_products``: a fifth of the
demo's weights, read every token) and stacks sibling Linears into one kernel
call (``fusion.fuse_siblings``); ``facts()`` says what was done.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qdesk.core.models.device import DecodeShape, Placement
from qdesk.core.packed import native
from qdesk.core.packed.fusion import fuse_siblings
from qdesk.core.packed.native_kernels import sixteen_bit_keys, use_sixteen_bit_products
from qdesk.core.packed.placement import packed_placement
from qdesk.core.packed.quant_linear import QuantLinear
from qdesk.core.quant.packing import packed_words, unpack_int32
from qdesk.core.quant.primitives import QuantizedWeight

log = logging.getLogger(__name__)

FORMATS = ("pack-quantized", "naive-quantized")
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


@dataclass(frozen=True)
class LinearSpec:
    """One quantized Linear as the checkpoint stores it (from headers only)."""

    name: str
    format: str  # pack-quantized | naive-quantized
    bits: int
    group_size: int  # -1 per channel
    symmetric: bool
    out_features: int
    in_features: int
    has_bias: bool


@dataclass
class PackedPlan:
    """What ``load`` will build: where and in which dtype (``placement``, chosen
    by ``packed_placement``), and ``memory_bytes``, its weights' resident size."""

    path: Path
    files: list[Path]
    config: object  # transformers PretrainedConfig
    placement: Placement
    specs: dict[str, LinearSpec]
    dense_keys: list[str]
    dense_numels: dict[str, tuple[int, bool]]  # key -> (numel, floating)
    kernels: Counter = field(default_factory=Counter)
    sixteen_bit: tuple[str, ...] = ()  # what load kept in 16 bits (Dense16Linear, embeddings)
    sixteen_bit_keys: set[str] = field(default_factory=set)  # what it may keep (16-bit on disk)
    stacked: int = 0  # sets of sibling Linears stacked into one kernel call (fusion)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.placement.dtype)

    @property
    def device(self) -> str:
        return self.placement.device

    @property
    def memory_bytes(self) -> int:
        """Resident bytes after loading: codes at 4 bits for 2-4-bit layers, 8
        otherwise, their scales and constants, the rest in dtype (16-bit
        embedding and head weights stay 16-bit in a float32 model on qdesk's
        kernels: ``sixteen_bit_keys``)."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        total = 0
        for s in self.specs.values():
            groups = 1 if s.group_size == -1 else s.in_features // s.group_size
            total += s.out_features * s.in_features * (4 if s.bits <= 4 else 8) // 8
            total += s.out_features * groups * (2 * itemsize + 8)
        keep16 = self.sixteen_bit_keys if self._native_float32() else set()
        for key, (numel, floating) in self.dense_numels.items():
            size = 2 if key in keep16 else itemsize if floating else 8
            total += numel * size
        return total

    def _native_float32(self) -> bool:
        from qdesk.core.packed import native

        return self.dtype == torch.float32 and self.device == "cpu" and native.library() is not None

    def dominant_format(self) -> tuple[int, int]:
        """(bits, group_size) holding the most weights."""
        weight = Counter()
        for s in self.specs.values():
            weight[(s.bits, s.group_size)] += s.out_features * s.in_features
        return weight.most_common(1)[0][0]

    def load(self):
        """The model in eval mode, every quantized Linear a ``QuantLinear``."""
        return _load(self)

    def facts(self) -> dict:
        """For ``ModelFacts.quantization``: how the weights run."""
        # qdesk's CPU kernel names its build (avx512, avx2, portable): what one
        # machine's speed figures can be compared with
        kinds = ", ".join(f"{n} {k} {native.simd()}" if k == "native" else f"{n} {k}"
                          for k, n in sorted(self.kernels.items()))
        if self.stacked:
            kinds += f"; {self.stacked} sibling sets stacked"
        if self.sixteen_bit:
            kinds += f"; {', '.join(self.sixteen_bit)} 16-bit"
        return {"runtime": f"packed ({kinds or 'no layers'})", "packed_layers": len(self.specs)}


def _parse_scheme(weights) -> tuple[int, int, bool] | str:
    """(bits, group_size, symmetric) of a config group's ``weights`` (compressed-tensors'
    QuantizationArgs as JSON), or why this loader does not take it."""
    if not isinstance(weights, dict):
        return "a scheme without weights"
    if weights.get("type", "int") != "int":
        return f"{weights.get('type')} weights"
    bits = weights.get("num_bits")
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        return f"{bits}-bit weights"
    if weights.get("dynamic") or weights.get("actorder") or weights.get("block_structure"):
        return "dynamic, act-order or block quantization"
    strategy, group = weights.get("strategy"), weights.get("group_size")
    if strategy == "group" and isinstance(group, int) and group > 0:
        pass
    elif strategy in ("channel", "tensor"):
        group = -1
    else:
        return f"strategy {strategy}"
    return bits, group, bool(weights.get("symmetric", True))


def _matches(name: str, module: nn.Module, target: str) -> bool:
    """compressed-tensors' rule: "re:" a regex matched at the start of the module
    name, else the exact name or the name of one of the module's classes."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or any(c.__name__ == target for c in type(module).__mro__)


def _config_groups(quant: dict) -> list[tuple[list[str], str, tuple[int, int, bool]]]:
    """(targets, format, (bits, group, symmetric)) per config group.

    Parsed here rather than with compressed-tensors' pydantic models: importing
    compressed_tensors pulls in torch._dynamo and torch.distributed (measured
    1.6 s and 185 MiB of resident memory on the demo's machine)."""
    groups = quant.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise _Unsupported("no config groups")
    out = []
    for name, group in groups.items():
        if not isinstance(group, dict):
            raise _Unsupported(f"config group {name} is not a table")
        if group.get("input_activations") or group.get("output_activations"):
            raise _Unsupported(f"config group {name} quantizes activations")
        fmt = group.get("format") or quant.get("format")
        if fmt not in FORMATS:
            raise _Unsupported(f"format {fmt}")
        parsed = _parse_scheme(group.get("weights"))
        if isinstance(parsed, str):
            raise _Unsupported(f"config group {name}: {parsed}")
        targets = group.get("targets")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise _Unsupported(f"config group {name} has no target list")
        out.append((targets, fmt, parsed))
    return out


def _skeleton(config, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    from qdesk.core.models.dense_folder import no_weight_init

    with torch.device("meta"), no_weight_init():
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def plan_packed_load(
    path: Path, files: list[Path], records: dict[str, dict], raw_config: dict, config,
    shape: DecodeShape, dtype: str | None = None,
) -> PackedPlan | None:
    """A plan to load ``path`` packed, or None (logged why) to load it densely.

    records: the validated safetensors header records of all ``files``;
    shape: the model's decode-step products; dtype: the user's choice, if any."""
    reason = _unsupported(raw_config.get("quantization_config") or {})
    if reason is None:
        try:
            plan = _plan(path, files, records, raw_config, config)
        except _Unsupported as e:
            reason = str(e)
        except Exception as e:  # a skeleton transformers cannot build on meta, ...
            log.warning("%s: cannot plan a packed load", path, exc_info=True)
            reason = f"{type(e).__name__}: {e}"
        else:
            bits, group = plan.dominant_format()
            plan.placement = packed_placement(shape, bits, group, dtype)
            return plan
    log.info("%s: loading dequantized (%s)", path, reason)
    return None


class _Unsupported(Exception):
    pass


def _unsupported(quant: dict) -> str | None:
    if quant.get("quant_method") != "compressed-tensors":
        return f"quantization method {quant.get('quant_method')!r}"
    if quant.get("sparsity_config"):
        return "a sparse checkpoint"
    return None


def _plan(path, files, records, raw_config, config) -> PackedPlan:
    quant = raw_config["quantization_config"]
    schemes = _config_groups(quant)
    ignore = quant.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
        raise _Unsupported("the ignore list is not a list of names")
    skeleton = _skeleton(config, torch.float32)
    specs: dict[str, LinearSpec] = {}
    for name, module in skeleton.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        for targets, fmt, (bits, group, symmetric) in schemes:
            if any(_matches(name, module, t) for t in targets) and not any(
                _matches(name, module, t) for t in ignore
            ):
                specs[name] = _spec(name, module, fmt, bits, group, symmetric, records)
                break
    if not specs:
        raise _Unsupported("no Linear layer matches the quantization config")
    owned = {f"{n}.{leaf}" for n in specs for leaf in
             ("weight", "weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "bias")}
    dense_keys = [k for k in records if k not in owned]
    expected = dict(skeleton.state_dict(keep_vars=True))
    expected = {k: v for k, v in expected.items() if k.rpartition(".")[0] not in specs}
    stray = [k for k in dense_keys if k not in expected]
    if stray:
        raise _Unsupported(f"tensors the model does not have ({stray[0]}, ...)")
    tied = _tied_keys(skeleton)
    missing = [k for k in expected if k not in records and k not in tied
               and not _non_persistent(skeleton, k)]
    if missing:
        raise _Unsupported(f"tensors missing from the checkpoint ({missing[0]}, ...)")
    numels = {k: (expected[k].numel(), expected[k].is_floating_point()) for k in dense_keys}
    plan = PackedPlan(Path(path), list(files), config, None, specs, dense_keys, numels)
    plan.sixteen_bit_keys = {k for k in sixteen_bit_keys(skeleton, specs)
                             if k in records and records[k]["dtype"] in ("BF16", "F16")}
    return plan


def _spec(name, module, fmt, bits, group, symmetric, records) -> LinearSpec:
    out_f, in_f = module.out_features, module.in_features
    scale = records.get(f"{name}.weight_scale")
    if scale is None or scale["dtype"] not in _DTYPES:
        raise _Unsupported(f"{name}: no float weight_scale")
    if group == -1 and scale["shape"] in ([1], [1, 1]):
        pass  # one scale for the whole tensor
    elif group == -1:
        if scale["shape"] not in ([out_f, 1], [out_f]):
            raise _Unsupported(f"{name}: weight_scale {scale['shape']} is not per channel")
    elif in_f % group or scale["shape"] != [out_f, in_f // group]:
        raise _Unsupported(f"{name}: weight_scale {scale['shape']} does not fit groups of {group}")
    zp = records.get(f"{name}.weight_zero_point")
    if fmt == "pack-quantized":
        packed = records.get(f"{name}.weight_packed")
        shape = records.get(f"{name}.weight_shape")
        if packed is None or packed["dtype"] != "I32" or shape is None:
            raise _Unsupported(f"{name}: pack-quantized without int32 weight_packed/weight_shape")
        if packed["shape"] != [out_f, packed_words(in_f, bits)]:
            raise _Unsupported(f"{name}: weight_packed {packed['shape']} is not {bits}-bit ({out_f}, {in_f})")
        if zp is not None and zp["dtype"] != "I32":
            raise _Unsupported(f"{name}: a packed zero point that is not int32")
    else:
        weight = records.get(f"{name}.weight")
        if weight is None or weight["dtype"] != "I8" or weight["shape"] != [out_f, in_f]:
            raise _Unsupported(f"{name}: naive-quantized without int8 codes ({out_f}, {in_f})")
        if zp is not None and zp["dtype"] not in ("I8", *_DTYPES):
            raise _Unsupported(f"{name}: zero point of dtype {zp['dtype']}")
    if f"{name}.weight_g_idx" in records:
        raise _Unsupported(f"{name}: act-order index (weight_g_idx)")
    has_bias = module.bias is not None
    if has_bias != (f"{name}.bias" in records):
        raise _Unsupported(f"{name}: bias in the model and in the checkpoint disagree")
    return LinearSpec(name, fmt, bits, group, symmetric and zp is None, out_f, in_f, has_bias)


def _tied_keys(model) -> set[str]:
    keys = getattr(model, "all_tied_weights_keys", None)
    if isinstance(keys, dict):
        return set(keys)
    if getattr(model.config, "tie_word_embeddings", False):
        return {"lm_head.weight"}
    return set()


def _non_persistent(model, key: str) -> bool:
    module, _, leaf = key.rpartition(".")
    owner = model.get_submodule(module) if module else model
    return leaf in getattr(owner, "_non_persistent_buffers_set", set())


def _quantized_weight(spec: LinearSpec, get) -> QuantizedWeight:
    n, k = spec.out_features, spec.in_features
    scale = get(f"{spec.name}.weight_scale")
    # one scale for the whole tensor ("tensor" strategy) is one per row, repeated
    scale = scale.reshape(1, 1).expand(n, 1) if scale.numel() == 1 else scale.reshape(n, -1)
    zero = None
    if spec.format == "pack-quantized":
        shape = [int(d) for d in get(f"{spec.name}.weight_shape").tolist()]
        if shape != [n, k]:
            raise ValueError(f"{spec.name}: weight_shape {shape} is not ({n}, {k})")
        q = unpack_int32(get(f"{spec.name}.weight_packed"), spec.bits, k)
        if get.has(f"{spec.name}.weight_zero_point"):
            zero = unpack_int32(get(f"{spec.name}.weight_zero_point"), spec.bits, n, packed_dim=0)
    else:
        q = get(f"{spec.name}.weight")
        if get.has(f"{spec.name}.weight_zero_point"):
            zero = get(f"{spec.name}.weight_zero_point").reshape(n, -1)
    lo, hi = -(1 << (spec.bits - 1)), (1 << (spec.bits - 1)) - 1
    if int(q.min()) < lo or int(q.max()) > hi:
        raise ValueError(f"{spec.name}: codes outside the {spec.bits}-bit range")
    if zero is not None and not zero.is_floating_point():
        zero = zero.to(torch.int8)
        if not bool(zero.any()):
            zero = None  # a symmetric checkpoint that stores zero points anyway
    if zero is not None and zero.shape != scale.shape:
        zero = zero.expand_as(scale)
    return QuantizedWeight(q.contiguous(), scale.contiguous(),
                           None if zero is None else zero.contiguous(), spec.bits, spec.group_size)


class _Reader:
    """Tensors by key across the checkpoint's files (safetensors, no pickle)."""

    def __init__(self, files: list[Path]) -> None:
        from safetensors import safe_open

        self.handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]
        self.where = {k: h for h in self.handles for k in h.keys()}

    def __call__(self, key: str) -> torch.Tensor:
        return self.where[key].get_tensor(key)

    def has(self, key: str) -> bool:
        return key in self.where



def _load(plan: PackedPlan):
    from transformers import GenerationConfig

    model = _skeleton(plan.config, plan.dtype)
    get = _Reader(plan.files)
    device = torch.device(plan.device)
    kernels: Counter = Counter()
    for name, spec in plan.specs.items():
        qw = _quantized_weight(spec, get)
        bias = get(f"{name}.bias") if spec.has_bias else None
        layer = QuantLinear(qw, bias, plan.dtype, device)
        kernels[layer.kernel] += 1
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    expected = model.state_dict(keep_vars=True)
    keep16 = _keeps_16bit(model, plan)
    state = {}
    for key in plan.dense_keys:
        t = get(key)
        want = expected[key]
        keep = key in keep16 and t.dtype in (torch.bfloat16, torch.float16)
        state[key] = t.to(device, want.dtype if t.is_floating_point() and not keep else t.dtype)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if keep16:
        plan.sixteen_bit = use_sixteen_bit_products(model)
    plan.stacked = fuse_siblings(model)
    # transformers' init skips tensors flagged as loaded; what is still on the
    # meta device (non-persistent buffers: rotary frequencies, embedding scales)
    # gets a real, unflagged tensor, which initialize_weights then computes.
    for t in list(model.parameters()) + list(model.buffers()):
        if t is not None and not t.is_meta:
            t._is_hf_initialized = True
    for key, buf in list(model.named_buffers()):
        if buf is not None and buf.is_meta:
            module, _, leaf = key.rpartition(".")
            owner = model.get_submodule(module) if module else model
            owner.register_buffer(leaf, torch.empty_like(buf, device=device), persistent=False)
    model.initialize_weights()  # only what is not flagged: the fresh buffers
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
                 if t is not None and t.is_meta]
    if leftovers:
        raise RuntimeError(f"{plan.path}: {leftovers[0]} was not loaded")
    gen_file = plan.path / "generation_config.json"
    if gen_file.is_file():
        try:
            model.generation_config = GenerationConfig.from_pretrained(str(plan.path))
        except (OSError, ValueError, json.JSONDecodeError) as e:
            log.warning("%s: generation_config.json not used (%s)", plan.path, e)
    model.requires_grad_(False)
    model.eval()
    plan.kernels = kernels
    del get, state
    _release_freed_memory()
    return model


def _keeps_16bit(model, plan: PackedPlan) -> set[str]:
    """Checkpoint keys to keep in their 16-bit dtype in a float32 model
    (``native_kernels.sixteen_bit_keys``); none where the kernels are missing
    or the model computes in 16 bits anyway."""
    if not plan._native_float32():
        return set()
    return sixteen_bit_keys(model, plan.specs)


def _release_freed_memory() -> None:
    """Unpacking leaves tens of MiB of temporaries per layer; glibc keeps freed
    heap pages (measured on the demo: 986 MiB resident after loading, 557 MiB
    after malloc_trim). Give them back where the C library can."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
