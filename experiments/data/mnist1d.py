"""MNIST-1D, generated here with the ``mnist1d`` package's ``make_dataset`` (never downloaded).

Each sample is one of ten 1-D digit templates, padded, dilated, scaled, translated, given
correlated and i.i.d. noise and sheared, then resampled to 40 points (Greydanus, "Scaling
down deep learning", 2020). The package's defaults are used except for ``num_samples`` and
the seed. ``make_dataset`` standardizes the whole set (mean 0, standard deviation 1 over
train and test together) and holds out the last 20 % of its shuffled samples as the test
set. It reseeds Python's and NumPy's global generators, so their states are saved and put
back around the call. The arrays are cached (``experiments.data.cache``) keyed by the
generation arguments and the package version: the first load takes about a second, later
ones a few milliseconds.
"""

from __future__ import annotations

import importlib.metadata
import random
from typing import Any, Mapping, Optional

import numpy as np
import torch

from experiments.data.cache import PathLike, load_or_generate
from experiments.data.dataset import Dataset

__all__ = ["load_mnist1d", "SEQUENCE_LENGTH"]

SEQUENCE_LENGTH = 40
_FORMAT = 1  # bump when generation changes in a way the key below does not show


def _generation_args(num_samples: int, seed: int) -> dict[str, Any]:
    from mnist1d.data import get_dataset_args

    args: dict[str, Any] = get_dataset_args(as_dict=True)
    args.pop("url", None)  # only the download path uses it
    args.update(num_samples=num_samples, seed=seed)
    return args


def _generate(args: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset`` with ``args``; the global RNG states are restored after."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": raw["x"].astype(np.float32),
        "y_train": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int64),
    }


def load_mnist1d(*, seed: int = 0, num_samples: int = 5000, cache_dir: Optional[PathLike] = None) -> Dataset:
    """MNIST-1D: ``x`` float32 ``(N, 1, 40)`` standardized, ``y`` int64 in [0, 10).

    ``num_samples`` (a multiple of 10, at least 20) are made, ``num_samples // 10`` per
    class; 80 % train, 20 % test (4000 and 1000 by default). The same ``seed`` gives the
    same arrays; the package's published set is ``seed=42``.
    """
    if num_samples < 20 or num_samples % 10:
        raise ValueError(f"num_samples={num_samples} must be a multiple of 10, at least 20")
    args = _generation_args(num_samples, seed)
    key = {"format": _FORMAT, "mnist1d": importlib.metadata.version("mnist1d"), "args": args}
    arrays = load_or_generate("mnist1d", key, lambda: _generate(args), cache_dir)

    def inputs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Dataset(
        name="mnist1d",
        x_train=inputs(arrays["x_train"]),
        y_train=labels(arrays["y_train"]),
        x_test=inputs(arrays["x_test"]),
        y_test=labels(arrays["y_test"]),
        num_classes=10,
        input_shape=(1, SEQUENCE_LENGTH),
    )
