"""Tiny random-weight models of every supported family, built from configs.

One place for every test that needs "a Qwen2" or "a Gemma 3" without a
download: ``tiny_config(family)`` gives a transformers config a few hundred
kilobytes big, ``tiny_model(family)`` the model, and ``tiny_folder(family,
path)`` a saved Hugging Face folder with a real tokenizer (the demo model's
BPE tokenizer, so chat templates and GGUF conversion work). The shapes are
chosen so that group sizes 32 and 64 divide every Linear's input width.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "qwen3_moe")

# What every family shares: 2 layers, hidden 64, 4 heads of 16, 2 KV heads.
_COMMON = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    # Special ids inside any vocabulary (some configs default to 32000).
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)

_PER_FAMILY = {
    "llama": ("llama", {}),
    "mistral": ("mistral", {"head_dim": 16, "sliding_window": None}),
    # Qwen2 has biases on q/k/v.
    "qwen2": ("qwen2", {}),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim.
    "qwen3": ("qwen3", {"head_dim": 16}),
    # Gemma 2/3: pre- and post-norms around attention and MLP, (1 + w) norms,
    # embeddings scaled by sqrt(hidden), tied head, sliding-window layers.
    "gemma2": ("gemma2", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32}),
    "gemma3": ("gemma3_text", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32}),
    # Phi-3: fused qkv_proj and gate_up_proj, untied head.
    "phi3": ("phi3", {"tie_word_embeddings": False}),
    "qwen3_moe": ("qwen3_moe", {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                "moe_intermediate_size": 64, "decoder_sparse_step": 1}),
}


def tiny_config(family: str, vocab_size: int = 256, **overrides):
    """A transformers config of ``family`` (one of FAMILIES), 2 layers wide 64."""
    from transformers import AutoConfig

    model_type, extra = _PER_FAMILY[family]
    options = {**_COMMON, **extra, "vocab_size": vocab_size, **overrides}
    return AutoConfig.for_model(model_type, **options)


def tiny_model(family: str, seed: int = 0, vocab_size: int = 256, dtype=None, **overrides):
    """A random-weight causal LM of ``family`` in eval mode (float32 unless ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **overrides))
    # Random init leaves norms at exactly 1 (or 0 for (1 + w) norms): perturb
    # them, so a test sees a wrong fold into a norm instead of a lucky identity.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def demo_tokenizer():
    """The demo model's tokenizer (BPE, vocabulary 49152, with a chat template)."""
    from transformers import AutoTokenizer

    from qdesk.core.models import ensure_demo_model

    return AutoTokenizer.from_pretrained(str(ensure_demo_model()))


def tiny_folder(family: str, path: Path, seed: int = 0, dtype=None, **overrides) -> Path:
    """Save a tiny ``family`` model with the demo's tokenizer as an HF folder."""
    import torch

    tok = demo_tokenizer()
    model = tiny_model(
        family, seed=seed, vocab_size=len(tok), dtype=dtype or torch.bfloat16,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **overrides,
    )
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return Path(path)


# Families whose tiny folders need a SentencePiece vocabulary for llama.cpp's
# converter: it reads only SentencePiece for Gemma 2 and Phi-3, and recognises a
# Qwen2 BPE vocabulary only by the hash of a known model's tokenizer.
SPM_FAMILIES = ("qwen2", "gemma2", "phi3")
_SPM_SPECIALS = ["<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>",
                 "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
_SPM_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


def converter_folder(family: str, path: Path, seed: int = 0, **overrides) -> Path:
    """A tiny ``family`` folder that llama.cpp's converter accepts: the demo's BPE
    tokenizer (``tiny_folder``), or for SPM_FAMILIES a 512-piece SentencePiece
    tokenizer trained on qdesk's calibration text in milliseconds (Gemma's
    specials named as Gemma's, <bos>/<eos>/<mask>; the others as Llama's)."""
    import io
    import json

    import sentencepiece as spm
    import torch

    from qdesk.core.paths import resources_dir

    if family not in SPM_FAMILIES:
        return tiny_folder(family, path, seed=seed, **overrides)
    gemma = family.startswith("gemma")
    text = (resources_dir() / "calibration" / "general.txt").read_text(encoding="utf-8")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=buf, vocab_size=512,
        model_type="bpe", character_coverage=1.0, byte_fallback=True, pad_id=0, bos_id=1,
        eos_id=2, unk_id=3, user_defined_symbols=_SPM_SPECIALS + (["<mask>"] if gemma else []),
        minloglevel=2, **({"bos_piece": "<bos>", "eos_piece": "<eos>"} if gemma else {}),
    )
    model = tiny_model(family, seed=seed, vocab_size=512, dtype=torch.bfloat16, bos_token_id=1,
                       eos_token_id=2, pad_token_id=0, **overrides)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(str(path))
    (Path(path) / "tokenizer.model").write_bytes(buf.getvalue())
    specials = {str(4 + i): {"content": t, "special": True} for i, t in enumerate(_SPM_SPECIALS)}
    (Path(path) / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer" if gemma else "LlamaTokenizer",
        "bos_token": "<bos>" if gemma else "<s>", "eos_token": "<eos>" if gemma else "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "chat_template": _SPM_TEMPLATE,
        "added_tokens_decoder": specials,
    }))
    return Path(path)
