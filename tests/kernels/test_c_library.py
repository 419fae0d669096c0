"""The C99 core on its own: one source list names every file, public entry points and internal
helpers sit apart, every source builds alone under strict flags, holds no global data, and a
self-checking random sweep runs clean under AddressSanitizer and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import setuptools

from kernels.c_sources import core_sources, header_dirs, parse

ROOT = Path(__file__).resolve().parents[2]
C_DIR = ROOT / "kernels" / "c"
SOURCES = core_sources()
HEADER_DIRS = header_dirs()
HEADERS = sorted(h for d in HEADER_DIRS for h in d.glob("*.h"))
PUBLIC_DIR = C_DIR / "src"
INTERNAL_DIR = C_DIR / "src" / "internal"
DRIVER = Path(__file__).with_name("sanitizer_driver.c")
CC = os.environ.get("CC", "cc")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

needs_cc = pytest.mark.skipif(shutil.which(CC) is None, reason=f"no C compiler ({CC})")

# A function definition starts in column 0: qualifiers and return type, the name, the
# parameters, then the opening brace (possibly on the next line).
DEFINITION = re.compile(r"^([A-Za-z_][\w \t*]*?)\b([A-Za-z_]\w*)\s*\(([^;{}]*)\)\s*\{", re.M)
DECLARATION = re.compile(r"\b(qk_\w+)\s*\([^;{}]*\)\s*;")


def _code(path: Path) -> str:
    """The text of a C file without comments."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(), flags=re.S)


def _definitions(path: Path) -> tuple[set[str], set[str]]:
    """The (external, file-local) functions that a C file defines."""
    external: set[str] = set()
    local: set[str] = set()
    for match in DEFINITION.finditer(_code(path)):
        prefix = match.group(1).split()
        (local if "static" in prefix or "QK__ALWAYS_INLINE" in prefix else external).add(match.group(2))
    return external, local


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_list_names_every_c_file_under_src_and_every_header_folder() -> None:
    listed = [_rel(p) for p in SOURCES]
    assert sorted(listed) == sorted(_rel(p) for p in (C_DIR / "src").rglob("*.c"))
    assert {_rel(h.parent) for h in C_DIR.rglob("*.h")} == {_rel(d) for d in HEADER_DIRS}
    assert all(d.is_dir() for d in HEADER_DIRS)


def test_setup_py_builds_the_listed_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup.py, run with ``setup()`` captured, builds the binding plus exactly the list, in order (and,
    apart, the simulation's fake-quantization extension, which takes nothing of the core)."""
    captured: dict[str, Any] = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    ext, fake_quant = captured["ext_modules"]
    assert fake_quant.name == "quant._fakequant"
    assert all(s.startswith("quant/csrc/") for s in fake_quant.sources)
    assert ext.name == "kernels._qk"
    assert ext.sources == ["kernels/_ext/qk_module.c", *(_rel(p) for p in SOURCES)]
    assert all((ROOT / s).is_file() for s in ext.sources)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kernels/c/src/qk_add.h\n", "neither a .c source nor a header folder"),
        ("kernels/c/src/qk_add.c\nkernels/c/src/qk_add.c  # again\n", "line 2: 'kernels/c/src/qk_add.c' is listed"),
        ("/abs/qk_add.c\n", "relative to the repository root"),
        ("kernels/../qk_add.c\n", "relative to the repository root"),
        ("kernels\\c\\src\\qk_add.c\n", "relative to the repository root"),
    ],
)
def test_malformed_list_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(text)


def test_public_sources_define_one_entry_point_and_internal_ones_only_helpers() -> None:
    """src/: one function declared in qk.h (or qk_custom.h, the custom ops) per file, named after it (plus its
    _scratch_bytes and _cache_bytes twins); src/internal/: only qk__ functions, in each source the one named after the file among them."""
    declared = set(DECLARATION.findall(_code(C_DIR / "include" / "qk.h") + _code(C_DIR / "include" / "qk_custom.h")))
    for header in sorted(INTERNAL_DIR.glob("*.h")):
        names = set.union(*_definitions(header))
        assert all(name.startswith("qk__") for name in names), f"{_rel(header)}: {sorted(names)}"
    defined_public: set[str] = set()
    for src in SOURCES:
        external, local = _definitions(src)
        assert all(name.startswith("qk__") for name in local), f"{_rel(src)}: file-local {sorted(local)}"
        if src.parent == INTERNAL_DIR:
            assert all(name.startswith("qk__") for name in external), f"{_rel(src)}: {sorted(external)}"
            assert "qk__" + src.stem.removeprefix("qk_") in external, f"{_rel(src)}: {sorted(external)}"
        else:
            assert src.parent == PUBLIC_DIR, f"{_rel(src)}: neither in src/ nor src/internal/"
            one_entry_point = ({src.stem}, {src.stem, src.stem + "_scratch_bytes"},
                               {src.stem, src.stem + "_scratch_bytes", src.stem + "_cache_bytes"})
            assert external in one_entry_point, f"{_rel(src)}: {sorted(external)}"
            assert external <= declared, f"{_rel(src)}: {sorted(external - declared)} not declared in qk.h or qk_custom.h"
            defined_public |= external
    assert defined_public == declared


def test_core_has_no_python_allocation_or_abort() -> None:
    """Plain C: no Python.h, no malloc/free, no abort/assert/exit in the library."""
    banned = re.compile(r"#\s*include\s*[<\"](Python\.h|assert\.h)|\b(malloc|calloc|realloc|free|abort|exit|assert)\s*\(")
    for path in SOURCES + HEADERS:
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
        match = banned.search(text)
        assert match is None, f"{_rel(path)}: {match.group(0) if match else ''}"


@needs_cc
def test_every_source_builds_alone_and_defines_no_global_data(tmp_path: Path) -> None:
    """``cc -std=c99 -Wall -Wextra -Werror -pedantic -c`` per file; ``nm`` finds no data or bss symbols."""
    objects = []
    for src in SOURCES:
        obj = tmp_path / (src.relative_to(C_DIR).with_suffix(".o").as_posix().replace("/", "__"))
        proc = subprocess.run([CC, *STRICT, "-O1", "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, f"{_rel(src)}:\n{proc.stderr}"
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
            [CC, *STRICT, "-DQK_NO_ISA_DISPATCH", "-c", str(src), "-o", str(tmp_path / "portable.o")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and not proc.stderr, f"{_rel(src)}:\n{proc.stderr}"


@needs_cc
def test_sanitizer_sweep(tmp_path: Path) -> None:
    """The random self-checking sweep (tests/kernels/sanitizer_driver.c) under ASan + UBSan: exit 0, no report."""
    exe = tmp_path / "sanitizer_driver"
    flags = [
        *STRICT, "-O1", "-g", "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
    ]  # fmt: skip
    build = subprocess.run(
        [CC, *flags, *(f"-I{d}" for d in HEADER_DIRS), *map(str, SOURCES), str(DRIVER), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0 and not build.stderr, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), "20261126", "400"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == "", run.stdout + run.stderr
