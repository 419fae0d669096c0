"""The C99 core on its own: every source builds alone under strict flags, holds no global data,
and a self-checking random sweep runs clean under AddressSanitizer and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
C_DIR = ROOT / "kernels" / "c"
SOURCES = sorted((C_DIR / "src").glob("*.c"))
HEADERS = sorted((C_DIR / "src").glob("*.h")) + sorted((C_DIR / "include").glob("*.h"))
DRIVER = Path(__file__).with_name("sanitizer_driver.c")
CC = os.environ.get("CC", "cc")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

needs_cc = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})")


def test_sources_are_listed_in_setup_py() -> None:
    setup = (ROOT / "setup.py").read_text()
    listed = set(re.findall(r'"kernels/c/src/([A-Za-z0-9_]+\.c)"', setup))
    assert listed == {p.name for p in SOURCES}


def test_core_has_no_python_allocation_or_abort() -> None:
    """Plain C: no Python.h, no malloc/free, no abort/assert/exit in the library."""
    banned = re.compile(r"#\s*include\s*[<\"](Python\.h|assert\.h)|\b(malloc|calloc|realloc|free|abort|exit|assert)\s*\(")
    for path in SOURCES + HEADERS:
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        match = banned.search(text)
        assert match is None, f"{path.name}: {match.group(0) if match else ''}"


@needs_cc
def test_every_source_builds_alone_and_defines_no_global_data(tmp_path: Path) -> None:
    """``cc -std=c99 -Wall -Wextra -Werror -pedantic -c`` per file; ``nm`` finds no data or bss symbols."""
    objects = []
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        proc = subprocess.run([CC, *STRICT, "-O1", "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, f"{src.name}:\n{proc.stderr}"
        objects.append(obj)
    if shutil.which("nm") is None:
        pytest.skip("no nm to list symbols")
    out = subprocess.run(["nm", *map(str, objects)], capture_output=True, text=True, check=True).stdout
    data = [line for line in out.splitlines() if re.match(r"^[0-9a-f]*\s+[BbCDdGgSs]\s", line)]
    assert not data, "global or static data in the C core:\n" + "\n".join(data)


@needs_cc
def test_portable_build_without_isa_dispatch(tmp_path: Path) -> None:
    """With QK_NO_ISA_DISPATCH (what a compiler without GNU attributes gets) the core still builds."""
    for src in SOURCES:
        proc = subprocess.run(
            [CC, *STRICT, "-DQK_NO_ISA_DISPATCH", "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and not proc.stderr, f"{src.name}:\n{proc.stderr}"


@needs_cc
def test_sanitizer_sweep(tmp_path: Path) -> None:
    """The random self-checking sweep (tests/kernels/sanitizer_driver.c) under ASan + UBSan: exit 0, no report."""
    exe = tmp_path / "sanitizer_driver"
    flags = [
        *STRICT, "-O1", "-g", "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
    ]  # fmt: skip
    build = subprocess.run(
        [CC, *flags, f"-I{C_DIR / 'include'}", f"-I{C_DIR / 'src'}", *map(str, SOURCES), str(DRIVER), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0 and not build.stderr, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), "20261126", "400"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == "", run.stdout + run.stderr
