"""The demo model: an exact GGUF of a qdesk checkpoint holds its weights bit
for bit, and in llama.cpp what remains between the two is llama.cpp's own
8-bit rounding of activations (an F32 GGUF of the same weights agrees)."""

from __future__ import annotations

import pytest

from qdesk.core.export import ExportConfig, run_export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    out = tmp_path_factory.mktemp("demo-export") / "rtn4g32"
    loaded = open_model("demo", backend="hf", dtype="float32")
    calibration = build_calibration("general", loaded.hf_tokenizer, 8, 128)
    run_quantize(loaded, make_config("rtn", bits=4, group_size=32, symmetric=True), None,
                 calibration, output_dir=out)
    loaded.close()
    model = open_model(str(out), backend="hf", dtype="float32")
    yield model, out.parent
    model.close()


def test_exact_q4_0_of_the_demo(demo_checkpoint):
    model, folder = demo_checkpoint
    verify = {"verify_ctx": 256, "verify_chunks": 2}
    exact = run_export(model, ExportConfig(format="gguf", type="exact",
                                           output=folder / "exact.gguf", **verify))
    v = exact.verification
    assert exact.tensor_types["Q4_0"] == 210 and v.weights_exact is True and v.rounded_scales == 0
    # measured 0.0022 / 97.5% (8 windows): the floor of llama.cpp's Q8_0 activations
    assert v.mean_kld < 0.005 and v.same_top_p > 0.95, v
    f32 = run_export(model, ExportConfig(format="gguf", type="F32",
                                         output=folder / "f32.gguf", **verify)).verification
    assert f32.mean_kld < 1e-5 and f32.same_top_p > 0.99, f32  # measured 6e-7 / 99.9%
