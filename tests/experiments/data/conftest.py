"""Fixtures for the dataset tests: a private cache directory, and skips naming the install command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments.data import fashion_mnist, spoken_digits


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches under its own temporary ``XDG_CACHE_HOME``, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "lowbit-quant"


@pytest.fixture
def fashion_mnist_installed() -> None:
    """Skips unless the Debian package ``dataset-fashion-mnist`` is installed."""
    if not (fashion_mnist.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"dataset-fashion-mnist is not installed; install with {fashion_mnist.INSTALL_COMMAND}")


@pytest.fixture
def speech_tools_installed() -> None:
    """Skips unless espeak-ng and sox are installed."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip(f"espeak-ng or sox is not installed; install with {spoken_digits.INSTALL_COMMAND}")
