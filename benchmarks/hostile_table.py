"""Run every hostile-input row (tests/cli/hostile_cases.py) and print a table:
case, exit code, traceback seen, the one line. Run against another tree with
PYTHONPATH=TREE (e.g. an unpacked ``git archive HEAD``) for a before/after table.

    .venv/bin/python benchmarks/hostile_table.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1] / "tests"
# after PYTHONPATH: a tree given there is the one measured
sys.path += [str(_TESTS), str(_TESTS / "cli")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="", help="comma list: rows whose id contains one")
    args = ap.parse_args()
    from families import tiny_folder
    from hostile_cases import CASES, run_case

    import qdesk

    print(f"qdesk from {Path(qdesk.__file__).parent}", file=sys.__stdout__)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        base = tiny_folder("llama", Path(d) / "base")
        for i, (name, build, want, words) in enumerate(CASES):
            if args.only and not any(part in name for part in args.only.split(",")):
                continue
            tmp = Path(d) / f"c{i}"
            tmp.mkdir()
            try:
                argv = build(base, tmp)
                code, line, tb = run_case(argv)
            except Exception as e:  # the case could not even be built
                code, line, tb = "build failed", f"{type(e).__name__}: {e}", False
            ok = code == want and words in line and not tb
            rows.append({"case": name, "code": code, "traceback": tb, "line": line, "ok": ok})
            print(f"{'ok ' if ok else 'BAD'} {name:55s} {code!s:>8} {'TB' if tb else '  '} {line[:150]}",
                  file=sys.__stdout__, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
