"""Materialize a GGUF file as a plain Hugging Face folder (dense BF16).

The folder holds sharded BF16 ``*.safetensors`` under transformers' tensor
names, ``config.json`` (``gguf_config``: what llama.cpp computes),
``generation_config.json``, the tokenizer with its chat template (transformers'
GGUF tokenizer conversion), and ``qdesk_source.json`` (which file it came from
and its GGML types). Later loads are ordinary transformers loads with plain
``nn.Linear`` weights.

Tensors go through transformers' own GGUF name map and tensor processors
(``get_gguf_hf_weights_map``, ``TENSOR_PROCESSORS``: the q/k row permutation of
llama, Gemma's ``1 + w`` norms, stacked experts) and gguf-py's dequantizers,
so the weights are bit-identical to ``from_pretrained(..., gguf_file=...)``.
Unlike that loader, which holds every tensor before the model takes them, this
streams: one layer's tensors at a time, written out in shards, so memory stays
near one shard rather than twice the model.

Everything is written to a temporary folder beside the target and renamed at
the end: an interrupted run leaves nothing half-made.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

from qdesk.core.atomic import clean_stale_partials, partial_name, publish, remove
from qdesk.core.errors import BadInput, OutOfResources, is_disk_full
from qdesk.core.models.gguf_config import Unsupported, hf_config
from qdesk.core.models.gguf_header import GGUFHeader, read_header

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

SHARD_BYTES = 2 * 2**30
SOURCE_FILE = "qdesk_source.json"
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def materialize_gguf(gguf_path: Path, target: Path, progress: ProgressFn | None = None) -> Path:
    """Write ``target`` as a dense HF folder made from ``gguf_path``; return target.

    If ``target`` already exists it is returned as it is (another run made it).
    """
    if target.is_dir() and (target / "config.json").is_file():
        return target
    header = read_header(gguf_path)
    try:
        config = hf_config(header)
    except Unsupported as e:
        raise BadInput(f"{gguf_path}: the transformers backend cannot use this file: {e}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # the data folder is a file, read-only, ...
        raise BadInput(f"cannot make {target.parent} for the dense copy of {gguf_path.name} "
                       f"({e.strerror or e}); set QDESK_DATA_DIR to a writable folder") from None
    clean_stale_partials(target.parent)
    tmp = partial_name(target)
    remove(tmp)
    tmp.mkdir()
    try:
        _write_weights(header, config, tmp, progress)
        _write_configs(header, config, tmp)
        if progress:
            progress("tokenizer", 0, 1)
        _write_tokenizer(header, tmp)
        if progress:
            progress("tokenizer", 1, 1)
        (tmp / SOURCE_FILE).write_text(json.dumps(source_record(header), indent=2))
        try:
            publish(tmp, target)  # never over a folder that appeared meanwhile
        except FileExistsError:
            if not (target / "config.json").is_file():
                raise BadInput(f"{target} appeared while its dense copy was being written and "
                               "is not one; move it away and try again") from None
            log.info("%s was made by another run meanwhile", target)
    except Exception as e:
        if is_disk_full(e):  # safetensors, the tokenizers library or our own writes
            raise OutOfResources(
                f"disk full while writing the dense copy of {gguf_path}: it needs about "
                f"{_dense_bytes(header) / 2**30:.1f} GiB free in {target.parent}") from None
        if isinstance(e, OSError):
            raise BadInput(f"cannot write {target}: {e.strerror or e}") from None
        raise
    finally:
        remove(tmp)
    return target


def _dense_bytes(h: GGUFHeader) -> int:
    """BF16 bytes of the file's parameters (the dense copy's weights)."""
    return 2 * int(h.n_parameters or 0) or h.path.stat().st_size * 4


def source_record(h: GGUFHeader) -> dict:
    """What ``qdesk_source.json`` says about the file a dense copy came from."""
    counts: dict[str, int] = {}
    for t in h.tensor_types.values():
        counts[t] = counts.get(t, 0) + 1
    st = h.path.stat()
    return {
        "converted_from": str(h.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "architecture": h.architecture, "gguf_types": counts,
        "quantized_types": h.quantized_types,
    }


def quantized_source(folder: Path) -> str | None:
    """"Q4_1 GGUF <file>" when ``folder`` is a dense copy of a quantized GGUF file, else None.

    Reads ``qdesk_source.json``; a folder without one (any ordinary HF folder) is None.
    """
    from qdesk.core.models.gguf_header import DENSE_TYPES

    try:
        record = json.loads((Path(folder) / SOURCE_FILE).read_text(encoding="utf-8"))
        types = record["gguf_types"]
        name = Path(record["converted_from"]).name
        quantized = [t for t in sorted(types, key=lambda t: -int(types[t])) if t not in DENSE_TYPES]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not quantized:
        return None
    return f"{'/'.join(quantized)} GGUF {name}"


def no_weight_init():
    """transformers' switch that skips initialising weights. On the meta device
    there are no values to initialise, yet the initialisers still ran through
    torch's Python decompositions: 1.3 s for the demo's skeleton the first time,
    holding the GIL in short bursts that froze the window (0.02 s without)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers before 5
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _meta_model(config: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    options = dict(config)
    model_type = options.pop("model_type")
    with torch.device("meta"), no_weight_init():
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **options))


def _write_weights(h: GGUFHeader, config: dict, out: Path, progress: ProgressFn | None) -> None:
    import numpy as np
    import torch
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    model = _meta_model(config)
    processor = TENSOR_PROCESSORS.get(h.architecture, TensorProcessor)(config=config)
    key_map = _weights_map(get_gguf_hf_weights_map, model, processor)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {}) if config["tie_word_embeddings"] else set()
    wanted = {name: tuple(p.shape) for name, p in model.state_dict().items() if name not in tied}
    del model

    records = list(h.file.tensors)
    last_of_block: dict[int, int] = {}
    for i, t in enumerate(records):
        m = _BLOCK.match(t.name)
        last_of_block[int(m.group(1)) if m else -1 - i] = i
    flush_after = {i: b for b, i in last_of_block.items()}

    writer = _ShardWriter(out, total=2 * sum(wanted_numel for wanted_numel in map(_numel, wanted.values())))
    parsed: dict = {"tensors": {}}  # where transformers' processors put what they build themselves
    done: set[str] = set()
    data = np.memmap(h.path, dtype=np.uint8, mode="r")
    for i, t in enumerate(records):
        weights = _dequantize(data, h, t)
        result = processor.process(weights=weights, name=t.name, tensor_key_mapping=key_map,
                                   parsed_parameters=parsed)
        if result.name is not None:
            if result.name not in key_map:
                raise BadInput(f"{h.path}: tensor {t.name} has no place in a {config['architectures'][0]}")
            parsed["tensors"][key_map[result.name]] = torch.from_numpy(np.array(result.weights))
        if i in flush_after:
            for name, tensor in parsed["tensors"].items():
                if name not in wanted:
                    raise BadInput(f"{h.path}: {name} has no place in a {config['architectures'][0]}")
                if tuple(tensor.shape) != wanted[name]:
                    raise BadInput(
                        f"{h.path}: {name} has shape {tuple(tensor.shape)}, the model needs {wanted[name]}"
                    )
                writer.add(name, tensor.to(torch.bfloat16).contiguous())
                done.add(name)
            parsed["tensors"].clear()
        if progress:
            progress("dequantize", i + 1, len(records))
    del data
    missing = sorted(set(wanted) - done)
    if missing:
        raise BadInput(f"{h.path}: the GGUF file lacks {missing[0]}" +
                       (f" and {len(missing) - 1} more tensors" if len(missing) > 1 else ""))
    writer.close()


def _weights_map(get_map, model, processor) -> dict[str, str]:
    """transformers' GGUF -> HF name map, with gguf-py's name table built once.

    ``get_gguf_hf_weights_map`` recurses into every submodule and rebuilds
    gguf-py's ``TensorNameMap`` at each level: 397 times for the demo, 12 of
    the 21 s of its dense copy. The table depends only on (architecture, layer
    count), so it is memoized for the duration of the call.
    """
    import functools

    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        return get_map(model, processor)
    finally:
        gguf.get_tensor_name_map = original


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dequantize(data, h: GGUFHeader, t):
    """The tensor ``t`` as float32 numpy, in PyTorch shape order."""
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType(t.type_id)
    block, type_size = GGML_QUANT_SIZES[qtype]
    start = h.file.data_start + t.offset
    raw = data[start : start + t.n_bytes].reshape(*t.shape[:-1], t.shape[-1] // block * type_size)
    try:
        return quants.dequantize(raw, qtype).reshape(t.shape)
    except (NotImplementedError, ValueError) as e:
        raise BadInput(f"{h.path}: cannot decode tensor {t.name} ({t.type_name}: {e})") from None


class _ShardWriter:
    """Collects tensors and writes safetensors shards of about SHARD_BYTES each,
    with transformers' index file when there is more than one."""

    def __init__(self, out: Path, total: int) -> None:
        self.out = out
        self.single = total <= SHARD_BYTES
        self.pending: dict = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor) -> None:
        self.pending[name] = tensor
        nbytes = tensor.numel() * tensor.element_size()
        self.pending_bytes += nbytes
        self.total += nbytes
        if not self.single and self.pending_bytes >= SHARD_BYTES:
            self._write()

    def _write(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        path = self.out / ("model.safetensors" if self.single else f"part-{len(self.shards)}.safetensors")
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        self._write()
        if self.single:
            return
        n = len(self.shards)
        weight_map = {}
        for i, (path, names) in enumerate(self.shards):
            final = path.with_name(f"model-{i + 1:05d}-of-{n:05d}.safetensors")
            path.rename(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _write_configs(h: GGUFHeader, config: dict, out: Path) -> None:
    from transformers import AutoConfig

    options = dict(config)
    AutoConfig.for_model(options.pop("model_type"), **options).save_pretrained(str(out))
    eos = {h.eos_token_id} - {None}
    eot = h.file.metadata.get("tokenizer.ggml.eot_token_id") if h.file else None
    if eot is not None:
        eos.add(int(eot.data))  # llama.cpp ends a reply at end-of-turn too
    gen = {"bos_token_id": h.bos_token_id,
           "eos_token_id": sorted(eos)[0] if len(eos) == 1 else sorted(eos) or None}
    if config.get("pad_token_id") is not None:
        gen["pad_token_id"] = config["pad_token_id"]
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))


def _write_tokenizer(h: GGUFHeader, out: Path) -> None:
    # transformers converts a GGUF vocabulary (BPE or SentencePiece, with the
    # file's pre-tokenizer and special tokens) into a fast tokenizer; the chat
    # template comes along from the GGUF metadata. TokenizersBackend directly,
    # not AutoTokenizer: the latter first rebuilds the model config with gguf-py's
    # reader (8.8 s for the demo's header, against 0.7 s for the tokenizer itself).
    from transformers import TokenizersBackend

    try:
        tok = TokenizersBackend.from_pretrained(str(h.path.parent), gguf_file=h.path.name)
    except Exception as e:
        raise BadInput(f"{h.path}: cannot read its tokenizer ({type(e).__name__}: {e})") from None
    if h.chat_template and not getattr(tok, "chat_template", None):
        tok.chat_template = h.chat_template
    tok.save_pretrained(str(out))
    # Loading a folder, transformers picks the tokenizer class by model type, and
    # some classes rebuild their own pre-tokenizer over tokenizer.json (a reloaded
    # Qwen2Tokenizer split a qwen3 file's text differently from llama.cpp);
    # naming TokenizersBackend keeps the pipeline converted from this file.
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "TokenizersBackend"
    config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False), encoding="utf-8")
    _strip_after_specials_like_llama_cpp(h, out / "tokenizer.json")


def _strip_after_specials_like_llama_cpp(h: GGUFHeader, tokenizer_json: Path) -> None:
    """llama.cpp's vocabulary loader strips the whitespace after Phi-3's special
    tokens (``llama_vocab::impl::load``, chosen by a model name containing
    "phi-3" or "phi3"), as Phi-3's own tokenizer.json does; transformers' GGUF
    conversion leaves it out, so the two backends would tokenize a chat prompt
    differently ("<|end|>\n<|assistant|>"). Mark those tokens rstrip here too."""
    if not any(k in h.name.lower() for k in ("phi-3", "phi3")) or not tokenizer_json.is_file():
        return
    tokens = h.file.metadata.get("tokenizer.ggml.tokens")
    types = h.file.metadata.get("tokenizer.ggml.token_type")
    if tokens is None or types is None:
        return
    special = {t.decode("utf-8", "replace") for t, kind in zip(tokens.data, types.data)
               if kind in (2, 3, 4)}  # UNKNOWN, CONTROL, USER_DEFINED: llama.cpp's special cache
    strip = (special | {"</s>"}) - {"<unk>", "<s>", "<|endoftext|>"}
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    for added in data.get("added_tokens", []):
        if added.get("content") in strip:
            added["rstrip"] = True
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
