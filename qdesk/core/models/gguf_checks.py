"""The hyper-parameters of a GGUF file, checked the way llama.cpp needs them.

llama.cpp turns most bad metadata into an error, but some of it reaches a
``GGML_ASSERT`` (an abort that ends the process) or a division by zero: a NaN
norm epsilon (``GGML_ASSERT(eps >= 0.0f)``), an unknown RoPE scaling type, more
experts used than there are, a rotary width that is odd or wider than a head,
duplicate vocabulary entries (``id_to_token.size() == token_to_id.size()``),
zero KV heads. Every rule below comes from llama.cpp's ``llama_model::load_hparams``
and the per-architecture ``load_arch_hparams`` (vendored llama.cpp of
llama-cpp-python 0.3.36), its vocabulary loader and the ggml ops the graphs
call; ranges are wide enough for every published model.

The checks are the fast, readable first line; ``gguf_probe`` (a test load in a
child process) is what guarantees that no file can end qdesk's own process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdesk.core.errors import BadInput
from qdesk.core.models.gguf_reader import BOOL_TYPE, FLOAT_TYPES, INT_TYPES, GGUFFile, Value

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
MAX_VOCAB = 1 << 22
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES

# Decoder-only attention architectures whose layout qdesk knows in full: every
# layer has attention with at least one KV head, RMS norms, RoPE on every head.
ATTENTION_DECODERS = frozenset({
    "llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3",
})
RMS_NORM_ARCHS = ATTENTION_DECODERS
MOE_ARCHS = frozenset({"qwen2moe", "qwen3moe"})


@dataclass(frozen=True)
class Rule:
    """One ``{arch}.<key>`` value: its kind, range, and whether a per-layer array is allowed."""

    key: str
    kind: str  # "uint" | "float" | "str" | "bool"
    lo: float | None = None
    hi: float | None = None
    per_layer: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()


# llama_model::load_hparams, for every architecture.
GENERIC_RULES = (
    Rule("context_length", "uint", 1, 1 << 24, required=True),
    Rule("embedding_length", "uint", 1, 1 << 17, required=True),
    Rule("block_count", "uint", 1, MAX_LAYERS, required=True),
    Rule("nextn_predict_layers", "uint", 0, MAX_LAYERS),
    Rule("feed_forward_length", "uint", 0, 1 << 20, per_layer=True),
    Rule("attention.head_count", "uint", 0, 1 << 12, per_layer=True),
    Rule("attention.head_count_kv", "uint", 0, 1 << 12, per_layer=True),
    Rule("attention.key_length", "uint", 1, 1 << 13),
    Rule("attention.value_length", "uint", 1, 1 << 13),
    Rule("attention.key_length_swa", "uint", 1, 1 << 13),
    Rule("attention.value_length_swa", "uint", 1, 1 << 13),
    Rule("attention.layer_norm_epsilon", "float", 0.0, 1.0),
    Rule("attention.layer_norm_rms_epsilon", "float", 0.0, 1.0),
    Rule("attention.sliding_window", "uint", 0, 1 << 24),
    Rule("attention.scale", "float", -1e6, 1e6),
    Rule("attention.clamp_kqv", "float", 0.0, 1e9),
    Rule("rope.dimension_count", "uint", 0, 1 << 13),
    Rule("rope.dimension_count_swa", "uint", 0, 1 << 13),
    Rule("rope.freq_base", "float", 1e-6, 1e15),
    Rule("rope.freq_base_swa", "float", 1e-6, 1e15),
    Rule("rope.scaling.type", "str", choices=ROPE_SCALING_TYPES),
    Rule("rope.scaling.factor", "float", 0.0, 1e6),
    Rule("rope.scale_linear", "float", 0.0, 1e6),
    Rule("rope.scaling.attn_factor", "float", 0.0, 1e6),
    Rule("rope.scaling.original_context_length", "uint", 1, 1 << 24),
    Rule("rope.scaling.yarn_ext_factor", "float", -1e6, 1e6),
    Rule("rope.scaling.yarn_attn_factor", "float", 0.0, 1e6),
    Rule("rope.scaling.yarn_beta_fast", "float", -1e6, 1e6),
    Rule("rope.scaling.yarn_beta_slow", "float", -1e6, 1e6),
    Rule("rope.scaling.yarn_log_multiplier", "float", -1e6, 1e6),
    Rule("expert_count", "uint", 0, MAX_EXPERTS),
    Rule("expert_used_count", "uint", 0, MAX_EXPERTS, per_layer=True),
    Rule("expert_group_count", "uint", 0, MAX_EXPERTS),
    Rule("expert_group_used_count", "uint", 0, MAX_EXPERTS),
    Rule("expert_feed_forward_length", "uint", 0, 1 << 20, per_layer=True),
    Rule("expert_shared_feed_forward_length", "uint", 0, 1 << 20),
    Rule("expert_weights_scale", "float", -1e6, 1e6),
    Rule("attn_logit_softcapping", "float", 1e-6, 1e6),
    Rule("final_logit_softcapping", "float", 0.0, 1e6),
    Rule("router_logit_softcapping", "float", 1e-6, 1e6),
    Rule("embedding_scale", "float", -1e6, 1e6),
    Rule("residual_scale", "float", -1e6, 1e6),
    Rule("logit_scale", "float", -1e6, 1e6),
    Rule("vocab_size", "uint", 1, MAX_VOCAB),
)

# load_arch_hparams: what an architecture reads beyond the generic keys.
ARCH_RULES = {
    **{a: (Rule("attention.layer_norm_rms_epsilon", "float", 0.0, 1.0, required=True),)
       for a in RMS_NORM_ARCHS},
    # Gemma 2 always masks with its window (default 4096): a window of 0 masks everything.
    "gemma2": (
        Rule("attention.layer_norm_rms_epsilon", "float", 0.0, 1.0, required=True),
        Rule("attention.sliding_window", "uint", 1, 1 << 24),
    ),
    # A MoE layer needs experts (llama.cpp: "n_expert must be > 0 for QWEN3MOE").
    **{a: (
        Rule("attention.layer_norm_rms_epsilon", "float", 0.0, 1.0, required=True),
        Rule("expert_count", "uint", 1, MAX_EXPERTS, required=True),
        Rule("expert_used_count", "uint", 1, MAX_EXPERTS, per_layer=True, required=True),
    ) for a in MOE_ARCHS},
}

# Special token ids llama.cpp reads (llama_vocab::impl::load).
SPECIAL_TOKEN_KEYS = tuple(
    f"tokenizer.ggml.{k}_token_id"
    for k in ("bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask",
              "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep",
              "prefix", "suffix", "middle")
)


def check_hparams(f: GGUFFile, arch: str) -> dict[str, object]:
    """Check every hyper-parameter llama.cpp reads for ``arch``; return them by key suffix.

    Per-layer values come back as tuples of length ``block_count``.
    """
    values: dict[str, object] = {}
    rules = {r.key: r for r in GENERIC_RULES}
    rules.update({r.key: r for r in ARCH_RULES.get(arch, ())})
    n_layers = None
    for rule in (rules.pop("block_count"), *rules.values()):
        value = _checked(f, arch, rule, n_layers)
        if value is not None:
            values[rule.key] = value
        if rule.key == "block_count":
            n_layers = value
    _check_consistency(f, arch, values, n_layers)
    return values


def _bad(f: GGUFFile, key: str, value, why: str) -> BadInput:
    shown = value if not isinstance(value, float) else f"{value:g}"
    return BadInput(f"{f.path}: GGUF metadata {key}={shown} {why}")


def _checked(f: GGUFFile, arch: str, rule: Rule, n_layers: int | None):
    key = f"{arch}.{rule.key}"
    v = f.metadata.get(key)
    if v is None:
        if rule.required:
            raise BadInput(f"{f.path}: GGUF metadata lacks {key}")
        return None
    if v.is_array:
        if not rule.per_layer:
            raise BadInput(f"{f.path}: GGUF metadata {key} is an array where llama.cpp reads one value")
        if n_layers is not None and v.length != n_layers:
            raise BadInput(
                f"{f.path}: GGUF metadata {key} has {v.length} entries for {n_layers} layers"
            )
        items = [_scalar(f, key, rule, Value(v.item, x)) for x in v.data]
        return tuple(items)
    item = _scalar(f, key, rule, v)
    return tuple([item] * n_layers) if rule.per_layer and n_layers else item


def _scalar(f: GGUFFile, key: str, rule: Rule, v: Value):
    data = v.data
    if rule.kind == "uint":
        if v.type not in INT_TYPES:
            raise BadInput(f"{f.path}: GGUF metadata {key} is not an integer")
        value = int(data)
    elif rule.kind == "float":
        if v.type not in FLOAT_TYPES | INT_TYPES:
            raise BadInput(f"{f.path}: GGUF metadata {key} is not a number")
        value = float(data)
        if not math.isfinite(value):
            raise _bad(f, key, value, "is not a finite number")
    elif rule.kind == "bool":
        if v.type != BOOL_TYPE:
            raise BadInput(f"{f.path}: GGUF metadata {key} is not a boolean")
        return bool(data)
    else:
        if not isinstance(data, str):
            raise BadInput(f"{f.path}: GGUF metadata {key} is not a string")
        if rule.choices and data not in rule.choices:
            raise _bad(f, key, repr(data), f"is not one of {', '.join(rule.choices)}")
        return data
    if rule.lo is not None and value < rule.lo or rule.hi is not None and value > rule.hi:
        raise _bad(f, key, value, f"is out of range ({rule.lo:g} to {rule.hi:g})")
    return value


def _check_consistency(f: GGUFFile, arch: str, v: dict, n_layers: int) -> None:
    p = f"{f.path}: GGUF metadata {arch}."
    if v.get("nextn_predict_layers", 0) > n_layers:
        raise BadInput(f"{p}nextn_predict_layers exceeds block_count {n_layers}")
    heads = v.get("attention.head_count", (0,) * n_layers)
    kv_heads = v.get("attention.head_count_kv", heads)
    decoder = arch in ATTENTION_DECODERS
    for i, (h, kv) in enumerate(zip(heads, kv_heads)):
        if decoder and (h < 1 or kv < 1):
            raise BadInput(f"{p}attention: layer {i} has {h} heads and {kv} KV heads (needs at least 1)")
        if kv > h or kv and h % kv:
            raise BadInput(
                f"{p}attention: layer {i} has {h} heads and {kv} KV heads "
                "(the heads must be a whole multiple of the KV heads)"
            )
    n_head = max(heads) if heads else 0
    n_embd = v["embedding_length"]
    if n_head:
        head_k = v.get("attention.key_length")
        if head_k is None:
            if decoder and n_embd % heads[0]:
                raise BadInput(f"{p}embedding_length {n_embd} is not divisible by {heads[0]} heads")
            head_k = n_embd // heads[0]
        for suffix, width in (("", head_k), ("_swa", v.get("attention.key_length_swa", head_k))):
            n_rot = v.get(f"rope.dimension_count{suffix}", width)
            # ggml_rope: GGML_ASSERT(n_dims <= ne0) and GGML_ASSERT(n_dims % 2 == 0)
            if n_rot > width or n_rot % 2 or decoder and n_rot < 2:
                raise BadInput(
                    f"{p}rope.dimension_count{suffix}={n_rot} does not fit a head of {width} "
                    "(it must be even and at most the head size)"
                )
    _check_experts(p, v)
    if arch == "gemma2" and v.get("final_logit_softcapping") == 0.0:
        raise BadInput(f"{p}final_logit_softcapping is 0 (Gemma 2 divides by it)")


def _check_experts(p: str, v: dict) -> None:
    # The GGML_ASSERTs of load_hparams, in its order.
    n_expert = v.get("expert_count", 0)
    used = max(v.get("expert_used_count", (0,)) or (0,))
    groups = v.get("expert_group_count", 0)
    group_used = v.get("expert_group_used_count", 0)
    if used > n_expert:
        raise BadInput(f"{p}expert_used_count {used} exceeds expert_count {n_expert}")
    if n_expert > 0:
        if used == 0:
            raise BadInput(f"{p}expert_count is {n_expert} but expert_used_count is 0")
        if groups >= n_expert:
            raise BadInput(f"{p}expert_group_count {groups} is not below expert_count {n_expert}")
        if groups > 1 and (n_expert % groups or not 0 < group_used < groups):
            raise BadInput(
                f"{p}expert groups do not fit: {n_expert} experts, {groups} groups, {group_used} used"
            )
    elif groups:
        raise BadInput(f"{p}expert_group_count is {groups} without experts")


def check_vocabulary(f: GGUFFile) -> int:
    """Check the tokenizer metadata llama.cpp's vocabulary loader reads; the vocabulary size."""
    model = f.metadata.get("tokenizer.ggml.model")
    if model is not None and not isinstance(model.data, str):
        raise BadInput(f"{f.path}: GGUF metadata tokenizer.ggml.model is not a string")
    if model is not None and model.data in ("none", "no_vocab"):
        raise BadInput(f"{f.path}: this GGUF file has no vocabulary, so it cannot chat")
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise BadInput(f"{f.path}: GGUF metadata lacks tokenizer.ggml.tokens (the vocabulary)")
    if not tokens.is_array or tokens.item != 8 or not isinstance(tokens.data, tuple):
        raise BadInput(f"{f.path}: GGUF metadata tokenizer.ggml.tokens is not a list of strings")
    n = len(tokens.data)
    if not 1 <= n <= MAX_VOCAB:
        raise BadInput(f"{f.path}: GGUF vocabulary has {n} tokens")
    # llama.cpp names empty tokens "[EMPTY_i]", then asserts that every text is unique.
    texts = {t or b"[EMPTY_%d]" % i for i, t in enumerate(tokens.data)}
    if len(texts) != n:
        raise BadInput(f"{f.path}: GGUF vocabulary lists {n - len(texts)} token(s) twice")
    for key, item_types in (("scores", FLOAT_TYPES | {5}), ("token_type", {5})):
        arr = f.metadata.get(f"tokenizer.ggml.{key}")
        if arr is None:
            continue
        if not arr.is_array or arr.item not in item_types or arr.length < n:
            raise BadInput(f"{f.path}: GGUF metadata tokenizer.ggml.{key} does not match the vocabulary")
        if key == "scores" and not all(math.isfinite(s) for s in arr.data):
            raise BadInput(f"{f.path}: GGUF metadata tokenizer.ggml.scores holds NaN or infinity")
    merges = f.metadata.get("tokenizer.ggml.merges")
    if merges is not None and (not merges.is_array or merges.item != 8):
        raise BadInput(f"{f.path}: GGUF metadata tokenizer.ggml.merges is not a list of strings")
    for key in SPECIAL_TOKEN_KEYS:
        sv = f.metadata.get(key)
        if sv is None:
            continue
        if sv.type not in INT_TYPES or not 0 <= sv.data < n:
            raise BadInput(f"{f.path}: GGUF metadata {key}={sv.data!r} is not a token of the vocabulary")
    for key in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_space_prefix"):
        sv = f.metadata.get(key)
        if sv is not None and sv.type != BOOL_TYPE:
            raise BadInput(f"{f.path}: GGUF metadata {key} is not a boolean")
    template = f.metadata.get("tokenizer.chat_template")
    if template is not None and not isinstance(template.data, str):
        raise BadInput(f"{f.path}: GGUF metadata tokenizer.chat_template is not a string")
    return n
