"""The on-disk cache of generated arrays: where it lives, hits, misses and damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.data.cache import cache_path, default_cache_dir, load_or_generate


def test_the_default_directory_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "lowbit-quant"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "lowbit-quant"


def test_the_file_is_named_by_the_key(tmp_path: Path) -> None:
    a = cache_path("set", {"seed": 0, "n": 3}, tmp_path)
    assert a == cache_path("set", {"n": 3, "seed": 0}, tmp_path)
    assert a != cache_path("set", {"seed": 1, "n": 3}, tmp_path)
    assert a.parent == tmp_path and a.name.startswith("set-") and a.suffix == ".npz"


def test_a_hit_does_not_generate(tmp_path: Path) -> None:
    calls = []

    def generate() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(5, dtype=np.float32)}

    first = load_or_generate("set", {"seed": 0}, generate, tmp_path)
    second = load_or_generate("set", {"seed": 0}, generate, tmp_path)
    assert len(calls) == 1
    assert np.array_equal(first["x"], second["x"]) and second["x"].dtype == np.float32
    assert list(tmp_path.iterdir()) == [cache_path("set", {"seed": 0}, tmp_path)]  # no temporary left


def test_a_damaged_file_is_regenerated(tmp_path: Path) -> None:
    path = cache_path("set", {"seed": 0}, tmp_path)
    path.write_bytes(b"not an npz")
    out = load_or_generate("set", {"seed": 0}, lambda: {"x": np.ones(2)}, tmp_path)
    assert np.array_equal(out["x"], np.ones(2))
    assert np.array_equal(load_or_generate("set", {"seed": 0}, lambda: {"x": np.zeros(2)}, tmp_path)["x"], np.ones(2))


def test_a_file_saved_for_another_key_is_not_used(tmp_path: Path) -> None:
    load_or_generate("set", {"seed": 0}, lambda: {"x": np.ones(2)}, tmp_path)
    # Another key's file under this key's name (a hash collision, or a file copied by hand).
    cache_path("set", {"seed": 0}, tmp_path).rename(cache_path("set", {"seed": 1}, tmp_path))
    out = load_or_generate("set", {"seed": 1}, lambda: {"x": np.zeros(2)}, tmp_path)
    assert np.array_equal(out["x"], np.zeros(2))
