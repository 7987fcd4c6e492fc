"""A test load of an untrusted GGUF file in a child process, before qdesk loads it.

Header checks catch the hyper-parameters llama.cpp is known to assert on, but
llama.cpp is a large C++ program reading a file anyone can craft: a bad value
that reaches a ``GGML_ASSERT``, a division by zero or a bad pointer ends the
process it runs in. In the GUI that would be the whole app with the user's
open work. So llama.cpp first loads the file in a child process and evaluates a
few tokens there (the same code paths chat and compare use: the vocabulary,
the special tokens, a batch with every position's logits, one incremental
step); only a file that survives that is loaded by qdesk itself. A crash in the
child becomes one ``BadInput`` line naming the file and the signal.

The verdict is cached by file identity (resolved path, size, modification time)
and llama-cpp-python version in ``<data dir>/gguf-probes.json``, so a file is
probed once. Measured on the demo (98 MB Q4_1, 2 shared vCPUs): 0.84 s median
wall for the whole probe against 0.18 s for the same process without it, so
about 0.65 s, once; the child's peak memory is 166 MiB (the file is mapped).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from qdesk.core.errors import BadInput, OutOfResources

log = logging.getLogger(__name__)

CACHE_NAME = "gguf-probes.json"
PROBE_TEXT = "Hello, world! 1234 量化 🙂\n"
# Seconds the test load may take: loading maps the file and one step reads all of it once.
BASE_TIMEOUT_S = 60.0
TIMEOUT_S_PER_GIB = 15.0
_MAX_CACHE_ENTRIES = 500


def ensure_probed(path: Path, gpu_offload: bool = False, progress=None) -> None:
    """Raise BadInput (or OutOfResources) unless llama.cpp survives a test load of ``path``.

    progress(stage, done, total) hears of a probe that really runs (not of a cached verdict).
    """
    path = Path(path)
    key = _identity(path)
    cache = _read_cache()
    if cache.get(key) == "ok":
        return
    started = time.perf_counter()
    if progress:
        progress("test load in llama.cpp", 0, 1)
    _run_probe(path, gpu_offload)
    if progress:
        progress("test load in llama.cpp", 1, 1)
    log.info("probed %s in %.2f s", path, time.perf_counter() - started)
    cache[key] = "ok"
    _write_cache(cache)


def _identity(path: Path) -> str:
    import importlib.metadata

    st = path.stat()
    try:
        version = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|llama-cpp-python {version}"


def _read_cache() -> dict[str, str]:
    from qdesk.core.paths import read_json_cache

    data = read_json_cache(CACHE_NAME)  # absent or damaged: probe again
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_cache(cache: dict[str, str]) -> None:
    from qdesk.core.paths import write_json_cache

    if len(cache) > _MAX_CACHE_ENTRIES:  # keep the newest entries (dicts keep insertion order)
        cache = dict(list(cache.items())[-_MAX_CACHE_ENTRIES:])
    write_json_cache(CACHE_NAME, cache)


def _run_probe(path: Path, gpu_offload: bool) -> None:
    timeout = BASE_TIMEOUT_S + TIMEOUT_S_PER_GIB * path.stat().st_size / 2**30
    cmd = [sys.executable, "-m", "qdesk.core.models.gguf_probe", str(path),
           "1" if gpu_offload else "0"]
    env = dict(os.environ, PYTHONFAULTHANDLER="0")
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BadInput(
            f"{path}: llama.cpp did not finish a test load within {timeout:.0f} s; qdesk did not load it"
        ) from None
    except BaseException:  # Ctrl-C or a cancelled worker: never leave the child behind
        proc.kill()
        proc.wait()
        raise
    if proc.returncode == 0 and out.strip().endswith("ok"):
        return
    raise _verdict(path, proc.returncode, out, err)


def _verdict(path: Path, returncode: int, out: str, err: str) -> Exception:
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGKILL:
            return OutOfResources(
                f"{path}: the test load was killed ({name}), probably for lack of memory"
            )
        why = next((_assert_text(ln) for ln in lines if "GGML_ASSERT" in ln or "GGML_ABORT" in ln
                    or "terminate called" in ln), None)
        detail = f"{name}: {why}" if why else name
        return BadInput(f"{path}: llama.cpp crashes on this file ({detail}); qdesk did not load it")
    message = _load_error(lines)
    if "unknown model architecture" in message:
        arch = re.search(r"'([^']*)'", message)
        name = arch.group(1) if arch else "?"
        return BadInput(f"{path}: llama.cpp does not know the architecture '{name}'")
    if "out of memory" in message or "failed to allocate" in message.lower():
        return OutOfResources(f"{path}: llama.cpp cannot load it: {message}")
    return BadInput(f"{path}: llama.cpp cannot load it: {message}")


def _assert_text(line: str) -> str:
    m = re.search(r"(GGML_ASSERT\(.*\) failed|GGML_ABORT.*|terminate called.*)", line)
    return (m.group(1) if m else line)[:200]


def _load_error(lines: list[str]) -> str:
    for marker in ("error loading model:", "failed to", "error:"):
        for ln in lines:
            if marker in ln:
                return ln.split(marker, 1)[1].strip().rstrip(".") or ln
    return lines[-1][:300] if lines else "no message"


def _child(path: str, gpu_offload: bool) -> int:
    """The test load itself (runs in the child process)."""
    import llama_cpp

    threads = max(1, min(4, (os.cpu_count() or 2) // 2))
    try:
        llm = llama_cpp.Llama(
            model_path=path, n_ctx=64, n_batch=64, n_ubatch=64,
            n_gpu_layers=-1 if gpu_offload else 0,
            # Half the CPUs: llama.cpp's threads spin while they wait, and a probe
            # that competes with other work for every core stalls (on 2 busy vCPUs
            # the demo's probe took 0.44 s median with 1 thread, 0.87 s and up to 6 s
            # with 2).
            n_threads=threads, n_threads_batch=threads, logits_all=False,
            verbose=True,  # llama.cpp's own error message goes to stderr, which the parent reads
        )
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    n_vocab = llm.n_vocab()
    ids = llm.tokenize(PROBE_TEXT.encode("utf-8"), add_bos=True, special=True)
    ids += llm.tokenize(PROBE_TEXT.encode("utf-8"), add_bos=False, special=False)
    ids = [i for i in ids if 0 <= i < n_vocab][:6] or [0]
    llm.detokenize(ids, special=True)
    for token in (llm.token_bos(), llm.token_eos()):
        if 0 <= token < n_vocab:
            llm.detokenize([token], special=True)
    # One batch with every position's logits (qdesk's scoring path), then one step more.
    llm._batch.set_batch(batch=ids, n_past=0, logits_all=True)
    llm._ctx.decode(llm._batch)
    llm.n_tokens = len(ids)
    llm.eval([ids[0]])
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2] == "1"))
