"""Generated arrays cached on disk, keyed by the arguments that generated them.

A dataset made by a generator (``mnist1d``, ``spoken_digits``) is saved once as
``<cache dir>/<name>-<key hash>.npz`` and read back on every later load with the same
arguments. The directory is ``$XDG_CACHE_HOME/lowbit-quant`` (``~/.cache/lowbit-quant``
when ``XDG_CACHE_HOME`` is unset) unless a loader is given ``cache_dir``. Files are written
to a temporary name and renamed, so a reader never sees half a file, and the key is stored
inside the file and compared on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

__all__ = ["PathLike", "default_cache_dir", "cache_path", "load_or_generate"]

_KEY_FIELD = "__cache_key__"

PathLike = Union[str, os.PathLike[str]]
"""A directory given as a string or a path."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lowbit-quant``, or ``~/.cache/lowbit-quant`` when it is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit-quant"


def _key_json(key: Mapping[str, object]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def cache_path(name: str, key: Mapping[str, object], cache_dir: Optional[PathLike] = None) -> Path:
    """The file that holds ``name`` generated with ``key`` (JSON-serializable generation arguments)."""
    digest = hashlib.sha256(_key_json(key).encode()).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{name}-{digest}.npz"


def _read(path: Path, key_json: str) -> Optional[dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    stored = arrays.pop(_KEY_FIELD, None)
    if stored is None or str(stored) != key_json:
        return None
    return arrays


def load_or_generate(
    name: str,
    key: Mapping[str, object],
    generate: Callable[[], Mapping[str, np.ndarray]],
    cache_dir: Optional[PathLike] = None,
) -> dict[str, np.ndarray]:
    """The arrays cached for ``(name, key)``, or ``generate()``'s, saved first.

    A missing, unreadable or mismatching file is regenerated and replaced; ``generate`` is
    not called when the file is good.
    """
    path = cache_path(name, key, cache_dir)
    key_json = _key_json(key)
    cached = _read(path, key_json) if path.exists() else None
    if cached is not None:
        return cached
    arrays = {k: np.asarray(v) for k, v in generate().items()}
    if _KEY_FIELD in arrays:
        raise ValueError(f"generated arrays may not be named {_KEY_FIELD!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        payload: dict[str, Any] = {**arrays, _KEY_FIELD: np.asarray(key_json)}
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the cache from other users of the machine
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return arrays
