"""Cross-check ``qdesk compare --text`` against llama.cpp's own ``llama-perplexity``.

Issue 4: on the same text and models, one run's Mean KLD and Same top p from
qdesk should agree with ``llama-perplexity --kl-divergence``. This script

1. converts the dense demo model (the BF16 folder qdesk's ``demo`` reference
   loads) to an F32 GGUF with llama.cpp's convert_hf_to_gguf.py, in a temp dir;
2. runs llama-perplexity twice: the dense GGUF writes the base log-probs
   (--kl-divergence-base), then the Q4_1 GGUF is scored against them;
3. runs ``qdesk compare demo Q4_1.gguf --json`` (reference on transformers) and,
   unless --no-gguf-reference, ``qdesk compare dense.gguf Q4_1.gguf --backend
   llamacpp --json`` (both on llama.cpp, so only the statistics code differs);
4. checks that qdesk's token ids are the ones llama-perplexity scored (they are
   stored in the base file), and prints the figures side by side.

Building llama-perplexity (the llama.cpp that llama-cpp-python 0.3.36 vendors,
i.e. the one qdesk's llama.cpp backend runs)::

    pip download --no-binary :all: --no-deps llama_cpp_python==0.3.36 -d /tmp/lpx
    cd /tmp/lpx && tar xzf llama_cpp_python-0.3.36.tar.gz
    cd llama_cpp_python-0.3.36/vendor/llama.cpp && mkdir build && cd build
    # Not -march=native: ggml's AMX path crashes on our Sapphire Rapids machines
    # (same flags as LLAMA_CMAKE_ARGS in the Makefile).
    cmake .. -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \\
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF \\
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
    nice -n 19 cmake --build . --config Release --target llama-perplexity -j2
    # -> build/bin/llama-perplexity

The converter imports ``sentencepiece`` even for this BPE model; if the venv
lacks it, ``pip install --target /tmp/lpx/pydeps sentencepiece`` and put that
folder on PYTHONPATH (the script passes PYTHONPATH on to the converter).

    .venv/bin/python benchmarks/crosscheck_llama_perplexity.py \\
        --llama-perplexity /tmp/lpx/.../build/bin/llama-perplexity \\
        --convert /tmp/lpx/.../vendor/llama.cpp/convert_hf_to_gguf.py \\
        [--llama-args="-fa off -b 512"]   # llama.cpp settings as qdesk's backend uses them

The base log-prob file is about 0.8 GB for 32 windows of 512 (16-bit log-probs
of the whole vocabulary at every scored position); it lives in the temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# ---------------------------------------------------------------- running tools


def run(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run a command, fail loudly with its output, return (stdout+stderr, seconds)."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    # llama.cpp prints its summary with LOG (stdout) and its progress with
    # LOG_INF (stderr); the parser wants both.
    return p.stdout + "\n" + p.stderr, seconds


def convert_dense(convert: Path, dense_dir: Path, out: Path) -> float:
    """Dense folder -> F32 GGUF. F32, not BF16, so llama.cpp's reference runs in
    float32 like qdesk's transformers reference does (the BF16 weights widen
    exactly)."""
    env = dict(os.environ)
    # The converter must use the gguf-py it ships with, not whatever is installed.
    gguf_py = str(convert.parent / "gguf-py")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (gguf_py, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, str(convert), str(dense_dir), "--outtype", "f32", "--outfile", str(out)]
    return run(cmd, env)[1]


def llama_perplexity(
    binary: Path, model: Path, text: Path, base: Path, args, kl: bool
) -> tuple[str, float]:
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(args.ctx),
           "--chunks", str(args.chunks), "-t", str(args.threads),
           "--kl-divergence-base", str(base)]
    return run(cmd + shlex.split(args.llama_args) + (["--kl-divergence"] if kl else []))


def qdesk_compare(reference: str, model: Path, text: Path, args, backend: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "qdesk.cli", "compare", reference, str(model),
           "--text", str(text), "--ctx", str(args.ctx), "--chunks", str(args.chunks),
           "--backend", backend, "--json"]
    if backend != "llamacpp":  # the dense reference in float32, as the F32 GGUF computes
        cmd += ["--dtype", "float32"]
    out, seconds = run(cmd)
    # --json prints one JSON object on stdout; progress lines go to stderr.
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return json.loads(line), seconds


# ---------------------------------------------------------------- parsing

# "Mean    KLD:   0.001234 ±   0.000012", "99.9%   KLD:   0.05", "Same top p: 98.765 ± 0.123 %",
# "Cor(ln(PPL(Q)), ln(PPL(base))):  99.98%"
_STAT = re.compile(
    r"^(?P<label>[^:]+?)\s*:\s*(?P<val>-?\d+(?:\.\d+)?)(?:\s*±\s*(?P<unc>\d+(?:\.\d+)?))?\s*(?P<pct>%)?\s*$"
)


def parse_llama(output: str) -> dict[str, tuple[float, float | None]]:
    """{label: (value, uncertainty or None)} from the final statistics block.
    Percent figures become fractions, like qdesk's JSON."""
    stats: dict[str, tuple[float, float | None]] = {}
    tail = output[output.find("====== Perplexity statistics"):]
    for line in tail.splitlines():
        m = _STAT.match(line.strip())
        if not m:
            continue
        label = " ".join(m["label"].split())  # "Mean    KLD" -> "Mean KLD"
        scale = 0.01 if m["pct"] else 1.0
        unc = float(m["unc"]) * scale if m["unc"] else None
        stats[label] = (float(m["val"]) * scale, unc)
    chunks = re.search(r"computing over (\d+) chunks, n_ctx=(\d+)", output)
    if not stats or not chunks:
        sys.exit("could not find llama-perplexity's statistics in its output")
    stats["windows"] = (int(chunks[1]), None)
    return stats


def qdesk_stats(report: dict) -> dict[str, tuple[float, float | None]]:
    """qdesk's JSON report under llama-perplexity's labels."""
    s = {
        "windows": (report["windows"], None),
        "scored tokens": (report["tokens"], None),
        "Mean PPL(Q)": (report["ppl_q"], report["ppl_q_unc"]),
        "Mean PPL(base)": (report["ppl_base"], report["ppl_base_unc"]),
        "Cor(ln(PPL(Q)), ln(PPL(base)))": (report["cor_ln_ppl"], None),
        "Mean ln(PPL(Q)/PPL(base))": (report["ln_ppl_ratio"], report["ln_ppl_ratio_unc"]),
        "Mean PPL(Q)-PPL(base)": (report["ppl_diff"], report["ppl_diff_unc"]),
        "Mean KLD": (report["mean_kld"], report["mean_kld_unc"]),
        "Mean Δp": (report["mean_dp"], report["mean_dp_unc"]),
        "RMS Δp": (report["rms_dp"], report["rms_dp_unc"]),
        "Same top p": (report["same_top_p"], report["same_top_p_unc"]),
    }
    for label, v in report["kld_percentiles"].items():
        s[f"{label} KLD"] = (v, None)
    for label, v in report["dp_percentiles"].items():
        s[f"{label} Δp"] = (v, None)
    return s


# ---------------------------------------------------------------- token check


def base_file_tokens(path: Path) -> tuple[int, np.ndarray]:
    """(n_ctx, token ids) llama-perplexity stored in its base file: "_logits_",
    u32 n_ctx, i32 n_vocab, i32 n_chunk, then n_chunk*n_ctx i32 tokens."""
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            sys.exit(f"{path}: not a llama-perplexity base file")
        n_ctx, _n_vocab, n_chunk = np.fromfile(f, dtype="<i4", count=3)
        return int(n_ctx), np.fromfile(f, dtype="<i4", count=int(n_ctx) * int(n_chunk))


def qdesk_tokens(dense_dir: Path, text: str) -> tuple[list[int], int | None]:
    """The ids qdesk's ``demo`` reference scores: encode_text on its HF tokenizer."""
    from transformers import AutoTokenizer

    from qdesk.core.compare.texts import encode_text

    tok = SimpleNamespace(hf=AutoTokenizer.from_pretrained(dense_dir))
    return encode_text(tok, text)


def gguf_adds_bos(path: Path) -> bool:
    """llama_vocab_get_add_bos: llama-perplexity puts BOS first in every window if set."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.contents()) if field is not None else False


# ---------------------------------------------------------------- table

ROWS = (
    "windows", "scored tokens",
    "Mean PPL(Q)", "Mean PPL(base)", "Cor(ln(PPL(Q)), ln(PPL(base)))",
    "Mean ln(PPL(Q)/PPL(base))", "Mean PPL(Q)-PPL(base)",
    "Mean KLD", "Maximum KLD", "99.9% KLD", "99.0% KLD", "95.0% KLD", "90.0% KLD",
    "Median KLD", "10.0% KLD", "Minimum KLD",
    "Mean Δp", "RMS Δp", "Maximum Δp", "Median Δp", "Minimum Δp",
    "Same top p",
)
# Shown ×100 with a % sign, as llama-perplexity prints them.
PERCENT = ("Δp", "Same top p", "Cor(")


def fmt(label: str, v: tuple[float, float | None] | None) -> str:
    if v is None:
        return "-"
    val, unc = v
    if label in ("windows", "scored tokens"):
        return f"{int(val)}"
    if any(p in label for p in PERCENT):
        return f"{100 * val:.3f}%" + (f" ± {100 * unc:.3f}" if unc is not None else "")
    return f"{val:.6f}" + (f" ± {unc:.6f}" if unc is not None else "")


def diff(label: str, ours, theirs) -> str:
    """ours − llama.cpp; for rows with an uncertainty also in units of llama's σ."""
    if ours is None or theirs is None:
        return "-"
    d = ours[0] - theirs[0]
    scale = 100 if any(p in label for p in PERCENT) else 1
    s = f"{scale * d:+.2g}"
    if theirs[1]:
        s += f" ({d / theirs[1]:+.2f}σ)"
    return s


def print_table(llama: dict, columns: list[tuple[str, dict]]) -> None:
    head = ["", "llama-perplexity"]
    for name, _ in columns:
        head += [name, "minus llama (pp for %)"]
    rows = [head]
    for label in ROWS:
        row = [label, fmt(label, llama.get(label))]
        for _, ours in columns:
            row += [fmt(label, ours.get(label)), diff(label, ours.get(label), llama.get(label))]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- main


def main() -> int:
    from qdesk.core.compare.texts import load_text
    from qdesk.core.models import demo_gguf_path, ensure_demo_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-perplexity", type=Path, required=True, help="the built binary")
    ap.add_argument("--convert", type=Path, required=True, help="llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--model", type=Path, default=None, help="GGUF to score (default: the demo Q4_1)")
    ap.add_argument("--text", default="heldout", help="as qdesk compare --text (default heldout)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="llama-perplexity -t")
    # llama-perplexity's defaults differ from how qdesk drives llama.cpp (flash
    # attention auto = on for the CPU, -b 2048 = 2048/ctx windows per decode);
    # "-fa off -b 512" scores the way qdesk's llama.cpp backend does.
    ap.add_argument("--llama-args", default="", help='extra llama-perplexity options, e.g. --llama-args="-fa off -b 512"')
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    ap.add_argument("--no-gguf-reference", action="store_true",
                    help="skip qdesk with the dense GGUF as reference on llama.cpp")
    args = ap.parse_args()

    model = args.model or demo_gguf_path()
    dense_dir = ensure_demo_model()
    with tempfile.TemporaryDirectory(prefix="lpx-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dense = work / "dense-f32.gguf"
        base = work / "base.kld"
        times = {"convert": convert_dense(args.convert, dense_dir, dense)}

        # The exact text qdesk scores (built-in texts are joined by load_text).
        # llama.cpp's -f drops one trailing "\n" (common/arg.cpp), so its copy
        # gets one more; qdesk reads its copy verbatim.
        _, text = load_text(args.text)
        qdesk_text, llama_text = work / "text-qdesk.txt", work / "text-llama.txt"
        qdesk_text.write_bytes(text.encode("utf-8"))
        llama_text.write_bytes((text + "\n").encode("utf-8"))

        _, times["llama base"] = llama_perplexity(args.llama_perplexity, dense, llama_text,
                                                  base, args, kl=False)
        out, times["llama kl"] = llama_perplexity(args.llama_perplexity, model, llama_text,
                                                  base, args, kl=True)
        (work / "llama-kl.log").write_text(out, "utf-8")
        llama = parse_llama(out)
        per_window = args.ctx - 1 - args.ctx // 2
        llama["scored tokens"] = (llama["windows"][0] * per_window, None)

        report, times["qdesk demo"] = qdesk_compare("demo", model, qdesk_text, args, "auto")
        (work / "qdesk-demo.json").write_text(json.dumps(report), "utf-8")
        columns = [("qdesk (HF f32 ref)", qdesk_stats(report["reports"][0]))]
        if not args.no_gguf_reference:
            report2, times["qdesk gguf"] = qdesk_compare(str(dense), model, qdesk_text, args,
                                                         "llamacpp")
            (work / "qdesk-gguf.json").write_text(json.dumps(report2), "utf-8")
            columns.append(("qdesk (dense GGUF ref)", qdesk_stats(report2["reports"][0])))

        # Same windows? Compare the token ids llama-perplexity stored with qdesk's.
        n_ctx, theirs = base_file_tokens(base)
        ids, bos = qdesk_tokens(dense_dir, text)
        ours = np.asarray(ids[: theirs.size], dtype=np.int64)
        same_ids = ours.size == theirs.size and bool((ours == theirs).all())
        add_bos = gguf_adds_bos(dense), gguf_adds_bos(model)

    print(f"\nmodel {model.name} vs reference {dense_dir.name}, text {args.text}, ctx {args.ctx}")
    print(f"token ids of the {theirs.size // n_ctx} windows identical: {same_ids}; "
          f"qdesk text tokens {len(ids)}, BOS per window: qdesk {bos is not None}, "
          f"llama.cpp add_bos (dense, model) {add_bos}")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + "\n")
    print_table(llama, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
