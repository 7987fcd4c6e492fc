"""What the quantizers must know about each model family's decoder layer.

GPTQ, RTN and HQQ round any ``nn.Linear`` and need nothing from this table.
AWQ does: it multiplies a group of Linears' input channels by s and divides
the op that feeds them by s, so that the float model is unchanged before
rounding. Which op feeds which Linears, and how a scale folds into that op,
differs between families, and guessing it wrong destroys the model without the
per-layer errors noticing (a Llama-style fold on Gemma 3 once gave mean KLD 8.4
while every layer's error looked five times better than RTN's):

- Gemma's MLP is fed by ``pre_feedforward_layernorm``; its
  ``post_attention_layernorm`` normalises the attention *output*.
- Gemma's RMSNorm multiplies by ``1 + w``: dividing its output by s means
  ``w -> (1 + w) / s - 1``, not ``w / s``.
- Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj``: only
  the v rows feed ``o_proj``, only the up half feeds ``down_proj``.

So every family is described here by ``config.model_type``; a family without a
description gets AWQ refused by name. ``apply_awq`` also checks, layer by
layer, that the fold left the float layer's output unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from qdesk.core.errors import BadInput

# How dividing an op's output by s (per channel) is folded into the op:
FOLDS = (
    "norm",  # RMSNorm/LayerNorm y = n(x) * w (+ b): w -> w / s (b -> b / s)
    "norm_plus_one",  # Gemma's RMSNorm y = n(x) * (1 + w): w -> (1 + w) / s - 1
    "rows",  # a Linear: the output rows that feed the group (and their bias) / s
)
# Which output rows of a "rows" op feed the group, for a group of input width n:
PARTS = (
    "all",  # a plain Linear whose n outputs are the group's inputs (v_proj -> o_proj)
    "qkv:v",  # fused [q; k; v] with as many k and v heads as q heads: rows [2n, 3n)
    "gate_up:up",  # fused [gate; up]: the up half, rows [n, 2n)
)


@dataclass(frozen=True)
class ScaleGroup:
    """Linears fed by the output of one op (names inside the decoder layer)."""

    prev: str
    fold: str
    linears: tuple[str, ...]
    part: str = "all"

    def __post_init__(self) -> None:
        if self.fold not in FOLDS or self.part not in PARTS:
            raise ValueError(f"bad scale group {self}")
        if self.part != "all" and self.fold != "rows":
            raise ValueError(f"only a Linear has parts: {self}")

    def rows(self, prev_out: int, width: int) -> slice | None:
        """The rows of the previous Linear that feed the group, or None when its
        shape does not have them (grouped-query attention: v is narrower than
        o_proj's input, and no per-channel scale folds through the head sharing)."""
        if self.part == "all":
            return slice(0, width) if prev_out == width else None
        if self.part == "qkv:v":
            return slice(2 * width, 3 * width) if prev_out == 3 * width else None
        return slice(width, 2 * width) if prev_out == 2 * width else None


@dataclass(frozen=True)
class Family:
    """A decoder layout: its name, the ``model_type`` values that use it, AWQ's groups."""

    name: str
    model_types: tuple[str, ...]
    scale_groups: tuple[ScaleGroup, ...]


_ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_MLP = ("mlp.gate_proj", "mlp.up_proj")

# Llama's layout: the input norm feeds q/k/v, the post-attention norm feeds the
# MLP, v feeds o, up feeds down (through the elementwise product with act(gate)).
_LLAMA = (
    ScaleGroup("input_layernorm", "norm", _ATTN),
    ScaleGroup("self_attn.v_proj", "rows", ("self_attn.o_proj",)),
    ScaleGroup("post_attention_layernorm", "norm", _MLP),
    ScaleGroup("mlp.up_proj", "rows", ("mlp.down_proj",)),
)
# Gemma 2/3: (1 + w) norms; the MLP's input norm is pre_feedforward_layernorm
# (post_attention_layernorm and post_feedforward_layernorm normalise outputs).
_GEMMA = (
    ScaleGroup("input_layernorm", "norm_plus_one", _ATTN),
    ScaleGroup("self_attn.v_proj", "rows", ("self_attn.o_proj",)),
    ScaleGroup("pre_feedforward_layernorm", "norm_plus_one", _MLP),
    ScaleGroup("mlp.up_proj", "rows", ("mlp.down_proj",)),
)
_PHI3 = (
    ScaleGroup("input_layernorm", "norm", ("self_attn.qkv_proj",)),
    ScaleGroup("self_attn.qkv_proj", "rows", ("self_attn.o_proj",), part="qkv:v"),
    ScaleGroup("post_attention_layernorm", "norm", ("mlp.gate_up_proj",)),
    ScaleGroup("mlp.gate_up_proj", "rows", ("mlp.down_proj",), part="gate_up:up"),
)

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",), _LLAMA),
    Family("mistral", ("mistral",), _LLAMA),
    # Qwen2's q/k/v biases: a "rows" fold into v_proj divides its bias too.
    Family("qwen2", ("qwen2",), _LLAMA),
    # Qwen3's q/k norms act on q/k's outputs, after the scaled inputs: no change.
    Family("qwen3", ("qwen3",), _LLAMA),
    Family("gemma2", ("gemma2",), _GEMMA),
    Family("gemma3", ("gemma3_text",), _GEMMA),
    # Phi-3 and Phi-4 (mini and 14B) share Phi3ForCausalLM.
    Family("phi3", ("phi3",), _PHI3),
)


def model_type_of(model) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def family_of(model) -> Family | None:
    """The described family of a transformers model, or None."""
    model_type = model_type_of(model)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def awq_family(model) -> Family:
    """The family AWQ folds for; BadInput naming the model when it has no description."""
    family = family_of(model)
    if family is None:
        arch = type(model).__name__
        described = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise BadInput(
            f"AWQ has no description of how to fold its scales in {arch} (model_type "
            f"'{model_type_of(model)}'; described: {described}); qdesk will not guess it: "
            "use gptq, rtn or hqq, which work on any Linear layer"
        )
    return family


def refuse_fused_experts(model, layers: nn.ModuleList) -> None:
    """Mixture-of-experts models whose experts are fused 3-D parameters (how
    transformers 5 stores Qwen3-MoE, Mixtral and others), not Linear layers, are
    refused: the quantizers and the compressed-tensors checkpoint handle 2-D
    Linear weights, and quantizing only the attention would leave most of the
    weights dense while the summary said "quantized"."""
    fused = [(n, p) for n, p in layers[0].named_parameters() if p.ndim >= 3]
    if not fused:
        return
    name, p = fused[0]
    in_fused = sum(p.numel() for layer in layers for _, p in layer.named_parameters()
                   if p.ndim >= 3)
    total = sum(p.numel() for p in model.parameters())
    shape = " x ".join(str(d) for d in p.shape)
    raise BadInput(
        f"{type(model).__name__} stores its experts as fused 3-D tensors (layer 0 "
        f"{name}: {shape}), not Linear layers: qdesk quantizes Linear layers only, and "
        f"the experts hold {100 * in_fused / max(1, total):.0f}% of the weights, so "
        "quantizing the rest would leave the model mostly dense"
    )
