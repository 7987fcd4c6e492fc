"""A transformers config that computes what llama.cpp computes from a GGUF file.

One description per architecture: which transformers model reads it and what
llama.cpp's ``load_arch_hparams`` and graph take from the metadata (attention
scale, sliding-window layers, soft-capping, RoPE bases and scaling, experts).
An architecture without a description is refused by name, never guessed.

Why not the config transformers' GGUF loader builds (``GGUF_CONFIG_MAPPING``)?
It leaves out values llama.cpp uses, and the model then silently differs from
the file: measured on tiny random models converted with llama.cpp's converter,
Qwen3 gets head_dim 128 for 16 (the load fails), Qwen3-MoE expert width 768 for
64 (fails), Gemma 2 and 3 the query scale of a 256-wide head (Gemma 3's logits
differ from llama.cpp's by up to 0.8), and RoPE scaling is dropped for every
family. The tensors still go through transformers' own name map
(``dense_folder``); only the config is described here.
"""

from __future__ import annotations

from collections.abc import Callable

from qdesk.core.models.gguf_header import GGUFHeader

# GGUF architecture -> (transformers model_type, architectures entry)
_MODEL_TYPES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "qwen3moe": ("qwen3_moe", "Qwen3MoeForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
}
DENSE_ARCHITECTURES = tuple(_MODEL_TYPES)


class Unsupported(Exception):
    """The file uses something the dense copy cannot reproduce; the message says what."""


def hf_config(h: GGUFHeader) -> dict:
    """The ``config.json`` of the dense copy of ``h``. Raises Unsupported."""
    if h.architecture not in _MODEL_TYPES:
        raise Unsupported(
            f"qdesk's transformers backend reads GGUF architectures "
            f"{', '.join(DENSE_ARCHITECTURES)}, not '{h.architecture}' (the llama.cpp backend "
            "runs every architecture llama.cpp knows)"
        )
    model_type, class_name = _MODEL_TYPES[h.architecture]
    config = _common(h, model_type, class_name)
    config.update(_PER_ARCH[h.architecture](h))
    return config


def _uniform(h: GGUFHeader, key: str, default: int) -> int:
    values = set(h.hparams.get(key, (default,)))
    if len(values) != 1:
        raise Unsupported(f"its layers differ in {h.architecture}.{key}, which transformers cannot express")
    return values.pop()


def _has(h: GGUFHeader, suffix: str) -> bool:
    return f"blk.0.{suffix}" in h.tensor_types


def _common(h: GGUFHeader, model_type: str, class_name: str) -> dict:
    hp = h.hparams
    if h.value_dim != h.head_dim:
        raise Unsupported(f"its keys ({h.head_dim}) and values ({h.value_dim}) differ in width")
    if h.architecture != "phi3" and hp.get("rope.dimension_count", h.head_dim) != h.head_dim:
        raise Unsupported("it rotates only part of each head, which its transformers model cannot")
    eos = [h.eos_token_id] if h.eos_token_id is not None else []
    pad = h.file.metadata.get("tokenizer.ggml.padding_token_id") if h.file else None
    return {
        "architectures": [class_name],
        "model_type": model_type,
        "hidden_size": h.hidden_size,
        "intermediate_size": _uniform(h, "feed_forward_length", h.intermediate_size),
        "num_hidden_layers": h.n_layers,
        "num_attention_heads": _uniform(h, "attention.head_count", h.n_heads),
        "num_key_value_heads": _uniform(h, "attention.head_count_kv", h.n_kv_heads),
        "head_dim": h.head_dim,
        "vocab_size": h.vocab_size,
        "max_position_embeddings": h.context_length,
        "rms_norm_eps": h.rms_norm_eps,
        "rope_parameters": _rope(h, h.rope_theta),
        # llama.cpp writes output.weight only when the head is not the embedding.
        "tie_word_embeddings": "output.weight" not in h.tensor_types,
        "bos_token_id": h.bos_token_id,
        "eos_token_id": eos[0] if len(eos) == 1 else eos or None,
        "pad_token_id": int(pad.data) if pad is not None else None,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }


def _rope(h: GGUFHeader, theta: float) -> dict:
    """RoPE as llama.cpp applies it (``load_hparams``: type 'linear' unless stated,
    factor 0 meaning none)."""
    hp = h.hparams
    if "rope_freqs.weight" in h.tensor_types or _has(h, "rope_freqs.weight"):
        raise Unsupported("it carries RoPE frequency factors (Llama 3.1-style scaling), "
                          "which qdesk's dense copy does not reproduce yet")
    if "rope_factors_long.weight" in h.tensor_types or _has(h, "rope_factors_long.weight"):
        raise Unsupported("it uses LongRoPE frequency factors, which qdesk's dense copy "
                          "does not reproduce yet")
    kind = hp.get("rope.scaling.type", "linear")
    factor = hp.get("rope.scaling.factor", hp.get("rope.scale_linear", 0.0))
    if kind == "none" or factor in (0.0, 1.0):
        return {"rope_type": "default", "rope_theta": theta}
    if kind == "linear":
        return {"rope_type": "linear", "rope_theta": theta, "factor": factor}
    raise Unsupported(f"it uses RoPE scaling '{kind}', which qdesk's dense copy does not "
                      "reproduce yet")


def _attention_bias(h: GGUFHeader) -> bool:
    biases = [_has(h, f"attn_{n}.bias") for n in ("q", "k", "v")]
    if any(biases) and not all(biases):
        raise Unsupported("only some of its q/k/v projections have biases")
    return all(biases)


def _llama(h: GGUFHeader) -> dict:
    # llama.cpp requires rope.dimension_count == head size for llama ("invalid n_rot").
    if _has(h, "attn_output.bias") or _has(h, "ffn_up.bias"):
        raise Unsupported("its output or MLP projections have biases")
    return {"attention_bias": _attention_bias(h), "mlp_bias": False}


def _qwen2(h: GGUFHeader) -> dict:
    # transformers' Qwen2 always has q/k/v biases; llama.cpp ignores any window.
    if not _attention_bias(h):
        raise Unsupported("a Qwen2 model needs q/k/v biases, and this file has none")
    return {"use_sliding_window": False, "sliding_window": None}


def _qwen3(h: GGUFHeader) -> dict:
    return {"attention_bias": _attention_bias(h), "use_sliding_window": False, "sliding_window": None}


def _qwen3moe(h: GGUFHeader) -> dict:
    expert_ff = _uniform(h, "expert_feed_forward_length", 0)
    if not expert_ff:
        raise Unsupported("it does not state the experts' width (expert_feed_forward_length)")
    return {
        **_qwen3(h),
        "num_experts": h.n_experts,
        "num_experts_per_tok": _uniform(h, "expert_used_count", h.n_experts_used),
        "moe_intermediate_size": expert_ff,
        # llama.cpp's qwen3moe graph always renormalizes the chosen experts' weights.
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    }


def _swa_layers(h: GGUFHeader, default_pattern: int) -> list[str]:
    """llama.cpp's ``load_swa_pattern``: a bool per layer, or every n-th layer full."""
    v = h.file.metadata.get(f"{h.architecture}.attention.sliding_window_pattern") if h.file else None
    if v is not None and v.is_array:
        if v.length != h.n_layers:
            raise Unsupported("its sliding_window_pattern does not list every layer")
        flags = [bool(x) for x in v.data]
    else:
        n = int(v.data) if v is not None and isinstance(v.data, int) else default_pattern
        flags = [n == 0 or i % n < n - 1 for i in range(h.n_layers)]
    return ["sliding_attention" if f else "full_attention" for f in flags]


def _gemma_query_scale(h: GGUFHeader, layers_27b: int) -> int:
    # llama.cpp (after gemma_pytorch): the 27B model scales queries by the model
    # width per head, every other size by the head width.
    if h.n_layers == layers_27b:
        return h.hidden_size // h.n_heads
    return h.head_dim


def _gemma2(h: GGUFHeader) -> dict:
    hp = h.hparams
    # llama.cpp gives its sliding layers their own base when the file states one;
    # transformers' Gemma 2 has one base for every layer.
    if hp.get("rope.freq_base_swa", h.rope_theta) != h.rope_theta:
        raise Unsupported("its sliding-window layers have their own RoPE base")
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": _gemma_query_scale(h, 46),
        "sliding_window": hp.get("attention.sliding_window", 4096),
        "layer_types": _swa_layers(h, 2),
        # llama-hparams.h defaults when the file does not say
        "attn_logit_softcapping": hp.get("attn_logit_softcapping", 50.0),
        "final_logit_softcapping": hp.get("final_logit_softcapping", 30.0),
        "attention_bias": False,
        "tie_word_embeddings": True,  # llama.cpp's gemma2 always reuses token_embd
    }


def _gemma3(h: GGUFHeader) -> dict:
    hp = h.hparams
    window = hp.get("attention.sliding_window", 0)
    layer_types = _swa_layers(h, 6) if window else ["full_attention"] * h.n_layers
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": _gemma_query_scale(h, 62),
        "sliding_window": window or None,
        "layer_types": layer_types,
        "final_logit_softcapping": hp.get("final_logit_softcapping") or None,
        "attn_logit_softcapping": None,
        "attention_bias": False,
        "rope_parameters": {
            "full_attention": _rope(h, h.rope_theta),
            # llama-hparams.h: rope_freq_base_train_swa = 10000 unless the file says
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": hp.get("rope.freq_base_swa", 10000.0)},
        },
    }


def _phi3(h: GGUFHeader) -> dict:
    hp = h.hparams
    rope = _rope(h, h.rope_theta)
    rope["partial_rotary_factor"] = hp.get("rope.dimension_count", h.head_dim) / h.head_dim
    return {
        "rope_parameters": rope,
        # llama.cpp disables Phi-3's sliding window (llama.cpp PR 13676).
        "sliding_window": None,
        "original_max_position_embeddings": hp.get(
            "rope.scaling.original_context_length", h.context_length
        ),
        "attention_bias": False,
    }


_PER_ARCH: dict[str, Callable[[GGUFHeader], dict]] = {
    "llama": _llama, "qwen2": _qwen2, "qwen3": _qwen3, "qwen3moe": _qwen3moe,
    "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3,
}
