"""Opening a compressed-tensors checkpoint for chat keeps its Linears packed:
logits agree with transformers' dequantizing load within the activation dtype's
rounding, on tiny models of several families; what the loader does not take
loads dense as before; the live-agreement scorer works with a packed pane."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from families import demo_tokenizer, tiny_folder
from packed_helpers import rtn_records, write_rtn_checkpoint

from qdesk.core.chat.hf_backend import HFBackend, HFBatch
from qdesk.core.models import open_model
from qdesk.core.packed import QuantLinear

PROMPT = list(range(300, 440))  # 140 tokens: prefill runs the dequantizing (many-row) path


@pytest.fixture(scope="module")
def tok():
    return demo_tokenizer()


def _dense_source(tmp_path, family, seed=0):
    from transformers import AutoModelForCausalLM

    folder = tiny_folder(family, tmp_path / f"{family}-dense", seed=seed)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _transformers_load(path, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()


def _decode(backend, path=None, steps=4) -> tuple[np.ndarray, list[int]]:
    """Prefill logits then a few decode steps' logits (one row each), feeding
    ``path`` (or, without one, each step's greedy token) so that models compared
    on it see the same prefixes even where their top two nearly tie."""
    rows = [backend.prefill(PROMPT)]
    fed = []
    for i in range(steps):
        fed.append(path[i] if path is not None else int(np.argmax(rows[-1])))
        rows.append(backend.feed([fed[-1]]))
    return np.stack(rows), fed


def _check_against_transformers(ckpt, packed, dtype=torch.bfloat16):
    """The packed model's error against transformers' dense float32 load is of
    the size of a dense bf16 model's error (same rounding, other order)."""
    exact = HFBackend(_transformers_load(ckpt, torch.float32), None, "f32", 512)
    want, path = _decode(exact)
    dense16 = HFBackend(_transformers_load(ckpt, dtype), None, "bf16", 512)
    got, _ = _decode(packed.backend, path)
    dense16_rows, _ = _decode(dense16, path)
    base = np.abs(dense16_rows - want).max()
    err = np.abs(got - want).max()
    assert err <= 3 * base + 1e-3 * np.abs(want).max(), (err, base)
    return err, base


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "phi3"])
def test_families_load_packed_with_transformers_logits(tmp_path, tok, family):
    source = _dense_source(tmp_path, family)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / f"{family}-q4", bits=4, group=32)
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    q = packed.facts.quantization
    n_linears = len(rtn_records(source, 4, 32, True))
    assert q["runtime"] == f"packed ({n_linears} int4)" and q["packed_layers"] == n_linears
    layers = [m for m in packed.model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == n_linears and not any(
        isinstance(m, torch.nn.Linear) and m.weight.dim() == 2 and m.in_features == 64
        for n, m in packed.model.named_modules() if "lm_head" not in n
    )
    _check_against_transformers(ckpt, packed)
    assert packed.facts.memory_bytes == packed.model.get_memory_footprint()
    # the decoder Linears: int4 codes and the op's scales, under half their bf16 size
    held = sum(b.numel() * b.element_size() for m in layers for b in m.buffers())
    dense = sum(m.weight.numel() * 2 for n, m in source.named_modules()
                if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    assert held < 0.5 * dense


@pytest.mark.parametrize("bits,group,symmetric,float_zero,kernel", [
    (4, 64, False, False, "int4"),   # packed integer zero points
    (3, -1, True, False, "int4"),    # per channel, 3-bit codes in 4-bit planes
    (8, -1, True, False, "int8"),    # torch's int8 op
    (8, 32, False, False, "int4"),   # two 4-bit planes
    (4, 32, False, True, "int4"),    # HQQ's float zero (naive-quantized)
])
def test_formats_load_packed(tmp_path, tok, bits, group, symmetric, float_zero, kernel):
    source = _dense_source(tmp_path, "llama", seed=bits)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=bits, group=group,
                                symmetric=symmetric, float_zero=float_zero)
    fmt = json.loads((ckpt / "config.json").read_text())["quantization_config"]["format"]
    assert fmt == ("naive-quantized" if float_zero else "pack-quantized")
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    assert packed.facts.quantization["runtime"] == f"packed (14 {kernel})"
    _check_against_transformers(ckpt, packed)


def test_mixed_bits_in_one_checkpoint(tmp_path, tok):
    source = _dense_source(tmp_path, "llama", seed=3)
    records = rtn_records(source, 4, 32, True)
    records.update({k: v for k, v in rtn_records(source, 8, -1, False).items() if "self_attn" in k})
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", records=records)
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    assert packed.facts.quantization["runtime"] == "packed (6 int4, 8 int8)"
    _check_against_transformers(ckpt, packed)


def test_a_checkpoint_from_elsewhere_loads_packed_too(tmp_path, tok):
    source = _dense_source(tmp_path, "llama", seed=4)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=64)
    (ckpt / "qdesk.json").unlink()  # a compressed-tensors folder, e.g. from llm-compressor
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    assert packed.facts.source == "hf"
    assert packed.facts.quantization["runtime"] == "packed (14 int4)"


def test_what_the_loader_does_not_take_loads_dense_and_says_why(tmp_path, tok, caplog):
    from safetensors.torch import load_file, save_file

    source = _dense_source(tmp_path, "llama", seed=5)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=64)
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors["model.layers.0.extra_gate"] = torch.ones(4)  # a tensor the model does not have
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="qdesk.core.packed.loading"):
        loaded = open_model(str(ckpt), backend="hf", dtype="float32")
    assert "runtime" not in loaded.facts.quantization
    assert any("loading dequantized (tensors the model does not have "
               "(model.layers.0.extra_gate" in r.message for r in caplog.records)
    assert not any(isinstance(m, QuantLinear) for m in loaded.model.modules())


def test_packed_reference_batches_and_a_packed_pane_is_scored(tmp_path, tok):
    from qdesk.core.chat.events import SamplingConfig
    from qdesk.core.compare.live import ComparedSession, ComparedToken

    source = _dense_source(tmp_path, "llama", seed=6)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=32)
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    # HFBatch over a packed model: rows through the int4 op, as single steps
    a, b = packed.backend, packed.backend.fork()
    a.prefill(PROMPT[:9])
    b.prefill(PROMPT[:13])
    single = [a.fork(), b.fork()]
    single[0].prefill(PROMPT[:9] + [5])
    single[1].prefill(PROMPT[:13] + [7])
    want = [single[0].feed([11]), single[1].feed([12])]
    batch = HFBatch([a, b])
    batch.step([5, 7])
    got = batch.step([11, 12])
    for g, w in zip(got, want):
        assert int(np.argmax(g)) == int(np.argmax(w))
        assert np.abs(g - w).max() <= 0.05 * np.abs(w).max()  # bf16, other padding
    batch.leave()
    # a dense reference scoring a packed pane, live
    dense = open_model(str(tiny_folder("llama", tmp_path / "ref", seed=6)), backend="hf")
    session = ComparedSession(dense.backend, [packed.backend], SamplingConfig(max_new_tokens=6),
                              reuse_reference=False)
    scored = [e.agreement for e in session.send("Hello there") if isinstance(e, ComparedToken)
              and e.pane == 1]
    session.close_scorers()
    assert scored and all(a is not None and a.kld >= 0.0 for a in scored)


@pytest.mark.parametrize("change,reason", [
    ({"weights": {"actorder": "weight"}}, "dynamic, act-order or block quantization"),
    ({"weights": {"type": "float", "num_bits": 8}}, "float weights"),
    ({"weights": {"strategy": "block"}}, "strategy block"),
    ({"input_activations": {"num_bits": 8}}, "quantizes activations"),
    ({"format": "marlin-24"}, "format marlin-24"),
    ({"targets": ["re:.*nothing$"]}, "no Linear layer matches"),
])
def test_config_groups_the_loader_does_not_take(tmp_path, tok, caplog, change, reason):
    from transformers import AutoConfig

    from qdesk.core.models.device import DecodeShape
    from qdesk.core.models.safetensors_check import read_safetensors_header
    from qdesk.core.packed import plan_packed_load

    source = _dense_source(tmp_path, "llama", seed=7)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=64)
    raw = json.loads((ckpt / "config.json").read_text())
    group = raw["quantization_config"]["config_groups"]["group_0"]
    for key, value in change.items():
        group[key] = {**group[key], **value} if isinstance(value, dict) and group.get(key) else value
    files = [ckpt / "model.safetensors"]
    args = (ckpt, files, read_safetensors_header(files[0]), raw, AutoConfig.from_pretrained(ckpt),
            DecodeShape(64, 128, 2, 32, len(tok)))
    with caplog.at_level(logging.INFO, logger="qdesk.core.packed.loading"):
        assert plan_packed_load(*args) is None
    assert any(reason in r.message for r in caplog.records), [r.message for r in caplog.records]
