"""The job's self-check: where it sits among the events, what it records, the
windows it scores, its verdicts, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from families import demo_tokenizer, tiny_model
from quant_helpers import calib

from qdesk.core.compare.texts import load_text
from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import make_config
from qdesk.core.quant.events import (
    CalibrationProgress,
    LayerQuantized,
    QuantizeSummary,
    SavingCheckpoint,
    SelfCheck,
)
from qdesk.core.quant.selfcheck import (
    KLD_LIMIT,
    SelfCheckSpec,
    check_windows,
    judge,
)
from qdesk.core.quant.steps import quantize_steps, run_quantize


@pytest.fixture(scope="module")
def tok():
    return demo_tokenizer()


def _model(tok, seed=0):
    return tiny_model("qwen2", seed=seed, vocab_size=len(tok))


def test_the_check_comes_after_the_last_layer_and_is_recorded(tmp_path, tok):
    out = tmp_path / "q"
    events = list(quantize_steps(_model(tok), make_config("gptq"), None,
                                 calib(8, 32, vocab=len(tok)), output_dir=out, tokenizer=tok))
    kinds = [type(e) for e in events]
    # the original's logits first (before any layer changes), the verdict after the last layer
    assert events[0] == CalibrationProgress("self-check", 8, 16)  # one batch of 8 windows
    i_check = kinds.index(SelfCheck)
    assert max(i for i, k in enumerate(kinds) if k is LayerQuantized) < i_check
    assert kinds[i_check + 1:] == [SavingCheckpoint, QuantizeSummary]
    check, summary = events[i_check], events[-1]
    assert summary.check == check and check.plausible and check.warning is None
    assert check.text == "heldout" and check.windows == 8 and check.tokens == 8 * 63
    assert 0 < check.mean_kld < check.rtn_mean_kld and 0 <= check.same_top_p <= 1
    assert check.seconds > 0 and check.kld_limit == KLD_LIMIT
    assert summary.to_json()["check"]["mean_kld"] == check.mean_kld
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["self_check"] == {k: v for k, v in check.to_json().items() if k != "event"}


def test_no_tokenizer_or_switched_off_means_no_check(tok):
    events = list(quantize_steps(_model(tok), make_config("rtn"), None, calib(vocab=len(tok))))
    assert not any(isinstance(e, SelfCheck) for e in events) and events[-1].check is None
    summary = run_quantize(_model(tok), make_config("rtn"), None, calib(vocab=len(tok)),
                           tokenizer=tok, check=None).summary
    assert summary.check is None


def test_cancel_during_the_check_restores_the_model_and_writes_nothing(tmp_path, tok):
    model = _model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = quantize_steps(model, make_config("awq"), None, calib(8, 32, vocab=len(tok)),
                           output_dir=tmp_path / "q", tokenizer=tok)
    for event in steps:
        if isinstance(event, CalibrationProgress) and event.stage == "self-check" and event.done > 8:
            steps.close()  # after the quantized model was scored, before the RTN baseline ran
            break
    assert not list(tmp_path.iterdir())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_windows_cover_both_held_out_texts(tok):
    spec = SelfCheckSpec()
    windows = check_windows(tok, spec, max_ctx=4096)
    assert windows.shape == (8, 128) and windows.dtype == torch.int64
    rows = [w.tolist() for w in windows]
    for part, mine in (("heldout-en", rows[:4]), ("heldout-zh", rows[4:])):
        ids = tok(load_text(part)[1])["input_ids"]
        slots = [ids[s * 128:(s + 1) * 128] for s in range(len(ids) // 128)]
        where = [slots.index(w) for w in mine]  # each window is an aligned slice of the text
        assert where[0] == 0 and where[-1] == len(slots) - 1 and where == sorted(set(where))
    # a model with a short context gets short windows
    assert check_windows(tok, spec, max_ctx=64).shape == (8, 64)


def test_a_bos_tokenizer_starts_every_window_with_bos(tok):
    """As llama-perplexity (and qdesk compare) do."""
    class WithBos:
        bos_token_id = 7

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [7] + tok(text, add_special_tokens=False)["input_ids"]}

    windows = check_windows(WithBos(), SelfCheckSpec(windows=4, ctx=32), max_ctx=4096)
    assert windows.shape == (4, 32) and bool((windows[:, 0] == 7).all())


@pytest.mark.parametrize("options,message", [
    ({"text": "calibration"}, "self-check text must be one of"),
    ({"windows": 0}, "windows must be 1..64"),
    ({"ctx": 8}, "window length must be 16..4096"),
])
def test_bad_specs(options, message):
    with pytest.raises(BadInput, match=message):
        SelfCheckSpec(**options)


def test_verdicts():
    same = np.zeros(500)
    assert judge(0.3, 0.4, same - 0.1) is None  # better than RTN
    assert judge(0.3, None, None) is None  # RTN itself
    noisy = np.random.default_rng(0).normal(0.0, 1.0, 500)
    assert judge(0.45, 0.4, noisy + 0.05) is None  # worse by less than the noise
    assert "worse than plain RTN" in judge(0.6, 0.4, same + 0.2)
    assert judge(0.42, 0.4, same + 0.02) is None  # within 10% of RTN
    assert "lost what the original predicts" in judge(KLD_LIMIT * 1.5, KLD_LIMIT * 2, same - 1)  # beyond the limit
    assert "beyond" in judge(float("nan"), 0.4, same)


@pytest.mark.parametrize("method", ["gptq", "hqq"])
def test_a_16_bit_model_is_scored_in_float32_and_given_back_exactly(tok, monkeypatch, method):
    """On a CPU without fast 16-bit products the check's forwards run on float32
    parameters; the job's result is bit for bit what it is when the check runs in
    bfloat16 (HQQ: a float zero, whose dequantization rounds step by step), and
    the figures nearly the same."""
    from contextlib import nullcontext

    from qdesk.core.quant import layerwalk, selfcheck

    monkeypatch.setattr(layerwalk, "_cpu_has_fast_bf16", lambda: False)
    options = {"symmetric": False, "zero": "float"} if method == "hqq" else {}
    results, seen = {}, []
    for wide in (True, False):
        model = _model(tok).to(torch.bfloat16)
        head = model.lm_head  # only the check runs the whole model: the layer walk stops before it
        hook = head.register_forward_pre_hook(lambda m, a, wide=wide: seen.append((wide, m.weight.dtype)))
        with monkeypatch.context() as m:
            if not wide:
                m.setattr(selfcheck, "float32_scoring", lambda model: nullcontext())
            summary = run_quantize(model, make_config(method, **options), None,
                                   calib(8, 32, vocab=len(tok)), tokenizer=tok).summary
        hook.remove()
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
        results[wide] = (summary.check, model.state_dict())
    assert (True, torch.float32) in seen and (False, torch.float32) not in seen
    (wide_check, wide_state), (narrow_check, narrow_state) = results[True], results[False]
    for k, v in narrow_state.items():
        assert torch.equal(wide_state[k], v), k
    assert wide_check.mean_kld == pytest.approx(narrow_check.mean_kld, rel=0.1, abs=0.01)
    assert wide_check.rtn_mean_kld == pytest.approx(narrow_check.rtn_mean_kld, rel=0.1, abs=0.01)
