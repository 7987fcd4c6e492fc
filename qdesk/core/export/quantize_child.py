"""The child process that runs llama.cpp's ``llama_model_quantize``.

Run as ``python -m qdesk.core.export.quantize_child SPEC.json``; the parent
(``llama_quantize``) reads its stderr: llama.cpp's own log, one
``[  i/  n] name ...`` line per tensor. A crash inside llama.cpp ends only this
process. SPEC: {"input", "output", "ftype" (a LLAMA_FTYPE_MOSTLY_* suffix),
"threads", "allow_requantize", "imatrix" (an imatrix GGUF path or null),
"overrides" ([[regex, ggml type name], ...], first match wins),
"metadata" ({key: str | int | float | bool}, written into the output)}.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys


def _imatrix_arrays(path: str):
    """Per-column means of x^2 (sum / count per matrix) as ctypes float arrays."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(path)
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32)
    entries = []
    for name, s in sums.items():
        c = counts[name].reshape(-1)
        s = s.reshape(c.size, -1)
        # llama-quantize's rule: a matrix no token reached gets ones
        mean = np.where(c[:, None] > 0, s / np.maximum(c[:, None], 1), 1.0).astype(np.float32)
        entries.append((name, np.ascontiguousarray(mean.reshape(-1))))
    return entries


def main(spec_path: str) -> int:
    import llama_cpp

    spec = json.loads(open(spec_path, encoding="utf-8").read())

    @llama_cpp.llama_log_callback
    def log(level, text, user_data):
        os.write(2, text)

    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{spec['ftype']}")
    params.nthread = int(spec.get("threads") or 0)
    params.allow_requantize = bool(spec.get("allow_requantize"))
    keep = []  # every ctypes object the C side points to stays alive until the call returns

    if spec.get("imatrix"):
        entries = _imatrix_arrays(spec["imatrix"])
        arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, mean) in enumerate(entries):
            arr[i].name = name.encode()
            arr[i].data = mean.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = mean.size
        arr[len(entries)].name = None  # terminator
        keep += [arr, entries]
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))

    overrides = spec.get("overrides") or []
    if overrides:
        import gguf

        tt = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for i, (pattern, type_name) in enumerate(overrides):
            tt[i].pattern = pattern.encode()
            tt[i].type = int(gguf.GGMLQuantizationType[type_name])
        tt[len(overrides)].pattern = None
        tt[len(overrides)].type = int(gguf.GGMLQuantizationType.F32)
        keep.append(tt)
        params.tt_overrides = ctypes.cast(tt, ctypes.POINTER(llama_cpp.llama_model_tensor_override))

    metadata = spec.get("metadata") or {}
    kv = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
    for i, (key, value) in enumerate(metadata.items()):
        kv[i].key = key.encode()[:127]
        if isinstance(value, bool):
            kv[i].tag, kv[i].value.val_bool = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, value
        elif isinstance(value, int):
            kv[i].tag, kv[i].value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
        elif isinstance(value, float):
            kv[i].tag, kv[i].value.val_f64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT, value
        else:
            kv[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            kv[i].value.val_str = str(value).encode()[:127]
    kv[len(metadata)].key = b""  # terminator: an empty key
    keep.append(kv)
    params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))

    rc = llama_cpp.llama_model_quantize(spec["input"].encode(), spec["output"].encode(),
                                        ctypes.byref(params))
    if rc != 0:
        os.write(2, f"qdesk: llama_model_quantize returned {rc}\n".encode())
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
