"""The real demo model, few calibration tokens: the checkpoint loads through
qdesk (kind "qdesk") and through transformers with the in-memory model's logits."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from qdesk.core.quant.calibration import build_calibration
from qdesk.core.quant.configs import make_config
from qdesk.core.quant.events import LayerQuantized
from qdesk.core.quant.steps import quantize_steps

pytestmark = pytest.mark.slow


def test_demo_gptq_checkpoint_round_trip(tmp_path, monkeypatch):
    from qdesk.core.models import open_model, resolve
    from qdesk.core.packed import quant_linear

    loaded = open_model("demo", backend="hf")
    calib = build_calibration("mix", loaded.hf_tokenizer, samples=5, tokens=32, seed=0)
    out = tmp_path / "demo-gptq"
    config = make_config("gptq", bits=4, group_size=64, symmetric=False)
    events = list(quantize_steps(loaded, config, None, calib, output_dir=out))
    layers = [e for e in events if isinstance(e, LayerQuantized)]
    assert len(layers) == 30 * 7
    assert all(0 < e.rel_error < 0.5 for e in layers)
    assert events[-1].bits_per_weight == pytest.approx(4 + 20 / 64, abs=1e-3)

    ids = loaded.hf_tokenizer("The capital of France is", return_tensors="pt").input_ids
    mine = loaded.backend.score(ids[0].tolist())
    assert resolve(str(out)).kind == "qdesk"
    # the same dtype as the model quantized in memory (a packed checkpoint picks its own);
    # the dense kernel computes what the in-memory model does, bit for bit
    with monkeypatch.context() as m:
        m.setattr(quant_linear, "candidates", lambda qw, dtype, device: ["dense"])
        again = open_model(str(out), backend="hf", dtype=loaded.facts.dtype)
    assert again.facts.quantization["method"] == "gptq"
    assert again.facts.quantization["bits_per_weight"] == pytest.approx(4.3125, abs=1e-3)
    assert_close(torch.as_tensor(again.backend.score(ids[0].tolist())), torch.as_tensor(mine),
                 rtol=0, atol=0)
    again.close()

    # the kernels this CPU picks by speed (torch's int4 op where it pays) sum in another
    # order: the same predictions, logits within rounding
    natural = open_model(str(out), backend="hf", dtype=loaded.facts.dtype)
    theirs = torch.as_tensor(natural.backend.score(ids[0].tolist())).float()
    ref = torch.as_tensor(mine).float()
    assert (theirs.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8
    assert float((theirs - ref).abs().mean()) < 0.05 * float(ref.abs().mean())
    natural.close()
