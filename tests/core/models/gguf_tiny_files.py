"""Tiny GGUF files of every family, made with llama.cpp's converter (conftest.py makes
them once per test session).

BPE families get the demo model's tokenizer (``tests/families.py``). Gemma 2,
Phi-3 and Qwen2 get a SentencePiece tokenizer of 512 pieces trained here in a
few milliseconds: llama.cpp's converter reads only SentencePiece vocabularies
for Gemma 2 and Phi-3, and for Qwen2 it recognises a BPE vocabulary only by the
hash of a known model's tokenizer, which no tiny tokenizer has. Gemma's pieces
are named as Gemma's (<bos>, <eos>, <mask>: transformers' Gemma tokenizer adds
them when missing, which would make its vocabulary larger than the file's);
the others as Llama's (<s>, </s>: llama.cpp looks those up for Phi-3).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from families import FAMILIES, tiny_model

GGUF_FAMILIES = FAMILIES  # llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, qwen3_moe
SPM_FAMILIES = ("qwen2", "gemma2", "phi3")
SPM_SPECIALS = ["<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>",
                "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATES = {
    "gemma2": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == "
              "'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    "phi3": "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    "qwen2": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
}


def train_spm_tokenizer(path: Path, gemma: bool = False) -> Path:
    """A 512-piece SentencePiece BPE model (byte fallback) trained on qdesk's calibration text.

    Ids: 0 pad, 1 bos, 2 eos, 3 unk, then the chat specials.
    """
    import sentencepiece as spm

    from qdesk.core.paths import resources_dir

    text = (resources_dir() / "calibration" / "general.txt").read_text(encoding="utf-8")
    names = {"bos_piece": "<bos>", "eos_piece": "<eos>"} if gemma else {}
    specials = SPM_SPECIALS + (["<mask>"] if gemma else [])
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, vocab_size=512,
        model_type="bpe", character_coverage=1.0, byte_fallback=True,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, user_defined_symbols=specials, minloglevel=2,
        **names,
    )
    path.write_bytes(model.getvalue())
    return path


# Variants with the small SentencePiece vocabulary (files of a few hundred KB, for
# the bad-input tests), and two architectures outside FAMILIES: Granite (llama.cpp
# runs it, transformers' GGUF loader does not read it) and Llama 3.1-style RoPE
# scaling (llama.cpp's converter stores it as a rope_freqs tensor).
EXTRA_MODELS = {
    "granite": ("granite", {}),
    "llama3rope": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 64}}),
}


def _spm_model(family: str):
    import torch
    from transformers import AutoModelForCausalLM

    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family not in EXTRA_MODELS:
        return tiny_model(family, vocab_size=512, dtype=torch.bfloat16, **ids)
    from families import tiny_config

    model_type, extra = EXTRA_MODELS[family]
    config = tiny_config("llama", vocab_size=512, **ids)
    options = {k: v for k, v in config.to_dict().items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings")}
    from transformers import AutoConfig

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, vocab_size=512, **ids, **options, **extra)
    return AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).eval()


def spm_folder(family: str, path: Path, spm_model: Path) -> Path:
    model = _spm_model(family)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(str(path))
    shutil.copy(spm_model, path / "tokenizer.model")
    gemma = family.startswith("gemma")
    template = CHAT_TEMPLATES.get(family, CHAT_TEMPLATES["qwen2"])
    # The chat specials as a HF tokenizer lists them: the converter marks them
    # CONTROL, so both llama.cpp and transformers keep them whole.
    specials = {str(4 + i): {"content": t, "special": True} for i, t in enumerate(SPM_SPECIALS)}
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer" if gemma else "LlamaTokenizer",
        "bos_token": "<bos>" if gemma else "<s>", "eos_token": "<eos>" if gemma else "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "chat_template": template,
        "added_tokens_decoder": specials,
    }))
    return path
