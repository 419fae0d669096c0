"""Fashion-MNIST read from the Debian package ``dataset-fashion-mnist`` (nothing is downloaded).

The package installs Zalando's four IDX files, gzipped, in ``/usr/share/datasets/fashion-mnist``:
``train-images-idx3-ubyte.gz`` (60000 x 28 x 28 uint8), ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` (10000 x 28 x 28) and ``t10k-labels-idx1-ubyte.gz``; the split
is the published one. They are parsed here with numpy (:func:`read_idx`). Install them with
``make data`` (as root: ``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from experiments.data.cache import PathLike
from experiments.data.dataset import Dataset, DatasetNotInstalledError
from experiments.data.split import stratified_indices

__all__ = ["CLASSES", "FASHION_MNIST_DIR", "INSTALL_COMMAND", "load_fashion_mnist", "read_idx"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_COMMAND = "make data (as root: apt-get install --no-install-recommends dataset-fashion-mnist)"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX type codes (the third byte of the magic number) and their big-endian element types.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike) -> np.ndarray:
    """The array in an IDX file (gzipped when the name ends in ``.gz``), in native byte order.

    Layout: two zero bytes, a type code, the number of dimensions ``d``, ``d`` big-endian
    uint32 sizes, then the elements big-endian in C order. ``ValueError`` when the header
    or the length does not match.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {data[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, the header {shape} {dtype} needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FILES[split]
    missing = [name for name in (images_name, labels_name) if not (root / name).is_file()]
    if missing:
        raise DatasetNotInstalledError(
            f"Fashion-MNIST is not installed: {', '.join(str(root / m) for m in missing)} missing; "
            f"install it with {INSTALL_COMMAND}"
        )
    images, labels = read_idx(root / images_name), read_idx(root / labels_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} are not Fashion-MNIST's")
    return images, labels


def load_fashion_mnist(
    *,
    seed: int = 0,
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    root: Optional[PathLike] = None,
) -> Dataset:
    """Fashion-MNIST: ``x`` float32 ``(N, 1, 28, 28)``, pixels 0..255 scaled to [0, 1]; ``y`` int64 in [0, 10).

    The published split, 60000 training and 10000 test images, unless ``subset`` asks for
    a smaller one: ``subset`` training images and ``test_subset`` test images (by default
    the same fraction of the test set, ``round(subset / 6)``), each stratified by class and
    chosen with ``seed`` (the samples keep the files' order). Without a subset ``seed`` has
    no effect. ``root`` replaces ``/usr/share/datasets/fashion-mnist``.
    ``DatasetNotInstalledError`` names the install command when the files are absent.
    """
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    x_train, y_train = _read_split(folder, "train")
    x_test, y_test = _read_split(folder, "test")
    if subset is None and test_subset is not None:
        raise ValueError("test_subset needs subset (the number of training samples)")
    if subset is not None:
        if not 1 <= subset <= len(y_train):
            raise ValueError(f"subset={subset} must be in [1, {len(y_train)}]")
        n_test = round(subset * len(y_test) / len(y_train)) if test_subset is None else test_subset
        if not 1 <= n_test <= len(y_test):
            raise ValueError(f"test_subset={n_test} must be in [1, {len(y_test)}]")
        tr = stratified_indices(y_train, subset, seed)
        te = stratified_indices(y_test, n_test, seed + 1)
        x_train, y_train, x_test, y_test = x_train[tr], y_train[tr], x_test[te], y_test[te]

    def inputs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)).unsqueeze(1).div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name="fashion_mnist",
        x_train=inputs(x_train),
        y_train=labels(y_train),
        x_test=inputs(x_test),
        y_test=labels(y_test),
        num_classes=len(CLASSES),
        input_shape=(1, 28, 28),
    )
