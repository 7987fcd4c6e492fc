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
from packed_helpers import (
    best_kernel,
    expected_kernels,
    rtn_records,
    runtime_of,
    write_rtn_checkpoint,
)

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
    assert q["runtime"].startswith(runtime_of({best_kernel(4, 32): n_linears}))
    assert q["packed_layers"] == n_linears
    layers = [m for m in packed.model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == n_linears and not any(
        isinstance(m, torch.nn.Linear) and m.weight.dim() == 2 and m.in_features == 64
        for n, m in packed.model.named_modules() if "lm_head" not in n
    )
    _check_against_transformers(ckpt, packed)
    assert packed.facts.memory_bytes == packed.model.get_memory_footprint()
    # the decoder Linears: int4 codes and the op's scales, under half their bf16 size
    buffers = {id(b): b for m in layers for b in m.buffers()}  # stacked siblings share theirs
    held = sum(b.numel() * b.element_size() for b in buffers.values())
    dense = sum(m.weight.numel() * 2 for n, m in source.named_modules()
                if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    assert held < 0.5 * dense


@pytest.mark.parametrize("bits,group,symmetric,float_zero", [
    (4, 64, False, False),   # packed integer zero points
    (3, -1, True, False),    # per channel, 3-bit codes
    (8, -1, True, False),    # per channel 8-bit (torch's int8 op where it is fast)
    (8, 32, False, False),   # grouped 8-bit (two 4-bit planes for torch's int4 op)
    (4, 32, False, True),    # HQQ's float zero (naive-quantized: never qdesk's kernel)
])
def test_formats_load_packed(tmp_path, tok, bits, group, symmetric, float_zero):
    source = _dense_source(tmp_path, "llama", seed=bits)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=bits, group=group,
                                symmetric=symmetric, float_zero=float_zero)
    fmt = json.loads((ckpt / "config.json").read_text())["quantization_config"]["format"]
    assert fmt == ("naive-quantized" if float_zero else "pack-quantized")
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    counts = expected_kernels(source, bits, group, symmetric, float_zero)
    assert sum(counts.values()) == 14
    assert packed.facts.quantization["runtime"].startswith(runtime_of(counts))
    if float_zero:
        assert "native" not in counts
    _check_against_transformers(ckpt, packed)


def test_mixed_bits_in_one_checkpoint(tmp_path, tok):
    source = _dense_source(tmp_path, "llama", seed=3)
    records = rtn_records(source, 4, 32, True)
    records.update({k: v for k, v in rtn_records(source, 8, -1, False).items() if "self_attn" in k})
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", records=records)
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    a, b = best_kernel(4, 32), best_kernel(8, -1, symmetric=False)
    counts = {a: 6} if a == b else {a: 6, b: 8}
    if a == b:
        counts[a] += 8
    assert packed.facts.quantization["runtime"].startswith(runtime_of(counts))
    _check_against_transformers(ckpt, packed)


def test_a_checkpoint_from_elsewhere_loads_packed_too(tmp_path, tok):
    source = _dense_source(tmp_path, "llama", seed=4)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=64)
    (ckpt / "qdesk.json").unlink()  # a compressed-tensors folder, e.g. from llm-compressor
    packed = open_model(str(ckpt), backend="hf", dtype="bfloat16")
    assert packed.facts.source == "hf"
    assert packed.facts.quantization["runtime"].startswith(
        runtime_of(expected_kernels(source, 4, 64)))


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


def _bf16_exact_source(tmp_path, seed):
    """A tiny llama whose weights are bfloat16 values (as a real checkpoint's):
    the writer then stores its embedding in 16 bits."""
    source = _dense_source(tmp_path, "llama", seed=seed)
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return source


def _load_unstacked(monkeypatch, ckpt):
    from qdesk.core.packed import loading

    with monkeypatch.context() as m:
        m.setattr(loading, "fuse_siblings", lambda model: 0)
        return open_model(str(ckpt), backend="hf", dtype="float32")


def test_float32_runs_on_qdesks_kernel_with_a_16bit_head(tmp_path, tok, monkeypatch):
    from qdesk.core.packed import native
    from qdesk.core.packed.native_kernels import Dense16Linear

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _bf16_exact_source(tmp_path, seed=8)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=32)
    packed = open_model(str(ckpt), backend="hf", dtype="float32")
    runtime = packed.facts.quantization["runtime"]
    assert runtime == (f"packed (14 native {native.simd()}; 4 sibling sets stacked; "
                       "model.embed_tokens, lm_head 16-bit)"), runtime
    assert native.simd() in ("avx512", "avx2", "portable")
    model = packed.model
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert isinstance(model.lm_head, Dense16Linear)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, one copy
    assert model.model.norm.weight.dtype == torch.float32
    # transformers' dense float32 load of the same checkpoint: float32 rounding apart
    exact = HFBackend(_transformers_load(ckpt, torch.float32), None, "f32", 512)
    want, path = _decode(exact)
    got, _ = _decode(packed.backend, path)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert packed.facts.memory_bytes == model.get_memory_footprint()
    assert packed.facts.memory_bytes < 0.5 * exact.model.get_memory_footprint()
    # stacked q/k/v and gate/up compute each row as the separate layers do: bit for bit
    alone = _load_unstacked(monkeypatch, ckpt)
    assert "stacked" not in alone.facts.quantization["runtime"]
    same, _ = _decode(alone.backend, path)
    assert np.array_equal(got, same)
    # two rows at a time (the live scorer's batched step), through both
    for backend in (packed.backend, alone.backend):
        backend.prefill(PROMPT[:9])
    forks = [packed.backend.fork(), alone.backend.fork()]
    for f in forks:
        f.prefill(PROMPT[:12])
    rows = [HFBatch([b, f]).step([5, 6]) for b, f in zip((packed.backend, alone.backend), forks)]
    assert all(np.array_equal(a, b) for a, b in zip(*rows))


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "phi3"])
def test_a_fused_mlp_computes_what_its_members_do(tmp_path, tok, family, monkeypatch):
    """Llama-style MLPs (Qwen3's SiLU, Gemma 3's tanh GELU) whose gate/up are
    stacked run one forward of qdesk's (fusion.py): bit for bit what the members
    compute; with a hook on gate_proj the model's own forward runs and the hook
    sees every call. Phi-3's MLP (one gate_up_proj) keeps its own forward."""
    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _dense_source(tmp_path, family, seed=11)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=32)
    fused = open_model(str(ckpt), backend="hf", dtype="float32")
    mlps = [layer.mlp for layer in fused.model.model.layers]
    assert all(("forward" in vars(m)) == (family != "phi3") for m in mlps)
    alone = _load_unstacked(monkeypatch, ckpt)
    assert not any("forward" in vars(layer.mlp) for layer in alone.model.model.layers)
    want, path = _decode(alone.backend)
    got, _ = _decode(fused.backend, path)
    assert np.array_equal(got, want)
    if family == "phi3":
        return
    seen = []
    handle = mlps[0].gate_proj.register_forward_pre_hook(lambda m, args: seen.append(1))
    fused.backend.reset()  # the prefill computes again (not from the cache)
    hooked, _ = _decode(fused.backend, path)
    handle.remove()
    assert len(seen) == 1 + len(path) and np.array_equal(hooked, want)


def test_a_stacked_sibling_fed_another_input_computes_its_own(tmp_path, tok, monkeypatch):
    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _bf16_exact_source(tmp_path, seed=9)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=32)
    stacked = open_model(str(ckpt), backend="hf", dtype="float32").model.model.layers[0].self_attn
    alone = _load_unstacked(monkeypatch, ckpt).model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(0)
    h1, h2 = torch.randn(1, 1, 64, generator=g), torch.randn(1, 1, 64, generator=g)
    with torch.inference_mode():
        q = stacked.q_proj(h1)
        k = stacked.k_proj(h2)  # not the tensor q_proj saw
        v = stacked.v_proj(h1)
        assert torch.equal(q, alone.q_proj(h1))
        assert torch.equal(k, alone.k_proj(h2))
        assert torch.equal(v, alone.v_proj(h1))
        # the same input changed in place between members is computed again
        q = stacked.q_proj(h1)
        h1.mul_(2)
        assert torch.equal(stacked.k_proj(h1), alone.k_proj(h1))


def test_threads_stepping_one_packed_model_get_their_own_rows(tmp_path, tok):
    import threading

    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _bf16_exact_source(tmp_path, seed=10)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=32)
    packed = open_model(str(ckpt), backend="hf", dtype="float32")
    prompts = [PROMPT[:20], PROMPT[40:70]]
    want = [_decode_from(packed.backend.fork(), p) for p in prompts]  # one after the other
    got = [None, None]

    def work(i):
        got[i] = _decode_from(packed.backend.fork(), prompts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def _decode_from(backend, prompt, steps=12):
    rows = [backend.prefill(prompt)]
    for i in range(steps):
        rows.append(backend.feed([100 + i]))
    return np.stack(rows)


def test_int8_activations_decode_near_the_exact_product_and_switch_back(tmp_path, tok):
    """The opt-in int8-activation decode step (``open_model(int8_activations=True)``):
    the facts say so, the prefill (many rows) stays exact, decode steps move by
    the rounding of x only, and switching it off gives the exact logits again."""
    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _bf16_exact_source(tmp_path, seed=9)
    ckpt = write_rtn_checkpoint(source, tok, tmp_path / "q", bits=4, group=64)
    exact = open_model(str(ckpt), backend="hf", dtype="float32")
    fast = open_model(str(ckpt), backend="hf", dtype="float32", int8_activations=True)
    assert "int8_activations" not in exact.facts.quantization
    assert fast.facts.quantization["int8_activations"] is True
    want, path = _decode(exact.backend, steps=6)
    got, _ = _decode(fast.backend, path, steps=6)
    assert np.array_equal(got[0], want[0])
    assert not np.array_equal(got[1:], want[1:])
    p = torch.from_numpy(want[1:]).double().log_softmax(-1)
    q = torch.from_numpy(got[1:]).double().log_softmax(-1)
    kld = (p.exp() * (p - q)).sum(-1)
    assert float(kld.max()) < 1e-3, kld
    assert fast.set_int8_activations(False) > 0
    assert "int8_activations" not in fast.facts.quantization
    again, _ = _decode(fast.backend, path, steps=6)
    assert np.array_equal(again, want)
    # a model without qdesk's kernel has nothing to switch, and its facts stay
    dense = open_model(str(tiny_folder("llama", tmp_path / "dense", seed=1)), backend="hf")
    assert dense.set_int8_activations(True) == 0
    assert "int8_activations" not in dense.facts.quantization


def test_the_cli_says_which_models_int8_activations_left_exact(tmp_path, tok, capsys):
    """``--int8-activations`` names, in one line on stderr, the models it did not
    switch (here a dense one and a checkpoint in groups of 32); silent when every
    model took it."""
    from qdesk.cli import main
    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = _bf16_exact_source(tmp_path, seed=10)
    g64 = write_rtn_checkpoint(source, tok, tmp_path / "g64", bits=4, group=64)
    g32 = write_rtn_checkpoint(source, tok, tmp_path / "g32", bits=4, group=32)
    dense = tiny_folder("llama", tmp_path / "dense", seed=1)
    assert main(["info", str(g64), "--dtype", "float32", "--int8-activations", "--json"]) == 0
    assert capsys.readouterr().err.strip() == ""
    assert main(["chat", str(dense), str(g64), str(g32), "--backend", "hf", "--dtype", "float32",
                 "--int8-activations", "--prompt", "Hi", "--max-new-tokens", "2", "--json"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "--int8-activations" in line]
    assert len(lines) == 1, captured.err
    assert "does not apply to dense, g32: " in lines[0] and "g64" not in lines[0]
    replies = json.loads(captured.out)["replies"]
    assert len(replies) == 3
