"""The GPTQ format's packing against an independent reader: llama.cpp's own
converter, whose GPTQ dequantization follows GPTQModel's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qdesk.core.export.gptq_format import (
    _pack,
    _unpack,
    gptq_dequantize,
    gptq_refusal,
    gptq_tensors,
)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group", [32, -1])
def test_gptq_tensors_decode_to_codes_times_scales(bits, group):
    rng = np.random.default_rng(bits)
    half = 1 << (bits - 1)
    q = rng.integers(-half, half, size=(16, 64)).astype(np.int8)
    groups = 1 if group == -1 else 64 // group
    s = torch.from_numpy(rng.uniform(1e-3, 1e-1, (16, groups)).astype(np.float32)).bfloat16().float().numpy()
    t, inexact = gptq_tensors(q, s, bits, group)
    assert inexact == 0
    assert t["qweight"].shape == (64 * bits // 32, 16) and t["qweight"].dtype == np.int32
    assert t["qzeros"].shape == (groups, 16 * bits // 32) and t["scales"].dtype == np.float16
    g = 64 if group == -1 else group
    want = q.astype(np.float32) * np.repeat(s, g, axis=1)
    assert np.array_equal(gptq_dequantize(t["qweight"], t["qzeros"], t["scales"], t["g_idx"], bits), want)
    # v1 stores zero - 1: the packed zeros read back as 2^(b-1) - 1
    assert (_unpack(np.ascontiguousarray(t["qzeros"].T), bits) == half - 1).all()


def test_packing_is_low_bits_first_along_the_input():
    u = np.arange(8, dtype=np.uint32).reshape(8, 1)  # input column i holds code i
    word = int(_pack(u, 4).view(np.uint32)[0, 0])
    assert word == sum(i << (4 * i) for i in range(8))


@pytest.mark.parametrize("bits,group,sym,float_zero,words", [
    (4, 64, False, False, ["asymmetric", "compressed-tensors"]),
    (3, 64, True, False, ["3-bit", "compressed-tensors"]),
    (4, 256, True, False, ["group size is 256", "compressed-tensors"]),
    (4, 64, False, True, ["zero point"]),
])
def test_refusals_name_the_reason_and_the_format_that_works(bits, group, sym, float_zero, words):
    why = gptq_refusal(bits, group, sym, float_zero)
    assert all(w in why for w in words), why
    assert gptq_refusal(4, 128, True, False) is None and gptq_refusal(8, -1, True, False) is None


def test_llama_cpp_converter_reads_the_gptq_export(checkpoint, open_hf, tmp_path):
    """llama.cpp's converter dequantizes GPTQ checkpoints itself (GPTQModel's
    rule); the F32 GGUF it writes from qdesk's GPTQ export holds qdesk's weights."""
    import gguf

    from qdesk.core.export import ExportConfig, run_export
    from qdesk.core.export.checkpoint_source import open_checkpoint
    from qdesk.core.export.rowmap import RowIndex
    from qdesk.core.models.hf_to_gguf import convert_hf_folder

    ck = checkpoint("llama", "gptq", 4, 32, True)
    out = tmp_path / "gptq"
    run_export(open_hf(ck), ExportConfig(format="gptq", output=out, verify=False))
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "gptq" and saved["bits"] == 4 and saved["desc_act"] is False
    assert json.loads((out / "quantize_config.json").read_text()) == saved
    gguf_path = convert_hf_folder(out, tmp_path / "from-gptq.gguf", "f32")
    ckpt = open_checkpoint(ck)
    index = RowIndex()
    values = {}
    for name in ckpt.quantized:
        values[name] = ckpt.record(name).dequantize(torch.float32).numpy()
        index.add(name, values[name])
    found = 0
    for t in gguf.GGUFReader(str(gguf_path)).tensors:
        rows = np.asarray(t.data, dtype=np.float32).reshape(-1, int(t.shape[0]))
        rs = index.find(t.name, rows) if rows.shape[1] in index.widths() else None
        if rs is not None:
            rs.check(rows, values.__getitem__)
            found += len(rs.sources)
    assert found == len(ckpt.quantized) == 14
