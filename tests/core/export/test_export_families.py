"""Every supported family exports and runs in its consumer with logits matching
the source: dense GGUF (llama.cpp's converter) and exact GGUF (qdesk's codes)
in llama.cpp, BF16 safetensors in transformers."""

from __future__ import annotations

import gguf
import pytest
from export_helpers import FAST
from families import FAMILIES, SPM_FAMILIES

from qdesk.core.export import ExportConfig, run_export

# qdesk quantizes Linear layers; transformers 5 keeps Qwen3-MoE's experts as
# fused 3-D tensors, which the quantizer refuses: no checkpoint, no exact export.
QUANTIZABLE = [f for f in FAMILIES if f != "qwen3_moe"]


def _field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_gguf_runs_in_llama_cpp_like_the_source(family, family_folder, open_hf, tmp_path):
    source = open_hf(family_folder(family))
    out = tmp_path / "m.gguf"
    done = run_export(source, ExportConfig(format="gguf", type="BF16", output=out, **FAST))
    v = done.verification
    assert v.consumer == "llama.cpp" and v.tokens > 0
    assert v.mean_kld < 1e-4 and v.same_top_p >= 0.95, v
    assert done.tensor_types.get("BF16", 0) > 0 and done.bits_per_weight > 15
    reader = gguf.GGUFReader(str(out))
    tok = source.hf_tokenizer
    assert _field(reader, "qdesk.export.format") == "gguf"
    assert _field(reader, "qdesk.export.type") == "BF16"
    assert _field(reader, "tokenizer.chat_template") == tok.chat_template
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert len(_field(reader, "tokenizer.ggml.tokens")) == source.model.config.vocab_size
    if family not in SPM_FAMILIES:  # the demo's BPE tokenizer: llama.cpp tokenizes alike
        from qdesk.core.models import open_model

        gg = open_model(str(out), backend="llamacpp", n_ctx=64)
        text = "The capital of France is Paris. 今天天气很好。"
        ids = gg.backend.llm.tokenize(text.encode(), add_bos=False, special=False)
        gg.close()
        assert ids == tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("family", QUANTIZABLE)
def test_exact_gguf_holds_the_checkpoints_weights(family, checkpoint, open_hf, tmp_path):
    ck = checkpoint(family, "rtn", 4, 32, False)  # asymmetric: Q5_0
    done = run_export(open_hf(ck), ExportConfig(format="gguf", type="exact",
                                                output=tmp_path / "x.gguf", **FAST))
    v = done.verification
    assert v.weights_exact is True and v.exact_expected
    assert v.mean_kld < 1e-4, v
    assert set(done.tensor_types) >= {"Q5_0"} and "Q4_0" not in done.tensor_types
    reader = gguf.GGUFReader(str(tmp_path / "x.gguf"))
    assert _field(reader, "qdesk.quantization.method") == "rtn"
    assert _field(reader, "qdesk.quantization.bits") == 4
    assert _field(reader, "general.file_type") == 8  # MOSTLY_Q5_0


# The BF16 writer does not depend on the layout: one plain, one fused, the MoE.
@pytest.mark.parametrize("family", ["llama", "phi3", "qwen3_moe"])
def test_bf16_safetensors_load_in_transformers(family, family_folder, open_hf, tmp_path):
    done = run_export(open_hf(family_folder(family)),
                      ExportConfig(format="bf16", output=tmp_path / "bf16", **FAST))
    v = done.verification
    assert v.consumer == "transformers" and v.exact_expected  # bf16 source: the same weights
    assert v.mean_kld == 0.0 and v.same_top_p == 1.0 and v.passed


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_gptq_and_compressed_tensors_exports(family, checkpoint, open_hf, tmp_path):
    ck = checkpoint(family, "gptq", 4, 32, True)
    model = open_hf(ck)
    g = run_export(model, ExportConfig(format="gptq", output=tmp_path / "gptq", **FAST)).verification
    assert g.weights_exact is True and g.mean_kld < 1e-6 and g.passed, g
    c = run_export(model, ExportConfig(format="compressed-tensors", output=tmp_path / "ct",
                                       **FAST)).verification
    assert c.consumer == "transformers" and c.mean_kld < 1e-6 and c.passed, c


def test_mixed_plans_export_each_tensor_in_its_own_exact_type(checkpoint, open_hf, tmp_path):
    plan = tmp_path / "mixed.yaml"
    plan.write_text("rules:\n  - {match: '*.mlp.down_proj', bits: 8}\n"
                    "  - {match: '*.self_attn.q_proj', keep: true}\n")
    ck = checkpoint("llama", "rtn", 4, 32, True, plan=str(plan))
    done = run_export(open_hf(ck), ExportConfig(format="gguf", type="exact",
                                                output=tmp_path / "m.gguf", **FAST))
    assert done.verification.weights_exact and done.verification.mean_kld < 1e-4
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert types["blk.0.ffn_down.weight"] == types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_q.weight"] == "BF16"  # kept by the plan: the dense type
    assert types["blk.0.attn_k.weight"] == types["blk.1.ffn_up.weight"] == "Q4_0"


@pytest.mark.parametrize("method,symmetric,gguf_type", [
    ("gptq", True, "Q4_0"), ("awq", True, "Q4_0"), ("hqq", False, "Q5_0")])
def test_exact_from_each_method(method, symmetric, gguf_type, checkpoint, open_hf, tmp_path):
    """GPTQ's codes, AWQ's folded scales (the changed norms travel as dense
    tensors) and HQQ's integer zero all reach llama.cpp unchanged."""
    ck = checkpoint("llama", method, 4, 32, symmetric)
    done = run_export(open_hf(ck), ExportConfig(format="gguf", type="exact",
                                                output=tmp_path / "m.gguf", **FAST))
    v = done.verification
    assert done.tensor_types[gguf_type] == 14 and v.weights_exact, done
    assert v.mean_kld < 1e-4, v
