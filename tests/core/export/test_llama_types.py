"""llama.cpp's quantized types through its quantizer in a child process, with
qdesk's importance matrix and a plan as per-tensor types; a crash or a cancel
leaves the caller up and nothing on disk."""

from __future__ import annotations

import os
import signal

import gguf
import numpy as np
import pytest
from export_helpers import FAST

from qdesk.core.errors import BadInput
from qdesk.core.export import ExportConfig, ExportDone, QuantizerStarted, export_steps, run_export
from qdesk.core.export.imatrix import read_imatrix

CALIB = {"imatrix_calib": "general", "calib_samples": 4, "calib_tokens": 64}


def _field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def test_q4_k_m_with_qdesk_importance_matrix(family_folder, open_hf, tmp_path):
    source = open_hf(family_folder("llama"))
    out = tmp_path / "m-Q4_K_M.gguf"
    done = run_export(source, ExportConfig(format="gguf", type="Q4_K_M", output=out, **CALIB, **FAST))
    assert done.imatrix == str(tmp_path / "m-Q4_K_M.imatrix.gguf")
    assert done.verification.consumer == "llama.cpp" and done.verification.passed is None
    assert done.verification.mean_kld < 0.05
    reader = gguf.GGUFReader(str(out))
    assert _field(reader, "quantize.imatrix.dataset").startswith("qdesk:general samples=4")
    assert _field(reader, "quantize.imatrix.chunks_count") == 4
    # 7 Linears x 2 layers, and the tied head's input under the tensor it reads, token_embd
    assert _field(reader, "quantize.imatrix.entries_count") == 15
    assert _field(reader, "qdesk.export.type") == "Q4_K_M"
    assert _field(reader, "general.file_type") == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M

    imx = read_imatrix(tmp_path / "m-Q4_K_M.imatrix.gguf")
    assert imx.chunk_count == 4 and imx.chunk_size == 64
    assert "token_embd.weight" in imx.entries and "output.weight" not in imx.entries
    s, c = imx.entries["blk.0.attn_q.weight"]
    assert s.shape == (1, 64) and c.tolist() == [4 * 64]
    # q, k and v read the same input: their entries agree
    assert np.array_equal(s, imx.entries["blk.0.attn_v.weight"][0])
    # the sums are the squares of what q_proj really saw: recompute one by hand
    import torch

    from qdesk.core.quant.calibration import build_calibration

    cal = build_calibration("general", source.hf_tokenizer, 4, 64, 0)
    seen = []
    lin = source.model.model.layers[1].mlp.down_proj
    h = lin.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().reshape(-1, 128)))
    with torch.no_grad():
        for row in cal.input_ids:
            source.model(input_ids=row[None])
    h.remove()
    want = torch.cat(seen).double().pow(2).sum(0).float().numpy()
    got = imx.entries["blk.1.ffn_down.weight"][0][0]
    assert np.allclose(got, want, rtol=1e-5)

    # the matrix file is reusable: the same export from it writes the same tensors
    again = tmp_path / "again.gguf"
    reused = run_export(source, ExportConfig(format="gguf", type="Q4_K_M", output=again, verify=False,
                                             imatrix_calib=str(tmp_path / "m-Q4_K_M.imatrix.gguf")))
    assert reused.imatrix == str(tmp_path / "m-Q4_K_M.imatrix.gguf")
    a, b = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(again))
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a.tensors, b.tensors))


def test_a_plan_sets_per_tensor_types(family_folder, open_hf, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("rules:\n  - {match: '*.self_attn.[qk]_proj', keep: true}\n"
                    "  - {match: '*.mlp.down_proj', bits: 8}\n")
    out = tmp_path / "p.gguf"
    done = run_export(open_hf(family_folder("llama")),
                      ExportConfig(format="gguf", type="Q4_K_M", output=out, plan=str(plan),
                                   verify=False))
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.1.attn_k.weight"] == "BF16"
    assert types["blk.0.ffn_down.weight"] == types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_v.weight"] != "BF16"  # no rule: llama.cpp's own mixture
    assert done.tensor_types["BF16"] >= 4


def _partials(folder):
    return sorted(p.name for p in folder.iterdir() if "qdesk-" in p.name)


def test_a_quantizer_crash_is_reported_and_leaves_nothing(family_folder, open_hf, tmp_path):
    source = open_hf(family_folder("llama"))
    out = tmp_path / "crash.gguf"
    steps = export_steps(source, ExportConfig(format="gguf", type="Q6_K", output=out, verify=False))
    with pytest.raises(BadInput, match=r"crashed \(SIGKILL\)"):
        for ev in steps:
            if isinstance(ev, QuantizerStarted):
                os.kill(ev.pid, signal.SIGKILL)  # llama.cpp dies mid-quantization
    assert not out.exists() and _partials(tmp_path) == []
    # the caller is still up and the same export works
    assert isinstance(run_export(source, ExportConfig(format="gguf", type="Q6_K", output=out,
                                                      verify=False)), ExportDone)


def test_cancel_during_quantization_leaves_nothing(family_folder, open_hf, tmp_path):
    source = open_hf(family_folder("llama"))
    out = tmp_path / "c.gguf"
    steps = export_steps(source, ExportConfig(format="gguf", type="Q4_K_M", output=out, **CALIB))
    pid = None
    for ev in steps:
        if isinstance(ev, QuantizerStarted):
            pid = ev.pid
            break
    steps.close()  # what the GUI's cancel does
    assert not out.exists() and _partials(tmp_path) == []
    assert not (tmp_path / "c.imatrix.gguf").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child was killed and reaped
