"""The extension and the C core built with ``-fsanitize=address,undefined``, and how to run Python under it.

:func:`build` compiles the binding (``kernels/_ext/qk_module.c``) and every source of
``kernels/c/sources.txt`` into one shared object under ``build/sanitized/<hash>/``, keyed by the
sources, the flags and the compiler, so a rerun reuses it. Python itself is not sanitized, so the ASan
runtime must be loaded first: :func:`environment` gives ``LD_PRELOAD`` (the runtime, then libstdc++) and
the sanitizer options
(leak detection off: CPython keeps its objects to the end; any report stops the process), and
:func:`load` puts the sanitized module in ``sys.modules`` as ``kernels._qk`` before ``kernels`` is
imported, so every wrapper then calls it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable, Optional


def _c_sources() -> object:
    """``kernels/c_sources.py`` loaded by path: importing ``kernels.c_sources`` would import ``kernels``
    (and the unsanitized extension) before :func:`load` can run."""
    path = Path(__file__).resolve().parents[2] / "kernels" / "c_sources.py"
    spec = importlib.util.spec_from_file_location("_fuzz_c_sources", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SOURCES: Any = _c_sources()
REPO_ROOT: Path = _SOURCES.REPO_ROOT
core_sources: Callable[[], list[Path]] = _SOURCES.core_sources
header_dirs: Callable[[], list[Path]] = _SOURCES.header_dirs

__all__ = ["FLAGS", "available", "build", "environment", "load", "runtime_library"]

FLAGS: list[str] = [
    "-std=c99", "-O1", "-g", "-fno-omit-frame-pointer", "-ffp-contract=off", "-fPIC", "-shared",
    "-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
]  # fmt: skip
#: Set in the environment of a process that runs under the sanitized extension: its path.
ENV_VAR = "LOWBIT_FUZZ_SANITIZED"


def _compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _library(name: str) -> Optional[str]:
    cc = _compiler()
    if cc is None:
        return None
    found = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return found if os.path.isabs(found) and os.path.exists(found) else None


def runtime_library() -> Optional[str]:
    """The path of the compiler's ASan runtime (``libasan.so``), or None without one."""
    return _library("libasan.so")


def available() -> Optional[str]:
    """None when a sanitized build can run here, else the reason it cannot (and what to install)."""
    if _compiler() is None:
        return "no C compiler (cc/gcc) on PATH"
    if runtime_library() is None:
        return "the compiler has no AddressSanitizer runtime (Debian: apt-get install gcc, which ships libasan)"
    return None


def _sources() -> list[Path]:
    return [REPO_ROOT / "kernels" / "_ext" / "qk_module.c", *core_sources()]


def build(root: Path = REPO_ROOT / "build" / "sanitized") -> Path:
    """The sanitized ``_qk`` shared object, compiled unless a build of the same inputs exists."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError(available() or "no compiler")
    includes = [f"-I{sysconfig.get_paths()['include']}", *(f"-I{d}" for d in header_dirs())]
    digest = hashlib.sha256()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    for part in [cc, version, *FLAGS, *includes]:
        digest.update(part.encode())
    headers = sorted(p for d in header_dirs() for p in d.glob("*.h"))
    for path in [*_sources(), *headers]:
        digest.update(path.read_bytes())
    out = root / digest.hexdigest()[:16] / f"_qk{sysconfig.get_config_var('EXT_SUFFIX')}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    cmd = [cc, *FLAGS, *includes, *map(str, _sources()), "-o", str(partial)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the sanitized build failed:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")
    partial.replace(out)
    return out


def environment(extension: Path) -> dict[str, str]:
    """The environment of a Python process running under the sanitized ``extension`` (see the module doc)."""
    runtime = runtime_library()
    if runtime is None:
        raise RuntimeError(available() or "no ASan runtime")
    env = dict(os.environ)
    # libstdc++ right after the runtime: ASan resolves its __cxa_throw interceptor when it starts, and
    # without the library loaded by then the first C++ exception torch throws aborts the process.
    preload = (runtime, _library("libstdc++.so.6") or "", env.get("LD_PRELOAD", ""))
    env["LD_PRELOAD"] = " ".join(p for p in preload if p)
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1:exitcode=87"
    env[ENV_VAR] = str(extension)
    return env


def load() -> Optional[Path]:
    """Install the sanitized extension named by the environment as ``kernels._qk`` (before ``import kernels``)."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    if "kernels" in sys.modules:
        raise RuntimeError("load() must run before kernels is imported")
    spec = importlib.util.spec_from_file_location("kernels._qk", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the sanitized extension {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["kernels._qk"] = module
    return Path(path)
