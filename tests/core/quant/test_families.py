"""Quantization on every supported layout, with tiny random-weight models of each
family (tests/families.py): the layer walk computes what the model computes,
AWQ's folds leave the float model unchanged, every method's checkpoint loads in
transformers with qdesk's logits, GPTQ and AWQ beat RTN end to end, and what
cannot be done right is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from families import demo_tokenizer, tiny_model
from quant_helpers import calib
from torch.testing import assert_close

from qdesk.core.errors import BadInput
from qdesk.core.quant import layouts, steps
from qdesk.core.quant.awq import fold, group_modules
from qdesk.core.quant.configs import make_config
from qdesk.core.quant.layerwalk import capture_inputs, decoder_layers, run_layer
from qdesk.core.quant.layouts import family_of
from qdesk.core.quant.selfcheck import SelfCheckSpec
from qdesk.core.quant.steps import run_quantize

DESCRIBED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
# Overrides that make the layout-dependent paths run: Gemma 3 with a sliding and
# a global layer (other masks, other rotary) and a window shorter than the text.
EXTRA = {
    "gemma2": {"sliding_window": 8},
    "gemma3": {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8},
}


@pytest.fixture(scope="module")
def tok():
    return demo_tokenizer()


def _salient(model):
    """A few large channels in every norm: AWQ then has salient inputs to scale
    (on plain random weights it may choose no scaling, and a wrong fold of no
    scale is invisible)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name and not name.endswith(("q_norm.weight", "k_norm.weight")):
                p[:4] += 4.0
    return model


def _model(family, **overrides):
    return _salient(tiny_model(family, **{**EXTRA.get(family, {}), **overrides}))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _ids(vocab=256, n=40, seed=9):
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", (*DESCRIBED, "qwen3_moe"))
def test_layer_walk_computes_what_the_model_computes(family):
    model = _model(family)
    layers = decoder_layers(model)
    assert layers is model.model.layers
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    *_, (inputs, kwargs) = capture_inputs(model, layers, ids, "cpu")
    real = []
    hooks = [layer.register_forward_hook(lambda m, a, out: real.append(out)) for layer in layers]
    with torch.no_grad():
        model.model(input_ids=ids[1:2], use_cache=False)
    for h in hooks:
        h.remove()
    x = inputs[1]
    with torch.no_grad():
        for li, layer in enumerate(layers):
            x = run_layer(layer, x, kwargs[li])
            assert_close(x, real[li], rtol=1e-5, atol=1e-5)
    if family == "gemma3":  # layer 0's kwargs (sliding mask, local rotary) are wrong for layer 1
        with torch.no_grad():
            wrong = run_layer(layers[1], run_layer(layers[0], inputs[1], kwargs[0]), kwargs[0])
        assert not torch.allclose(wrong, real[1], atol=1e-3)


@pytest.mark.parametrize("family,overrides,groups", [
    ("llama", {}, 3), ("llama", {"num_key_value_heads": 4}, 4), ("mistral", {}, 3),
    ("qwen2", {"num_key_value_heads": 4}, 4), ("qwen3", {}, 3), ("gemma2", {}, 3),
    ("gemma3", {"num_key_value_heads": 4}, 4), ("phi3", {}, 3),
    ("phi3", {"num_key_value_heads": 4}, 4),
])
def test_every_fold_keeps_the_float_model(family, overrides, groups):
    """Random scales folded as the family's description says: the logits do not
    move. With as many KV heads as query heads the v -> o fold runs too (for
    Phi-3 through the v rows of the fused qkv_proj)."""
    model = _model(family, **overrides)
    ids = _ids()
    before = _logits(model, ids)
    described = family_of(model)
    folded = 0
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in decoder_layers(model):
            for group in described.scale_groups:
                prev, linears, rows = group_modules(layer, group, described)
                if rows is None:
                    continue
                s = torch.exp(0.5 * torch.randn(linears[0].in_features, generator=g))
                fold(prev, group, s, rows)
                for m in linears:
                    m.weight.mul_(s)
                folded += 1
    assert folded == groups * 2
    assert_close(_logits(model, ids), before, rtol=1e-4, atol=1e-5)


def test_a_llama_style_fold_changes_gemma():
    """The control: the description is what makes the fold right."""
    model = _model("gemma3")
    ids = _ids()
    before = _logits(model, ids)
    wrong = layouts.Family("wrong", (), layouts.family_named("llama").scale_groups)
    with torch.no_grad():
        for layer in decoder_layers(model):
            for group in wrong.scale_groups:
                prev, linears, rows = group_modules(layer, group, wrong)
                if rows is not None:
                    s = torch.full((linears[0].in_features,), 2.0)
                    fold(prev, group, s, rows)
                    for m in linears:
                        m.weight.mul_(s)
    assert not torch.allclose(_logits(model, ids), before, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq", "hqq", "signround"])
@pytest.mark.parametrize("family", DESCRIBED)
def test_method_on_family(tmp_path, tok, family, method):
    from transformers import AutoModelForCausalLM

    model = _model(family, vocab_size=len(tok))
    options = {"iters": 6, "batch_size": 4} if method == "signround" else {}
    config = make_config(method, bits=3, group_size=32, symmetric=method != "hqq", **options)
    out = tmp_path / "q"
    result = run_quantize(model, config, None, calib(16, 64, vocab=len(tok)), output_dir=out,
                          tokenizer=tok)
    check = result.summary.check
    assert check.plausible, check.warning
    assert check.windows == 8 and check.tokens == 8 * 63 and check.mean_kld > 0
    if method == "rtn":
        assert check.rtn_mean_kld is None
    else:
        assert check.rtn_mean_kld > 0
    if method in ("gptq", "awq"):  # the methods that promise a lower output error
        assert check.mean_kld < check.rtn_mean_kld
    assert len(result.records) == 2 * (7 if family != "phi3" else 4)
    # The self-check swapped RTN in and out: the model must be the quantized one again.
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = _ids(len(tok))
    assert_close(_logits(loaded, ids), _logits(model, ids), rtol=0, atol=0)
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["family"] == family and recipe["self_check"]["mean_kld"] == check.mean_kld


def test_rtn_baseline_is_an_rtn_job_on_the_same_windows(tok):
    """The self-check's RTN figure is what an RTN job of the same format scores,
    even after AWQ has folded scales into the norms (the baseline puts the
    original norms back while it runs)."""
    awq = run_quantize(_model("gemma3", vocab_size=len(tok)), make_config("awq", bits=3),
                       None, calib(16, 64, vocab=len(tok)), tokenizer=tok)
    rtn = run_quantize(_model("gemma3", vocab_size=len(tok)),
                       make_config("rtn", bits=3, clip_search=False), None,
                       calib(16, 64, vocab=len(tok)), tokenizer=tok)
    assert awq.summary.check.rtn_mean_kld == pytest.approx(rtn.summary.check.mean_kld, rel=1e-6)
    assert awq.summary.check.rtn_same_top_p == rtn.summary.check.same_top_p


def _wrong_gemma_description(monkeypatch):
    wrong = layouts.Family("gemma3-as-llama", ("gemma3_text",),
                           layouts.family_named("llama").scale_groups)
    monkeypatch.setattr(layouts, "FAMILIES", (wrong,))


def test_a_wrong_description_is_caught_before_rounding(monkeypatch):
    _wrong_gemma_description(monkeypatch)
    model = _model("gemma3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BadInput, match=r"changed model\.layers\.0's float output by .*% before"):
        run_quantize(model, make_config("awq"), None, calib(8, 64))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_the_self_check_sees_a_wrong_fold_the_layer_errors_do_not(monkeypatch, tok):
    """With the fold guard switched off, the per-layer errors look fine, and the
    end-to-end check flags the result as worse than RTN."""
    _wrong_gemma_description(monkeypatch)
    monkeypatch.setattr(steps, "FOLD_TOLERANCE", float("inf"))
    model = _model("gemma3", vocab_size=len(tok))
    result = run_quantize(model, make_config("awq", bits=4, group_size=32), None,
                          calib(8, 64, vocab=len(tok)), tokenizer=tok)
    assert result.summary.mean_rel_error < 0.2
    check = result.summary.check
    assert not check.plausible and "worse than plain RTN" in check.warning
    assert check.mean_kld > 1.2 * check.rtn_mean_kld


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq", "hqq"])
def test_fused_experts_are_refused_by_name(method):
    model = tiny_model("qwen3_moe")
    with pytest.raises(BadInput, match=r"Qwen3MoeForCausalLM stores its experts as fused 3-D "
                                       r"tensors \(layer 0 mlp\.experts\.gate_up_proj: 4 x 128 x 64\)"):
        run_quantize(model, make_config(method, symmetric=method != "hqq"), None, calib())


def _olmo2(vocab=256):
    """OLMo 2: post-norms only (post_attention_layernorm normalises the attention
    output), a layout AWQ has no description of."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "olmo2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab, pad_token_id=0,
        bos_token_id=1, eos_token_id=2)
    return AutoModelForCausalLM.from_config(config).eval()


def test_awq_is_refused_by_name_where_no_description_exists_and_gptq_works(tmp_path):
    from transformers import AutoModelForCausalLM

    with pytest.raises(BadInput, match=r"AWQ has no description .* Olmo2ForCausalLM "
                                       r"\(model_type 'olmo2'.*use gptq, rtn or hqq"):
        run_quantize(_olmo2(), make_config("awq"), None, calib())
    model = _olmo2()
    out = tmp_path / "q"
    run_quantize(model, make_config("gptq", group_size=32), None, calib(), output_dir=out)
    ids = _ids()
    assert_close(_logits(AutoModelForCausalLM.from_pretrained(str(out)), ids), _logits(model, ids),
                 rtol=0, atol=0)


@pytest.mark.parametrize("family,vocab", [("qwen2", 152_064), ("gemma3", 262_144)])
def test_large_vocabularies(tmp_path, tok, family, vocab):
    """Qwen 2.5's and Gemma 3's vocabulary sizes: the tied head and the
    self-check's logits at that width; the memory estimate counts them."""
    from transformers import AutoModelForCausalLM

    model = _model(family, vocab_size=vocab)
    layers = decoder_layers(model)
    ids = calib(8, 32, vocab=len(tok)).input_ids
    device, cpu = steps.job_memory_parts(model, layers, ids, torch.float32, True,
                                         steps.DEFAULT_CHECK)
    _, cpu_without = steps.job_memory_parts(model, layers, ids, torch.float32, True, None)
    assert cpu - cpu_without >= 4 * vocab * 8 * 63  # the reference logits
    out = tmp_path / "q"
    result = run_quantize(model, make_config("gptq", group_size=32), None, calib(8, 32, vocab=len(tok)),
                          output_dir=out, tokenizer=tok, check=SelfCheckSpec(windows=2, ctx=64))
    assert result.summary.check.plausible and result.summary.check.tokens == 2 * 31
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert loaded.config.vocab_size == vocab
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    probe = _ids(vocab, 16)
    assert_close(_logits(loaded, probe), _logits(model, probe), rtol=0, atol=0)


def test_layers_are_found_where_the_model_keeps_them(tmp_path):
    """GPT-NeoX keeps its decoder in ``gpt_neox.layers`` with fused
    ``query_key_value`` Linears: found, quantized (RTN and GPTQ need no
    description), loaded back with the same logits; AWQ is refused by name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, vocab_size=256, max_position_embeddings=128)
    model = AutoModelForCausalLM.from_config(config).eval()
    assert decoder_layers(model) is model.gpt_neox.layers
    with pytest.raises(BadInput, match="AWQ has no description .* GPTNeoXForCausalLM"):
        run_quantize(model, make_config("awq"), None, calib())
    out = tmp_path / "q"
    result = run_quantize(model, make_config("gptq", group_size=32), None, calib(), output_dir=out)
    assert "gpt_neox.layers.1.attention.query_key_value" in result.records
    ids = _ids()
    assert_close(_logits(AutoModelForCausalLM.from_pretrained(str(out)), ids), _logits(model, ids),
                 rtol=0, atol=0)


def test_decoder_layers_without_linear_layers_are_refused_by_name():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=256,
                                  n_positions=128)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(BadInput, match="GPT2LMHeadModel: its decoder layers hold no Linear"):
        run_quantize(model, make_config("rtn"), None, calib())
