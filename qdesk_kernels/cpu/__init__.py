"""qdesk's own CPU kernels (``qdesk_cpu.c``): built once per machine, loaded with ctypes.

The C source ships with qdesk; the first use on a machine compiles it with the
system's C compiler (``CC``, else ``cc``) into the caller's build folder (qdesk's
data folder: ``qdesk.core.packed.native``), under a name
that hashes the source, the flags and the compiler, so a new qdesk or another
compiler builds again and an old build is never loaded by mistake. The build
writes a temporary file and renames it into place. With AVX2, FMA and F16C in
``/proc/cpuinfo`` it builds the vectorized kernels (with AVX-512F too, the
exact one-row 4-bit product in 16 lanes); otherwise the portable C loops.
Without a compiler (or when the build fails) ``library()`` returns None and
``why_not()`` says why; callers then use torch's ops.

``QDESK_NATIVE=0`` turns the kernels off (tests compare both paths).

ctypes releases the GIL for the call, so a chat pane's products do not hold
the GUI thread or a scorer thread back.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("qdesk_cpu.c")
ABI = 3  # qd_abi() of the source this module expects
_why_not: list[str] = []


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-std=c99"]
    cpu = _cpu_flags()
    if {"avx2", "fma", "f16c"} <= cpu:
        flags += ["-mavx2", "-mfma", "-mf16c"]
        if "avx512f" in cpu:  # the one-row 4-bit product in 16 lanes
            flags.append("-mavx512f")
    return flags


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def build(cc: str, flags: list[str], out: Path) -> None:
    """Compile to a temporary name beside ``out``, then rename: a build that
    fails or is killed leaves nothing a later load could pick up."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        for openmp in (["-fopenmp"], []):  # a compiler without OpenMP: one thread
            proc = subprocess.run([cc, *flags, *openmp, str(SOURCE), "-o", tmp],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
        else:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise OSError(f"{Path(cc).name} failed: {lines[-1] if lines else proc.returncode}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.qd_gemm_codes.argtypes = [i32, p, p, i32, p, f32, i64, i64, i64, p, i64, p, i32]
    lib.qd_gemm_codes_q8.argtypes = lib.qd_gemm_codes.argtypes
    lib.qd_dequant_codes.argtypes = [i32, p, p, i32, p, f32, i64, i64, i64, p, i32]
    lib.qd_gemm_w16.argtypes = [p, i32, i64, i64, p, i64, p, i32]
    for fn in (lib.qd_gemm_codes, lib.qd_gemm_codes_q8, lib.qd_dequant_codes, lib.qd_gemm_w16):
        fn.restype = None
    lib.qd_abi.restype = lib.qd_simd.restype = i32
    return lib


@functools.cache
def library(build_dir: Path) -> ctypes.CDLL | None:
    """The loaded kernels, built into ``build_dir`` first if this machine has no
    build yet; None when they cannot be had here (``why_not()``)."""
    if os.environ.get("QDESK_NATIVE", "1") == "0":
        _why_not.append("turned off (QDESK_NATIVE=0)")
        return None
    if not sys.platform.startswith("linux"):
        _why_not.append(f"not built on {sys.platform}")
        return None
    cc = compiler()
    if cc is None:
        _why_not.append("no C compiler (set CC)")
        return None
    flags = _flags()
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(flags).encode() + _compiler_version(cc).encode()
    ).hexdigest()[:16]
    out = Path(build_dir) / f"qdesk_cpu-{key}.so"
    try:
        if not out.is_file():
            log.info("building qdesk's CPU kernels: %s %s", cc, " ".join(flags))
            build(cc, flags, out)
        lib = declare(ctypes.CDLL(str(out)))
    except (OSError, subprocess.SubprocessError) as e:
        _why_not.append(f"build failed ({e})")
        log.warning("qdesk's CPU kernels are not available: %s", e)
        return None
    if lib.qd_abi() != ABI:
        _why_not.append(f"{out.name} speaks ABI {lib.qd_abi()}, not {ABI}")
        return None
    return lib


def why_not() -> str:
    return _why_not[-1] if _why_not else ""


def simd(lib: ctypes.CDLL | None) -> str:
    """"avx512", "avx2" or "portable" for a loaded build, "" for none."""
    if lib is None:
        return ""
    return {3: "avx512", 2: "avx2"}.get(lib.qd_simd(), "portable")
