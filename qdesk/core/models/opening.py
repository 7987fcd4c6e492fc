"""Opening a model: a ``ModelRef`` -> a ready backend, after checking that it
fits in memory. The transformers backend loads HF folders, qdesk checkpoints and
the dense copies of GGUF files; the llama.cpp backend loads GGUF files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.models.facts import LoadedModel, ModelFacts
from qdesk.core.models.refs import ModelRef, resolve
from qdesk.core.paths import data_dir

log = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "llamacpp")


ProgressFn = Callable[[str, int, int], None]


def local_folder(ref: ModelRef, progress: ProgressFn | None = None) -> Path:
    """The folder or file a reference loads from, made or downloaded if need be."""
    if ref.kind == "demo":
        from qdesk.core.models.demo import ensure_demo_model

        return ensure_demo_model(progress)
    if ref.kind == "hub":
        from qdesk.core.models.hub import download

        return download(ref.hub_id, ref.revision, progress)
    return ref.path


def open_model(
    ref: ModelRef | str,
    backend: str = "auto",
    progress: ProgressFn | None = None,
    dtype: str | None = None,
    n_ctx: int | None = None,
    trust_remote_code: bool = False,
    int8_activations: bool = False,
) -> LoadedModel:
    """Load a model on a backend: "hf" (transformers), "llamacpp", or "auto"
    (llama.cpp for a .gguf file, transformers for everything else).

    ``int8_activations``: a packed checkpoint on qdesk's CPU kernel decodes with
    int8-rounded activations (``native_kernels.use_int8_activations``: faster,
    not the checkpoint's exact product); the facts say so. No effect elsewhere."""
    if isinstance(ref, str):
        ref = resolve(ref)
    if backend not in BACKENDS:
        raise BadInput(f"unknown backend '{backend}' (choose {', '.join(BACKENDS)})")
    if backend == "auto":
        backend = "llamacpp" if ref.kind == "gguf" else "hf"
    if backend == "llamacpp" and ref.kind == "demo":
        from qdesk.core.models.demo import demo_gguf_path

        # The demo on llama.cpp is the shipped Q4_1 file itself.
        ref = ModelRef(ref.text, "gguf", path=demo_gguf_path())
    if backend == "llamacpp":
        if ref.kind != "gguf":
            raise BadInput(f"{ref.text}: the llama.cpp backend needs a .gguf file")
        return _open_llamacpp(ref, n_ctx, progress)
    path = local_folder(ref, progress)
    if ref.kind == "gguf":
        path = _dense_copy_of_gguf(ref.path, progress)
    loaded = _open_hf(ref, path, dtype, trust_remote_code)
    if ref.kind in ("gguf", "demo", "hf"):
        loaded.facts = _with_quantized_source(loaded.facts, path)
    if int8_activations:
        loaded.set_int8_activations(True)  # the window's switch, taken at once
    return loaded


# Bumped when the dense copy of a GGUF file changes, so older copies are remade.
DENSE_COPY_FORMAT = 2


def _dense_copy_of_gguf(gguf_path: Path, progress: ProgressFn | None) -> Path:
    """A GGUF file for the transformers backend: dequantized once into a dense folder,
    keyed by the file's identity (path, size, modification time)."""
    from qdesk.core.models.dense_folder import materialize_gguf

    st = gguf_path.stat()
    identity = f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{DENSE_COPY_FORMAT}"
    key = hashlib.sha256(identity.encode())
    target = data_dir() / "converted" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"
    return materialize_gguf(gguf_path, target, progress)


def _with_quantized_source(facts: ModelFacts, path: Path) -> ModelFacts:
    """Say so in the facts when a dense folder was dequantized from a quantized GGUF."""
    import dataclasses

    from qdesk.core.models.dense_folder import quantized_source

    note = quantized_source(path)
    return dataclasses.replace(facts, derived_from_quantized=note) if note else facts


def _check_fits(name: str, need: int, device: str) -> None:
    from qdesk.core.models.device import available_memory_bytes, gib

    have = available_memory_bytes(device)
    if need > have:
        raise OutOfResources(
            f"{name} needs about {gib(need)} of {device} memory to load; {gib(have)} is free"
        )


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if list(path.glob("*.bin")) or list(path.glob("*.pt")) or list(path.glob("*.pth")):
            raise BadInput(
                f"{path}: only pickle weights (.bin/.pt) here; qdesk loads safetensors "
                "only, since unpickling can run code"
            )
        raise BadInput(f"{path}: no .safetensors weights in this folder")
    return files


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path / 'config.json'}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{path / 'config.json'}: not a JSON object")
    return config


def check_model_folder(text: str, trust_remote_code: bool = False) -> None:
    """Every check ``open_model`` makes on a Hugging Face or qdesk folder before
    it loads anything (config, architecture, sizes, weight headers and index,
    qdesk.json); raises BadInput. The fuzzer's entry point."""
    ref = resolve(text)
    if ref.kind not in ("hf", "qdesk"):
        raise BadInput(f"{text}: not a model folder")
    raw, config, files, records, quant, shape = _inspect_hf(ref, ref.path, trust_remote_code)
    if ref.kind == "qdesk":
        _qdesk_quantization(ref.path, quant, 0)


def _inspect_hf(ref: ModelRef, path: Path, trust_remote_code: bool):
    """(raw config, config, weight files, tensor records, quantization_config,
    DecodeShape), every one checked; nothing is allocated from them yet."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from qdesk.core.models.safetensors_check import read_safetensors_header
    from qdesk.core.models.weight_index import check_weight_index

    raw = _read_config(path)
    _check_architecture(ref, raw, trust_remote_code, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise BadInput(f"{ref.text}: config.json cannot be used ({_one_line(e)})") from None
    files = _weight_files(path)
    headers = {f.name: read_safetensors_header(f) for f in files}
    check_weight_index(path, headers)  # before transformers follows it anywhere
    records = {}
    for h in headers.values():
        records.update(h)
    quant = raw.get("quantization_config") or {}
    if not isinstance(quant, dict):
        raise BadInput(f"{path / 'config.json'}: quantization_config is not a table")
    return raw, config, files, records, dict(quant), _decode_shape(path, config, records)


def _open_hf(ref: ModelRef, path: Path, dtype: str | None, trust_remote_code: bool) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    from qdesk.core.chat.hf_backend import HFBackend
    from qdesk.core.chat.tokenizers import HFChatTokenizer
    from qdesk.core.models.device import choose_placement
    from qdesk.core.models.tokenizer_pool import load_tokenizer
    from qdesk.core.models.weight_index import refuse_missing_tensors

    raw, config, files, records, quant, shape = _inspect_hf(ref, path, trust_remote_code)
    packed = _packed_plan(path, files, records, raw, config, shape, dtype, trust_remote_code)
    placement = packed.placement if packed else choose_placement(shape, dtype)
    n_params = sum(_numel(r["shape"]) for r in records.values()) - _tied_copy(records, config)
    if ref.kind == "qdesk":
        quant, n_params = _qdesk_quantization(path, quant, n_params)
    bytes_per = 2 if placement.dtype in ("bfloat16", "float16") else 4
    # A qdesk checkpoint is dequantized while loading: it takes dense memory.
    weights = (sum(os.path.getsize(f) for f in files) if quant and ref.kind != "qdesk"
               else n_params * bytes_per)
    if packed:  # its Linears stay packed (qdesk.core.packed)
        weights = packed.memory_bytes
    # Besides the weights: the logits of one 512-token scoring forward (qdesk
    # compare's default window) and their float32 copy, 1 GiB at Gemma 3's 262k
    # vocabulary, 0.2 at the demo's 49k.
    logits = 2 * 512 * shape.vocab * 4
    _check_fits(ref.display_name, int(weights * 1.15) + logits + 256 * 2**20, placement.device)

    try:
        tokenizer = load_tokenizer(path, trust_remote_code)
    except Exception as e:
        raise BadInput(f"{ref.text}: its tokenizer cannot be loaded ({_one_line(e)})") from None
    try:
        if packed:
            model, missing = packed.load(), ()
        else:
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=getattr(torch, placement.dtype),
                device_map=placement.device,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                output_loading_info=True,
            )
            missing = info.get("missing_keys") or ()
    except torch.OutOfMemoryError:
        raise OutOfResources(f"{ref.text}: out of {placement.device} memory while loading") from None
    except Exception as e:
        raise BadInput(
            f"{ref.text}: transformers cannot load it ({type(e).__name__}: {_one_line(e)})"
        ) from None
    refuse_missing_tensors(path, missing)  # never a partly random model
    model.eval()
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    gen_eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
    chat_tok = HFChatTokenizer(tokenizer, gen_eos)
    n_ctx = int(getattr(config, "max_position_embeddings", 0) or 4096)
    name = ref.display_name
    facts = ModelFacts(
        name=name,
        source=ref.kind,
        path=str(path),
        backend="hf",
        architecture=(config.architectures or [type(model).__name__])[0],
        parameters=n_params,
        layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        hidden_size=shape.hidden,
        vocab_size=int(getattr(config, "vocab_size", 0) or len(tokenizer)),
        context_length=n_ctx,
        dtype=placement.dtype,
        device=placement.device,
        memory_bytes=int(model.get_memory_footprint()),
        dtype_reason=placement.reason,
        quantization={**quant, **packed.facts()} if packed else quant,
    )
    return LoadedModel(HFBackend(model, chat_tok, name, n_ctx), facts, model, tokenizer)


# Far beyond any released model: a config past these is damaged or hostile, and
# the CPU dtype timing would allocate its matrices.
_SIZE_LIMITS = {"hidden_size": 1 << 17, "intermediate_size": 1 << 20, "num_hidden_layers": 4096,
                "num_attention_heads": 1 << 12, "num_key_value_heads": 1 << 12, "head_dim": 1 << 12,
                "vocab_size": 1 << 24}


def _decode_shape(path: Path, config, records: dict):
    """The config's sizes, checked before anything is allocated from them: each
    a positive integer within ``_SIZE_LIMITS``, and together no larger than the
    weight files can hold (16x their elements: a 2-bit packed checkpoint)."""
    from qdesk.core.models.device import DecodeShape

    where = path / "config.json"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    sizes = {}
    for key, limit in _SIZE_LIMITS.items():
        value = getattr(text, key, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            raise BadInput(f"{where}: {key} is {str(value)[:40]!r}, not an integer in 1..{limit}")
        sizes[key] = value
    hidden = sizes.get("hidden_size", 0)
    n_heads = sizes.get("num_attention_heads", 1)
    head_dim = sizes.get("head_dim") or max(1, hidden // n_heads)
    shape = DecodeShape(
        hidden=hidden, intermediate=sizes.get("intermediate_size") or hidden * 4,
        layers=sizes.get("num_hidden_layers", 1),
        kv_width=sizes.get("num_key_value_heads", n_heads) * head_dim,
        vocab=sizes.get("vocab_size") or 32000,
    )
    described = sum(i * o * n for i, o, n in shape.products())
    stored = sum(_numel(r["shape"]) for r in records.values())
    if described > 16 * stored + (1 << 24):
        raise BadInput(f"{where}: its sizes describe {described / 1e9:.3g} billion parameters, far "
                       f"more than the weight files hold ({stored / 1e9:.3g} billion values)")
    return shape


def _packed_plan(path, files, records, raw, config, shape, dtype, trust_remote_code):
    """A compressed-tensors checkpoint keeps its Linears packed (QuantLinear);
    None loads it dequantized, as before."""
    if trust_remote_code or not raw.get("quantization_config"):
        return None
    from qdesk.core.packed import plan_packed_load

    return plan_packed_load(path, files, records, raw, config, shape, dtype)


def _check_architecture(ref: ModelRef, raw: dict, trust_remote_code: bool, known) -> None:
    """A model_type transformers has a causal LM for, or remote code the user
    allowed; otherwise one line naming the architecture and why."""
    model_type = raw.get("model_type")
    if model_type is not None and (not isinstance(model_type, str) or len(model_type) > 100):
        raise BadInput(f"{ref.text}: config.json's model_type is {str(model_type)[:40]!r}, "
                       "not an architecture name")
    if model_type in known:
        return
    remote = raw.get("auto_map")
    if remote and trust_remote_code:
        return
    import transformers

    names = raw.get("architectures")
    arch = f" ({', '.join(map(str, names))})" if isinstance(names, list) and names else ""
    if remote:
        raise BadInput(
            f"{ref.text}: architecture '{model_type}'{arch} is not part of transformers "
            f"{transformers.__version__}; the model ships its own Python code (auto_map), which "
            "qdesk runs only when asked (--trust-remote-code of info, chat and compare), for "
            "models you trust"
        )
    if not model_type:
        raise BadInput(f"{ref.text}: config.json names no model_type (not a transformers model)")
    raise BadInput(
        f"{ref.text}: unsupported architecture '{model_type}'{arch}: transformers "
        f"{transformers.__version__} has no causal language model of that type"
    )


def _one_line(e: BaseException, limit: int = 300) -> str:
    """A library's exception text as one line (errors are one line on stderr)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tied_copy(records: dict, config) -> int:
    """Parameters of an output head stored beside the embedding it is tied to
    (some exporters write both): loaded once, counted once."""
    if not getattr(config, "tie_word_embeddings", False) or "lm_head.weight" not in records:
        return 0
    head = records["lm_head.weight"]["shape"]
    if any(n != "lm_head.weight" and "embed" in n and r["shape"] == head
           for n, r in records.items()):
        return _numel(head)
    return 0


def _qdesk_quantization(path: Path, quant: dict, n_params: int) -> tuple[dict, int]:
    """What a qdesk checkpoint's qdesk.json says about its quantization."""
    where = path / "qdesk.json"
    try:
        recipe = json.loads(where.read_text(encoding="utf-8"))
        config = recipe["config"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BadInput(f"{where}: not a readable qdesk recipe ({e})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{where}: 'config' is not a table")
    for key, types in (("method", str), ("bits", int), ("group_size", int), ("symmetric", bool)):
        value = config.get(key)
        if value is not None and (not isinstance(value, types)
                                  or (types is int and isinstance(value, bool))):
            raise BadInput(f"{where}: config.{key} is {str(value)[:40]!r}, not a {types.__name__}")
    for key, types in (("plan", dict), ("bits_per_weight", (int, float)), ("parameters", int),
                       ("calibration", (dict, str)), ("source", (dict, str)), ("self_check", dict)):
        value = recipe.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise BadInput(f"{where}: {key} is {str(value)[:40]!r}, of the wrong type")
    if not quant:
        raise BadInput(f"{path}: config.json has no quantization_config")
    summary = {
        "format": f"compressed-tensors {quant.get('format', '')}".strip(),
        "method": config.get("method"),
        "bits": config.get("bits"),
        "group_size": config.get("group_size"),
        "symmetric": config.get("symmetric"),
        "plan": (recipe.get("plan") or {}).get("name"),
        "bits_per_weight": recipe.get("bits_per_weight"),
        "calibration": recipe.get("calibration"),
        "source": recipe.get("source"),
        "self_check": recipe.get("self_check"),  # the job's end-to-end check, if it ran
    }
    return summary, int(recipe.get("parameters") or n_params)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _open_llamacpp(ref: ModelRef, n_ctx: int | None, progress: ProgressFn | None = None) -> LoadedModel:
    from qdesk.core.chat.llamacpp_backend import (
        DEFAULT_N_CTX,
        LlamaCppBackend,
        gpu_offload_available,
    )
    from qdesk.core.models.gguf_header import read_header
    from qdesk.core.models.gguf_probe import ensure_probed

    header = read_header(ref.path)  # validates the untrusted header before llama.cpp reads it
    ctx = n_ctx or min(header.context_length, DEFAULT_N_CTX)
    kv_bytes = header.kv_cache_bytes(ctx)
    file_bytes = os.path.getsize(ref.path)
    device = "cuda" if gpu_offload_available() else "cpu"
    _check_fits(ref.display_name, file_bytes + kv_bytes + 128 * 2**20, device)
    n_params = header.n_parameters
    types = sorted(set(header.tensor_types.values()))
    # A test load in a child process first: a file that crashes llama.cpp ends that
    # process, not this one.
    ensure_probed(ref.path, gpu_offload=device == "cuda", progress=progress)
    backend = LlamaCppBackend(ref.path, ref.display_name, header.chat_template, n_ctx=ctx)
    facts = ModelFacts(
        name=ref.display_name,
        source=ref.kind,
        path=str(ref.path),
        backend="llamacpp",
        architecture=header.architecture,
        parameters=n_params,
        layers=header.n_layers,
        hidden_size=header.hidden_size,
        vocab_size=header.vocab_size,
        context_length=ctx,
        dtype="/".join(types),
        device=device,
        memory_bytes=file_bytes + kv_bytes,
        dtype_reason="GGUF tensor types",
        quantization={"format": "gguf", "bits_per_weight": round(8 * file_bytes / n_params, 2)},
    )
    return LoadedModel(backend, facts)
