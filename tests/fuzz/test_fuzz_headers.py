"""Seeded fuzzing of the header parsers (mutate.py): every mutated header of the
demo GGUF, a safetensors file and a checkpoint's config.json / qdesk.json is
accepted or refused with one line: never a traceback or a hang. The long run
is benchmarks/fuzz_headers.py."""

from __future__ import annotations

import pytest
from mutate import FolderJSONTarget, GGUFHeaderTarget, SafetensorsTarget, judge

# seeds per target in make test (parse/validate only; the long run does thousands)
CASES = {"gguf": 120, "safetensors": 120, "config.json": 40, "qdesk.json": 30}


@pytest.fixture(scope="module")
def targets(tmp_path_factory, demo_gguf_path):
    from families import tiny_folder

    from qdesk.cli import main

    root = tmp_path_factory.mktemp("fuzz")
    folder = tiny_folder("llama", root / "tiny")
    ckpt = root / "ckpt"
    assert main(["quantize", str(folder), "-o", str(ckpt), "--calib-samples", "2",
                 "--calib-tokens", "16", "--no-self-check"]) == 0
    made = {
        "gguf": GGUFHeaderTarget(demo_gguf_path),
        "safetensors": SafetensorsTarget(folder / "model.safetensors"),
        "config.json": FolderJSONTarget(ckpt, "config.json"),
        "qdesk.json": FolderJSONTarget(ckpt, "qdesk.json"),
    }
    for name, t in made.items():
        (root / name).mkdir()
        t.prepare(root / name)
    return root, made


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_headers(targets, name):
    root, made = targets
    verdicts = [judge(made[name], seed, root / name) for seed in range(CASES[name])]
    findings = [v for v in verdicts if v.finding]
    assert not findings, "\n".join(f"{v.seed} {v.mutation}: {v.outcome} {v.detail}" for v in findings)
    # The mutations reach the checks: most cases are refused, and some pass.
    refused = sum(v.outcome == "refused" for v in verdicts)
    assert refused >= len(verdicts) // 4, [v.mutation for v in verdicts]


@pytest.mark.parametrize("name", ["gguf", "config.json", "qdesk.json"])
def test_accepted_mutations_load_or_are_refused(targets, name, capsys):
    """The first mutated headers each check accepted, taken as far as loading
    (``qdesk info``; a GGUF in a child process, where a native crash would show)."""
    import os
    import random
    import subprocess
    import sys

    from qdesk.cli import main

    root, made = targets
    t = made[name]
    accepted = [s for s in range(CASES[name]) if judge(t, s, root / name).outcome == "ok"]
    seeds = accepted[: 1 if name == "gguf" else 2]
    assert seeds, "no accepted mutation to load"
    for seed in seeds:
        path, what = t.build(random.Random(f"{t.name}:{seed}"), root / name)
        if name == "gguf":
            env = {**os.environ, "QDESK_DATA_DIR": str(root / "data")}  # the probe's cache
            p = subprocess.run([sys.executable, "-m", "qdesk.cli", "info", str(path)],
                               capture_output=True, text=True, timeout=600, env=env)
            code, err = p.returncode, p.stderr
        else:
            capsys.readouterr()
            code = main(["info", str(path), "--dtype", "float32"])
            err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\r")]
        assert code in (0, 2, 3) and "Traceback" not in err, (what, err[-2000:])
        assert code == 0 or lines[-1].startswith("qdesk: error:"), (what, lines)
