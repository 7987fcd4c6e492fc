"""Read a llama-architecture GGUF file as a dense Hugging Face model.

The header and every tensor record are untrusted input: each count, shape and
offset is checked against the architecture and the file's size before any data
is touched, and any failure becomes one ``BadInput`` line naming the file.

llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` (it stores
rotary pairs interleaved, transformers stores them as two halves); reading them
back undoes that permutation, so the dense model computes what the GGUF computes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF tensor name (after "blk.N.") -> transformers name (after "model.layers.N.")
_BLOCK_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclass(frozen=True)
class GGUFHeader:
    """What qdesk needs from a GGUF file's metadata, validated."""

    path: Path
    architecture: str
    name: str
    n_layers: int
    hidden_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_norm_eps: float
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    tensor_types: dict[str, str]  # GGUF tensor name -> GGML type name
    n_parameters: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads


def _open_reader(path: Path):
    import gguf

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from None
    if magic != b"GGUF":
        raise BadInput(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # gguf-py raises ValueError, struct and numpy errors on bad files
        raise BadInput(f"{path}: damaged GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str, kind: type, default=None, required: bool = True):
    field = reader.fields.get(key)
    if field is None:
        if required:
            raise BadInput(f"{reader_path(reader)}: GGUF metadata lacks {key}")
        return default
    try:
        value = field.contents()
    except Exception:
        raise BadInput(f"{reader_path(reader)}: GGUF metadata {key} is unreadable") from None
    if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise BadInput(f"{reader_path(reader)}: GGUF metadata {key} has type {type(value).__name__}")


def reader_path(reader) -> str:
    return str(getattr(reader.data, "filename", "") or "GGUF file")


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and validate a GGUF file's header (metadata and tensor records)."""
    path = Path(path)
    reader = _open_reader(path)
    arch = _field(reader, "general.architecture", str)
    if arch not in SUPPORTED_ARCHITECTURES:
        raise BadInput(
            f"{path}: unsupported architecture '{arch}' "
            f"(qdesk reads {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    header = GGUFHeader(
        path=path,
        architecture=arch,
        name=_field(reader, "general.name", str, default=path.stem, required=False),
        n_layers=_field(reader, f"{arch}.block_count", int),
        hidden_size=_field(reader, f"{arch}.embedding_length", int),
        intermediate_size=_field(reader, f"{arch}.feed_forward_length", int),
        n_heads=_field(reader, f"{arch}.attention.head_count", int),
        n_kv_heads=_field(
            reader, f"{arch}.attention.head_count_kv", int, required=False,
            default=_field(reader, f"{arch}.attention.head_count", int),
        ),
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data)
        if "tokenizer.ggml.tokens" in reader.fields
        else _field(reader, f"{arch}.vocab_size", int),
        context_length=_field(reader, f"{arch}.context_length", int),
        rope_theta=_field(reader, f"{arch}.rope.freq_base", float, default=10000.0, required=False),
        rms_norm_eps=_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", float),
        chat_template=_field(reader, "tokenizer.chat_template", str, required=False),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id", int, required=False),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id", int, required=False),
        tensor_types={t.name: t.tensor_type.name for t in reader.tensors},
        n_parameters=sum(int(t.n_elements) for t in reader.tensors),
    )
    _validate(header, reader)
    return header


def _validate(h: GGUFHeader, reader) -> None:
    limits = {
        "block_count": (h.n_layers, 1, 1024),
        "embedding_length": (h.hidden_size, 1, 1 << 17),
        "feed_forward_length": (h.intermediate_size, 1, 1 << 20),
        "head_count": (h.n_heads, 1, 1024),
        "head_count_kv": (h.n_kv_heads, 1, 1024),
        "vocab_size": (h.vocab_size, 1, 1 << 22),
        "context_length": (h.context_length, 1, 1 << 24),
    }
    for key, (value, lo, hi) in limits.items():
        if not lo <= value <= hi:
            raise BadInput(f"{h.path}: GGUF metadata {key}={value} is out of range")
    if h.hidden_size % h.n_heads or h.n_heads % h.n_kv_heads or h.head_dim % 2:
        raise BadInput(
            f"{h.path}: inconsistent attention shape (hidden {h.hidden_size}, "
            f"heads {h.n_heads}, kv heads {h.n_kv_heads})"
        )
    size = os.path.getsize(h.path)
    expected = _expected_shapes(h)
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise BadInput(f"{h.path}: truncated GGUF file (tensor {t.name} ends past the file)")
        if t.name in expected:
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            if shape != expected[t.name]:
                raise BadInput(
                    f"{h.path}: tensor {t.name} has shape {shape}, expected {expected[t.name]}"
                )
    missing = [n for n in expected if n not in h.tensor_types and n != "output.weight"]
    if missing:
        raise BadInput(f"{h.path}: GGUF file lacks tensor {missing[0]}")


def _expected_shapes(h: GGUFHeader) -> dict[str, tuple[int, ...]]:
    """Row-major (PyTorch) shapes of every tensor a llama model needs."""
    d, f, kv = h.hidden_size, h.intermediate_size, h.n_kv_heads * h.head_dim
    shapes = {
        "token_embd.weight": (h.vocab_size, d),
        "output_norm.weight": (d,),
        "output.weight": (h.vocab_size, d),
    }
    per_block = {
        "attn_norm.weight": (d,),
        "ffn_norm.weight": (d,),
        "attn_q.weight": (d, d),
        "attn_k.weight": (kv, d),
        "attn_v.weight": (kv, d),
        "attn_output.weight": (d, d),
        "ffn_gate.weight": (f, d),
        "ffn_up.weight": (f, d),
        "ffn_down.weight": (d, f),
    }
    for i in range(h.n_layers):
        for name, shape in per_block.items():
            shapes[f"blk.{i}.{name}"] = shape
    return shapes


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved rotary pairs -> two halves).

    w: (n_heads * head_dim, in_features). Row r = h*head_dim + 2*i + j in the GGUF
    holds what transformers keeps at row h*head_dim + j*head_dim/2 + i.
    """
    rows = w.shape[0]
    return (
        w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def hf_config(h: GGUFHeader) -> dict:
    """A transformers ``LlamaConfig`` dict equivalent to the GGUF header."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h.hidden_size,
        "intermediate_size": h.intermediate_size,
        "num_hidden_layers": h.n_layers,
        "num_attention_heads": h.n_heads,
        "num_key_value_heads": h.n_kv_heads,
        "head_dim": h.head_dim,
        "vocab_size": h.vocab_size,
        "max_position_embeddings": h.context_length,
        "rms_norm_eps": h.rms_norm_eps,
        "rope_theta": h.rope_theta,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in h.tensor_types,
        "bos_token_id": h.bos_token_id,
        "eos_token_id": h.eos_token_id,
        "torch_dtype": "bfloat16",
    }


def dense_tensors(h: GGUFHeader, on_tensor=None):
    """Yield (transformers name, float32 numpy array) for every tensor of the file.

    on_tensor(i, n) is called after each tensor, for progress.
    """
    from gguf import quants

    reader = _open_reader(h.path)
    tensors = list(reader.tensors)
    for i, t in enumerate(tensors):
        name = _hf_name(t.name)
        if name is None:
            log.info("skipping GGUF tensor %s (not used by transformers)", t.name)
            continue
        try:
            w = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise BadInput(f"{h.path}: cannot decode tensor {t.name} ({e})") from None
        if t.name.endswith("attn_q.weight"):
            w = unpermute_rotary_rows(w, h.n_heads)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute_rotary_rows(w, h.n_kv_heads)
        yield name, w
        if on_tensor is not None:
            on_tensor(i + 1, len(tensors))


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_TENSORS:
        return f"model.layers.{parts[1]}.{_BLOCK_TENSORS[parts[2]]}"
    return None
