"""The source list of the C core, ``kernels/c/sources.txt``, as paths.

The list is the one place that names the core's ``.c`` sources and header folders; setup.py,
the C library tests and the standalone C exporter read it through this module (the Makefile
and shell scripts read the text file directly). This module uses the standard library only:
setup.py loads it by file path before the extension exists, so it must not import the
``kernels`` package (whose ``__init__`` loads the extension), ``quant`` or torch.

Paths in the list are relative to the repository root (in an installed copy, to the folder
that holds the ``kernels`` package); pass ``root=Path()`` for relative paths.

>>> [p.as_posix() for p in header_dirs(Path())]
['kernels/c/include', 'kernels/c/src/internal']
>>> core_sources(Path())[0].as_posix()
'kernels/c/src/qk_add.c'
>>> parse("kernels/c/include/  # header folder\\n\\nkernels/c/src/qk_add.c\\n")
(['kernels/c/include/'], ['kernels/c/src/qk_add.c'])
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parents[1]
LIST_FILE = REPO_ROOT / "kernels" / "c" / "sources.txt"


def parse(text: str) -> tuple[list[str], list[str]]:
    """The (header folders, sources) named by the text of a list file, each in file order.

    A '#' starts a comment and blank lines are skipped; an entry ending in '/' is a header
    folder, one ending in '.c' a source. Raises ``ValueError`` naming the line for any other
    entry, an absolute path, a path with '..' or a backslash, or an entry listed twice.
    """
    header_folders: list[str] = []
    sources: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        path = PurePosixPath(entry)
        if path.is_absolute() or ".." in path.parts or "\\" in entry:
            raise ValueError(f"line {number}: {entry!r} must be a '/'-separated path relative to the repository root")
        if entry in seen:
            raise ValueError(f"line {number}: {entry!r} is listed twice")
        seen.add(entry)
        if entry.endswith("/"):
            header_folders.append(entry)
        elif entry.endswith(".c"):
            sources.append(entry)
        else:
            raise ValueError(f"line {number}: {entry!r} is neither a .c source nor a header folder ending in '/'")
    return header_folders, sources


def _read() -> tuple[list[str], list[str]]:
    try:
        return parse(LIST_FILE.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{LIST_FILE}: {error}") from None


def core_sources(root: Path = REPO_ROOT) -> list[Path]:
    """The ``.c`` sources of the C core, in list order, as ``root / entry``."""
    return [root / entry for entry in _read()[1]]


def header_dirs(root: Path = REPO_ROOT) -> list[Path]:
    """The header folders of the C core (public first), in list order, as ``root / entry``."""
    return [root / entry for entry in _read()[0]]
