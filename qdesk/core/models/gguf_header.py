"""What a GGUF file is, read from its header for any architecture, validated.

``read_header`` parses the header (``gguf_reader``), checks the hyper-parameters
and the vocabulary the way llama.cpp needs them (``gguf_checks``), checks the
shapes of the tensors whose layout is known, and returns the facts qdesk shows
and plans with. The facts are read generically from the ``{arch}.*`` keys, so a
file of any architecture llama.cpp runs has them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.models.gguf_checks import ATTENTION_DECODERS, check_hparams, check_vocabulary
from qdesk.core.models.gguf_reader import GGUFFile, read_gguf

# GGML types that hold values rather than quantized blocks.
DENSE_TYPES = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class GGUFHeader:
    """What qdesk needs from a GGUF file's header, validated. Sizes are counts, not bytes."""

    path: Path
    architecture: str
    name: str
    n_layers: int
    hidden_size: int
    intermediate_size: int  # the widest layer's; 0 for expert-only files
    n_heads: int  # the most any layer has
    n_kv_heads: int
    head_dim: int  # key width of one head
    value_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_norm_eps: float | None  # None for architectures with LayerNorm
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    tensor_types: dict[str, str]  # GGUF tensor name -> GGML type name
    n_parameters: int
    n_experts: int = 0
    n_experts_used: int = 0
    sliding_window: int = 0
    kv_heads_per_layer: tuple[int, ...] = ()
    hparams: dict = field(default_factory=dict, repr=False)  # {arch}.* values by key suffix
    file: GGUFFile | None = field(default=None, repr=False, compare=False)

    @property
    def quantized_types(self) -> list[str]:
        """The GGML block types in the file (Q4_1, Q6_K, ...), most tensors first."""
        counts: dict[str, int] = {}
        for t in self.tensor_types.values():
            if t not in DENSE_TYPES:
                counts[t] = counts.get(t, 0) + 1
        return sorted(counts, key=lambda t: -counts[t])

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2) -> int:
        """Bytes of llama.cpp's KV cache (F16 by default) for ``n_ctx`` tokens."""
        per_token = sum(kv * (self.head_dim + self.value_dim) for kv in self.kv_heads_per_layer)
        return n_ctx * per_token * bytes_per_value


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and validate a GGUF file's header (metadata and tensor records)."""
    f = read_gguf(path)
    arch_v = f.metadata.get("general.architecture")
    if arch_v is None:
        raise BadInput(f"{f.path}: GGUF metadata lacks general.architecture")
    if not isinstance(arch_v.data, str) or not re.fullmatch(r"[a-z0-9_.\-]{1,64}", arch_v.data):
        raise BadInput(f"{f.path}: GGUF metadata general.architecture is not an architecture name")
    arch = arch_v.data
    hp = check_hparams(f, arch)
    n_vocab = check_vocabulary(f)
    n_layers = hp["block_count"]
    hidden = hp["embedding_length"]
    heads = hp.get("attention.head_count", (0,) * n_layers)
    kv_heads = hp.get("attention.head_count_kv", heads)
    n_head = max(heads)
    head_k = hp.get("attention.key_length", hidden // heads[0] if heads[0] else 0)
    head_v = hp.get("attention.value_length", hidden // heads[0] if heads[0] else 0)
    ff = hp.get("feed_forward_length", (0,))
    used = hp.get("expert_used_count", (0,))
    name = f.metadata.get("general.name")
    header = GGUFHeader(
        path=f.path,
        architecture=arch,
        name=name.data if name is not None and isinstance(name.data, str) else f.path.stem,
        n_layers=n_layers,
        hidden_size=hidden,
        intermediate_size=max(ff),
        n_heads=n_head,
        n_kv_heads=max(kv_heads),
        head_dim=head_k,
        value_dim=head_v,
        vocab_size=n_vocab,
        context_length=hp["context_length"],
        rope_theta=hp.get("rope.freq_base", 10000.0),
        rms_norm_eps=hp.get("attention.layer_norm_rms_epsilon"),
        chat_template=_text(f, "tokenizer.chat_template"),
        bos_token_id=_int(f, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_int(f, "tokenizer.ggml.eos_token_id"),
        tensor_types={t.name: t.type_name for t in f.tensors},
        n_parameters=sum(t.n_elements for t in f.tensors),
        n_experts=hp.get("expert_count", 0),
        n_experts_used=max(used),
        sliding_window=hp.get("attention.sliding_window", 0),
        kv_heads_per_layer=tuple(kv_heads),
        hparams=hp,
        file=f,
    )
    _check_tensors(header, f)
    return header


def _text(f: GGUFFile, key: str) -> str | None:
    v = f.metadata.get(key)
    return v.data if v is not None and isinstance(v.data, str) else None


def _int(f: GGUFFile, key: str) -> int | None:
    v = f.metadata.get(key)
    return int(v.data) if v is not None and isinstance(v.data, int) else None


def _check_tensors(h: GGUFHeader, f: GGUFFile) -> None:
    if not f.tensors:
        raise BadInput(f"{h.path}: the GGUF file holds no tensors")
    n_blocks = h.n_layers + h.hparams.get("nextn_predict_layers", 0)
    for t in f.tensors:
        m = _BLOCK.match(t.name)
        if m and int(m.group(1)) >= n_blocks:
            raise BadInput(f"{h.path}: tensor {t.name} belongs to layer {m.group(1)} of {h.n_layers}")
    if h.architecture not in ATTENTION_DECODERS:
        return  # llama.cpp checks every shape itself; qdesk knows only these layouts
    expected = _expected_shapes(h)
    for t in f.tensors:
        want = expected.get(t.name)
        if want is not None and t.shape not in want:
            raise BadInput(
                f"{h.path}: tensor {t.name} has shape {t.shape}, expected {' or '.join(map(str, want))}"
            )
    required = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{n}" for i in range(h.n_layers) for n in ("attn_norm.weight", "attn_output.weight")
    ]
    missing = [n for n in required if n not in h.tensor_types]
    if missing:
        raise BadInput(f"{h.path}: GGUF file lacks tensor {missing[0]}")


def _expected_shapes(h: GGUFHeader) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Row-major (PyTorch) shapes of the tensors of the known decoder layouts."""
    d, v = h.hidden_size, h.vocab_size
    hp = h.hparams
    heads = hp.get("attention.head_count", (h.n_heads,) * h.n_layers)
    ffs = hp.get("feed_forward_length", (h.intermediate_size,) * h.n_layers)
    ff_exp = hp.get("expert_feed_forward_length", (0,) * h.n_layers)
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {
        "token_embd.weight": ((v, d),),
        "output.weight": ((v, d),),
        "output_norm.weight": ((d,),),
    }
    for i in range(h.n_layers):
        q, kv, o = heads[i] * h.head_dim, h.kv_heads_per_layer[i] * h.head_dim, heads[i] * h.value_dim
        kv_v = h.kv_heads_per_layer[i] * h.value_dim
        ff, e, fe = ffs[i], h.n_experts, ff_exp[i]
        per_block = {
            "attn_norm.weight": (d,), "ffn_norm.weight": (d,), "post_attention_norm.weight": (d,),
            "post_ffw_norm.weight": (d,),
            "attn_q.weight": (q, d), "attn_k.weight": (kv, d), "attn_v.weight": (kv_v, d),
            "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv_v,),
            "attn_output.weight": (d, o), "attn_qkv.weight": (q + kv + kv_v, d),
            "attn_q_norm.weight": (h.head_dim,), "attn_k_norm.weight": (h.head_dim,),
            "ffn_gate.weight": (ff, d), "ffn_down.weight": (d, ff),
            "ffn_up.weight": (2 * ff, d) if h.architecture == "phi3" else (ff, d),
        }
        if e:
            per_block.update({
                "ffn_gate_inp.weight": (e, d), "ffn_gate_exps.weight": (e, fe, d),
                "ffn_up_exps.weight": (e, fe, d), "ffn_down_exps.weight": (e, d, fe),
            })
        for name, shape in per_block.items():
            shapes[f"blk.{i}.{name}"] = (shape,)
    return shapes

