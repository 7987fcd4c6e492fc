"""Seeded mutations of real headers, and one runner that judges every case.

Targets (``TARGETS``): the demo GGUF's header (metadata and tensor table; the
data section is left sparse, zeros), a safetensors file of a tiny model, and a
qdesk checkpoint's ``config.json`` and ``qdesk.json``. Mutations: bit flips,
truncation, huge counts and string lengths (at the positions the GGUF layout
puts them), NaN/inf/huge numbers, and JSON values of the wrong type.

``run(target, seed, work)`` builds case ``seed`` of ``target`` in ``work`` and
calls qdesk's own parser or validator on it under a time limit. The verdict is
"ok" (accepted), "refused" (BadInput/OutOfResources, one line) or a finding:
"traceback" (any other exception), "multi-line" (an error of several lines),
"hang" (past the limit). A native crash ends the process: the long run
(benchmarks/fuzz_headers.py) runs its loading cases in child processes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

HUGE_INTS = (2**64 - 1, 2**63, 2**62 + 7, 2**40, 2**32 + 1, 2**31, 0, 1)
ODD_NUMBERS = (math.nan, math.inf, -math.inf, -0.0, 1e38, 3.4e38, -1.0, 1e-45, -1e30)
ODD_JSON = (None, -1, 0, 2**63, 10**30, 1e308, math.nan, math.inf, -math.inf, "", "x" * 5000,
            [], {}, True, [[[[[]]]]], "NaN", 3.5, -(2**31))


@dataclass(frozen=True)
class Verdict:
    target: str
    seed: int
    mutation: str
    outcome: str  # ok | refused | traceback | multi-line | hang
    detail: str
    seconds: float

    @property
    def finding(self) -> bool:
        return self.outcome not in ("ok", "refused")


# ---- GGUF: positions of counts, lengths and floats in the header ----------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_layout(buf: bytes) -> tuple[int, list[int], list[tuple[int, int]]]:
    """(end of the header, offsets of u64 counts/lengths, (offset, width) of
    float scalars), walking the GGUF v3 layout of a well-formed file."""
    pos = 8
    lengths = [pos, pos + 8]
    n_tensors, n_kv = struct.unpack_from("<QQ", buf, pos)
    pos += 16
    floats = []

    def string():
        nonlocal pos
        lengths.append(pos)
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + n

    for _ in range(n_kv):
        string()
        (t,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if t in _SCALAR_SIZES:
            if t in (6, 12):
                floats.append((pos, _SCALAR_SIZES[t]))
            pos += _SCALAR_SIZES[t]
        elif t == 8:
            string()
        else:
            (item,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            lengths.append(pos)
            (count,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
            if item == 8:
                for i in range(count):
                    if i < 16:  # a few of a vocabulary's lengths, not 49152 of them
                        lengths.append(pos)
                    (n,) = struct.unpack_from("<Q", buf, pos)
                    pos += 8 + n
            else:
                if item in (6, 12) and count:
                    floats.append((pos, _SCALAR_SIZES[item]))
                pos += count * _SCALAR_SIZES[item]
    for _ in range(n_tensors):
        string()
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        lengths.extend(pos + 8 * i for i in range(n_dims))  # the dimensions
        pos += 8 * n_dims + 4
        lengths.append(pos)  # the data offset
        pos += 8
    return pos, lengths, floats


def mutate_bytes(data: bytearray, rng: random.Random, end: int, lengths, floats) -> str:
    kind = rng.choice(("flip", "flip", "truncate", "huge", "huge", "float", "zero-run"))
    if kind == "flip":
        n = rng.randint(1, 8)
        for _ in range(n):
            i = rng.randrange(end)
            data[i] ^= 1 << rng.randrange(8)
        return f"flip {n} bits"
    if kind == "truncate":
        cut = rng.randrange(end)
        del data[cut:]
        return f"truncate at {cut}"
    if kind == "huge" and lengths:
        at = rng.choice(lengths)
        value = rng.choice(HUGE_INTS)
        data[at : at + 8] = struct.pack("<Q", value)
        return f"u64 at {at} = {value}"
    if kind == "float" and floats:
        at, width = rng.choice(floats)
        value = rng.choice(ODD_NUMBERS)
        data[at : at + width] = struct.pack("<f" if width == 4 else "<d", value)
        return f"float at {at} = {value}"
    i = rng.randrange(end)
    n = rng.randint(1, 64)
    data[i : i + n] = bytes(min(n, len(data) - i))
    return f"zeros at {i}+{n}"


# ---- JSON values of the wrong type -----------------------------------------

def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            yield from _paths(v, (*prefix, i))


def mutate_json(obj, rng: random.Random):
    """(mutated copy, what was done)."""
    obj = json.loads(json.dumps(obj))
    paths = [p for p in _paths(obj) if p]
    if not paths or rng.random() < 0.1:
        return rng.choice(ODD_JSON), "the whole document replaced"
    path = rng.choice(paths)
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
        return obj, f"removed {'.'.join(map(str, path))}"
    value = rng.choice(ODD_JSON)
    parent[path[-1]] = value
    return obj, f"{'.'.join(map(str, path))} = {str(value)[:30]}"


def dump_json(obj) -> str:
    return json.dumps(obj, allow_nan=True)  # NaN/Infinity: Python's json reads them back


# ---- targets ------------------------------------------------------------------

class Target:
    name = ""

    def prepare(self, work: Path) -> None: ...

    def build(self, rng: random.Random, work: Path) -> tuple[Path, str]: ...

    def check(self, path: Path) -> None: ...


class GGUFHeaderTarget(Target):
    """The demo GGUF header; checked by qdesk's header reader and hparam checks."""

    name = "gguf"

    def __init__(self, source: Path):
        self.source = Path(source)

    def prepare(self, work):
        from qdesk.core.models.gguf_reader import read_gguf

        f = read_gguf(self.source)
        with open(self.source, "rb") as fh:
            self.header = fh.read(f.data_start)
        self.size = f.file_size
        self.end, self.lengths, self.floats = gguf_layout(self.header)

    def build(self, rng, work):
        data = bytearray(self.header)
        what = mutate_bytes(data, rng, self.end, self.lengths, self.floats)
        path = work / "case.gguf"
        with open(path, "wb") as fh:
            fh.write(data)
            if "truncate" not in what:
                fh.truncate(self.size)  # sparse: the data section reads as zeros
        return path, what

    def check(self, path):
        from qdesk.core.models.gguf_header import read_header

        read_header(path)


class SafetensorsTarget(Target):
    name = "safetensors"

    def __init__(self, source: Path):
        self.source = Path(source)

    def prepare(self, work):
        self.data = self.source.read_bytes()
        (n,) = struct.unpack_from("<Q", self.data, 0)
        self.header_end = 8 + n
        self.header = json.loads(self.data[8 : 8 + n])

    def build(self, rng, work):
        path = work / "case.safetensors"
        if rng.random() < 0.5:
            data = bytearray(self.data)
            what = mutate_bytes(data, rng, self.header_end, [0], [])
        else:
            obj, what = mutate_json(self.header, rng)
            raw = dump_json(obj).encode()
            data = bytearray(struct.pack("<Q", len(raw)) + raw + self.data[self.header_end :])
        path.write_bytes(data)
        return path, what

    def check(self, path):
        from qdesk.core.models.safetensors_check import read_safetensors_header

        read_safetensors_header(path)


class FolderJSONTarget(Target):
    """config.json or qdesk.json of a model folder; checked by every check
    open_model makes before loading (``check_model_folder``)."""

    def __init__(self, folder: Path, file: str):
        self.folder, self.file = Path(folder), file
        self.name = file

    def prepare(self, work):
        self.copy = work / "folder"
        if self.copy.exists():
            shutil.rmtree(self.copy)
        shutil.copytree(self.folder, self.copy, ignore=shutil.ignore_patterns("*.safetensors"))
        for f in self.folder.glob("*.safetensors"):  # hard links: no copy of the weights
            try:
                os.link(f, self.copy / f.name)
            except OSError:
                shutil.copy2(f, self.copy / f.name)
        self.text = (self.folder / self.file).read_text(encoding="utf-8")

    def build(self, rng, work):
        if rng.random() < 0.7:
            obj, what = mutate_json(json.loads(self.text), rng)
            text = dump_json(obj).encode()
        else:
            data = bytearray(self.text.encode())
            what = mutate_bytes(data, rng, len(data), [], [])
            text = bytes(data)
        (self.copy / self.file).write_bytes(text)
        return self.copy, what

    def check(self, path):
        from qdesk.core.models import check_model_folder

        check_model_folder(str(path))


# ---- the judge -------------------------------------------------------------------

class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang


def judge(target: Target, seed: int, work: Path, limit_s: float = 20.0) -> Verdict:
    from qdesk.core.errors import BadInput, OutOfResources

    rng = random.Random(f"{target.name}:{seed}")
    path, what = target.build(rng, work)
    before = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    t0 = time.perf_counter()
    try:
        target.check(path)
        outcome, detail = "ok", ""
    except (BadInput, OutOfResources) as e:
        text = str(e)
        outcome = "refused" if "\n" not in text and 0 < len(text) < 1000 else "multi-line"
        detail = text[:300]
    except _Hang:
        outcome, detail = "hang", f"past {limit_s} s"
    except Exception as e:  # noqa: BLE001 - the finding itself
        outcome, detail = "traceback", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    return Verdict(target.name, seed, what, outcome, detail, time.perf_counter() - t0)
