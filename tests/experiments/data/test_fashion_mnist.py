"""Fashion-MNIST from the Debian package: the IDX reader, subsets, the missing-package error, real loads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.data import DatasetNotInstalledError, fashion_mnist, load_dataset
from experiments.data.fashion_mnist import read_idx


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_fake_set(root: Path, n_train: int, n_test: int) -> None:
    """Four gzipped IDX files shaped like Fashion-MNIST's; image ``i`` is all ``i % 250``, label ``i % 10``."""
    root.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.broadcast_to((np.arange(n) % 250).astype(np.uint8)[:, None, None], (n, 28, 28))
        labels = (np.arange(n) % 10).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.ascontiguousarray(images), 0x08)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))


@pytest.mark.parametrize(("dtype", "code"), [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D)])
def test_read_idx_returns_the_array_written(tmp_path: Path, dtype: type, code: int) -> None:
    array = (np.arange(24).reshape(2, 3, 4) * 7 - 20).astype(dtype) if dtype != np.uint8 else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw, packed = tmp_path / "a.idx", tmp_path / "a.idx.gz"
    raw.write_bytes(_idx_bytes(array, code))
    packed.write_bytes(gzip.compress(_idx_bytes(array, code)))
    for path in (raw, packed):
        out = read_idx(path)
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative and np.array_equal(out, array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x02ab", "not an IDX file"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03ab", "needs 11"),
    ],
)
def test_read_idx_refuses_a_malformed_file(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "bad.idx").write_bytes(data)
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad.idx")


def test_missing_files_name_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotInstalledError, match=r"make data.*apt-get install .*dataset-fashion-mnist") as info:
        load_dataset("fashion_mnist", root=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_the_default_folder_is_the_debian_package_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetNotInstalledError, match=str(tmp_path / "absent")):
        load_dataset("fashion_mnist")


def test_a_subset_is_stratified_and_seeded(tmp_path: Path) -> None:
    _write_fake_set(tmp_path / "fake", n_train=600, n_test=100)
    d = load_dataset("fashion_mnist", subset=60, root=tmp_path / "fake", seed=5)
    assert d.x_train.shape == (60, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6] * 10 and torch.bincount(d.y_test).tolist() == [1] * 10
    # Each fake image is constant i % 250 with label i % 10, so pixels and labels stay paired.
    assert torch.equal((d.x_train[:, 0, 0, 0] * 255).round().long() % 10, d.y_train)
    again = load_dataset("fashion_mnist", subset=60, root=tmp_path / "fake", seed=5)
    other = load_dataset("fashion_mnist", subset=60, root=tmp_path / "fake", seed=6)
    assert torch.equal(d.x_train, again.x_train) and not torch.equal(d.x_train, other.x_train)
    assert len(load_dataset("fashion_mnist", subset=60, test_subset=30, root=tmp_path / "fake").y_test) == 30


@pytest.mark.parametrize(
    ("options", "message"),
    [({"subset": 0}, "subset=0"), ({"subset": 601}, "subset=601"), ({"test_subset": 5}, "needs subset"),
     ({"subset": 60, "test_subset": 101}, "test_subset=101")],
)  # fmt: skip
def test_subset_sizes_are_checked(tmp_path: Path, options: dict[str, int], message: str) -> None:
    _write_fake_set(tmp_path / "fake", n_train=600, n_test=100)
    with pytest.raises(ValueError, match=message):
        load_dataset("fashion_mnist", root=tmp_path / "fake", **options)


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_the_installed_set_is_the_published_split() -> None:
    d = load_dataset("fashion_mnist")
    assert (d.name, d.num_classes, d.input_shape) == ("fashion_mnist", 10, (1, 28, 28))
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert torch.bincount(d.y_train).tolist() == [6000] * 10 and torch.bincount(d.y_test).tolist() == [1000] * 10


@pytest.mark.usefixtures("fashion_mnist_installed")
def test_a_subset_of_the_installed_set() -> None:
    d = load_dataset("fashion_mnist", subset=1200, seed=1)
    assert d.x_train.shape == (1200, 1, 28, 28) and d.x_test.shape == (200, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [120] * 10 and torch.bincount(d.y_test).tolist() == [20] * 10
    assert torch.equal(d.x_test, load_dataset("fashion_mnist", subset=1200, seed=1).x_test)
