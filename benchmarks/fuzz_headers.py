"""The long header fuzzer: many seeded cases per target (tests/fuzz/mutate.py),
then the cases each parser accepted are taken as far as loading, each in a child
process (``qdesk info``), so a native crash or a hang is seen, not suffered.

    .venv/bin/python benchmarks/fuzz_headers.py [--cases 2000] [--load 40] [--json OUT]

Prints per target the count of each outcome and every finding (traceback,
multi-line error, hang, crash). Exit code 1 when there is a finding.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path += [str(_TESTS), str(_TESTS / "fuzz")]


def load_in_child(path: Path, timeout: float = 300) -> tuple[str, str]:
    """(outcome, last stderr line) of ``qdesk info PATH`` in a child process."""
    env = {**os.environ, "QDESK_THREADS": "2"}
    cmd = [sys.executable, "-m", "qdesk.cli", "info", str(path), "--dtype", "float32"]
    if path.suffix == ".gguf":
        cmd = cmd[:-2]
    env["QDESK_DATA_DIR"] = str(path.parent / "data")  # the GGUF probe keeps its cache there
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "hang", f"past {timeout} s"
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("\r")]
    last = lines[-1] if lines else ""
    if p.returncode < 0:
        return "crash", f"signal {-p.returncode}: {last}"
    if "Traceback" in p.stderr:
        return "traceback", last
    if p.returncode == 0:
        return "loaded", ""
    if p.returncode in (2, 3) and last.startswith("qdesk: error:"):
        return "refused", last
    return "other", f"exit {p.returncode}: {last}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=2000, help="seeds per target")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--load", type=int, default=40, help="accepted cases loaded per target")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--targets", default="gguf,safetensors,config.json,qdesk.json")
    args = ap.parse_args()
    from families import tiny_folder
    from mutate import FolderJSONTarget, GGUFHeaderTarget, SafetensorsTarget, judge

    from qdesk.cli import main as cli
    from qdesk.core.models import demo_gguf_path

    root = Path(tempfile.mkdtemp(prefix="qdesk-fuzz-"))
    folder = tiny_folder("llama", root / "tiny")
    ckpt = root / "ckpt"
    assert cli(["quantize", str(folder), "-o", str(ckpt), "--calib-samples", "2",
                "--calib-tokens", "16", "--no-self-check"]) == 0
    targets = [GGUFHeaderTarget(demo_gguf_path()), SafetensorsTarget(folder / "model.safetensors"),
               FolderJSONTarget(ckpt, "config.json"), FolderJSONTarget(ckpt, "qdesk.json")]
    report, findings = {}, []
    t0 = time.perf_counter()
    for t in [t for t in targets if t.name in args.targets.split(",")]:
        work = root / t.name
        work.mkdir()
        t.prepare(work)
        counts = collections.Counter()
        accepted = []
        for seed in range(args.start, args.start + args.cases):
            v = judge(t, seed, work)
            counts[v.outcome] += 1
            if v.finding:
                findings.append(v.__dict__)
            elif v.outcome == "ok" and len(accepted) < args.load and t.name != "safetensors":
                accepted.append(seed)
        # Accepted cases, rebuilt, as far as loading (in a child: a crash is a finding).
        loads = collections.Counter()
        for seed in accepted:
            import random

            path, what = t.build(random.Random(f"{t.name}:{seed}"), work)
            outcome, line = load_in_child(path)
            loads[outcome] += 1
            if outcome in ("crash", "traceback", "hang", "other"):
                findings.append({"target": t.name, "seed": seed, "mutation": what,
                                 "outcome": f"load: {outcome}", "detail": line})
        report[t.name] = {"parse": dict(counts), "load": dict(loads)}
        print(f"{t.name:12s} parse {dict(counts)}  load {dict(loads)}", flush=True)
    print(f"{sum(sum(r['parse'].values()) for r in report.values())} parse cases, "
          f"{sum(sum(r['load'].values()) for r in report.values())} loads, "
          f"{len(findings)} findings, {time.perf_counter() - t0:.0f} s")
    for f in findings:
        print(f"FINDING {f['target']} seed {f['seed']} ({f['mutation']}): {f['outcome']} {f['detail']}")
    if args.json:
        args.json.write_text(json.dumps({"report": report, "findings": findings}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
