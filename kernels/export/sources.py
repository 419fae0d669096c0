"""Which files of the C core an exported program needs: the closure of its entry points over the calls.

Each public source ``src/qk_<name>.c`` defines ``qk_<name>`` (and its ``_scratch_bytes`` and ``_cache_bytes``
twins),
each internal one ``src/internal/qk_<name>.c`` defines ``qk__<name>`` (``kernels/c/sources.txt``
and ``tests/kernels/test_c_library.py`` keep it so). A source needs the sources of every
``qk_`` / ``qk__`` function it calls, directly or through the inline functions of the headers it
includes; the closure from the program's entry points is the set to copy. Headers are always
copied whole (they are small and declare the API the generated code uses). Files are copied
byte for byte, so the exported code is the tested code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from kernels.c_sources import REPO_ROOT, core_sources, header_dirs

__all__ = ["C_ROOT", "header_files", "needed_sources"]

#: The kernel library's folder; exported folders mirror its layout below ``qk/``.
C_ROOT = REPO_ROOT / "kernels" / "c"
_CALL = re.compile(r"\b(qk__?[A-Za-z0-9_]+)\s*\(")
_INCLUDE = re.compile(r'#\s*include\s*"([^"]+)"')
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
#: A prototype (``qk_status qk_lut(...);``), which names a function without calling it.
_PROTOTYPE = re.compile(r"\b(?!return\b|else\b)[A-Za-z_]\w*[\s*]+qk__?\w+\s*\([^;{}]*\)\s*;")


def header_files() -> list[Path]:
    """Every header of the core (public and internal), in list order."""
    return [h for d in header_dirs() for h in sorted(d.glob("*.h"))]


def _calls(path: Path, seen: set[Path]) -> set[str]:
    """Function names called in ``path`` and in the project headers it includes (transitively)."""
    if path in seen:
        return set()
    seen.add(path)
    text = _COMMENT.sub("", path.read_text(encoding="utf-8"))
    names = set(_CALL.findall(_PROTOTYPE.sub("", text)))
    for inc in _INCLUDE.findall(text):
        header = (path.parent / inc).resolve()
        if header.is_file():
            names |= _calls(header, seen)
    return names


def _definer() -> dict[str, Path]:
    """Function name -> the core source that defines it."""
    found: dict[str, Path] = {}
    for src in core_sources():
        stem = src.stem.removeprefix("qk_")
        if src.parent.name == "internal":
            found["qk__" + stem] = src
        else:
            found["qk_" + stem] = src
            found["qk_" + stem + "_scratch_bytes"] = src
            found["qk_" + stem + "_cache_bytes"] = src
    return found


def needed_sources(entry_points: Iterable[str]) -> list[Path]:
    """The core sources that define ``entry_points`` and everything they call, in list order;
    ``ValueError`` for an entry point the core does not define."""
    definer = _definer()
    todo: list[Path] = []
    for name in entry_points:
        if name not in definer:
            raise ValueError(f"export: the kernel library defines no function {name!r}")
        todo.append(definer[name])
    needed: set[Path] = set()
    while todo:
        src = todo.pop()
        if src in needed:
            continue
        needed.add(src)
        todo.extend(definer[n] for n in _calls(src, set()) if n in definer and definer[n] not in needed)
    return [s for s in core_sources() if s in needed]
