"""Bundled data, training and evaluation: scikit-learn's 8x8 handwritten digits.

The digits set ships inside scikit-learn (1797 images, 10 classes), so nothing is
downloaded. Pixels (0..16) are scaled to [0, 1]; the split is stratified and seeded.
The model trained on it is ``experiments.models.digits_cnn.DigitsCNN``.
"""

from __future__ import annotations

__all__ = ["DigitsData", "accuracy", "batches", "load_digits_data", "train"]

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from experiments import training
from experiments.training import accuracy, batches


@dataclass(frozen=True)
class DigitsData:
    """Train/test tensors: images ``(N, 1, 8, 8)`` float32 in [0, 1], labels ``(N,)`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_data(test_fraction: float = 0.25, seed: int = 0) -> DigitsData:
    """Load scikit-learn's bundled digits, scaled to [0, 1], with a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in (0, 1)")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y.numpy())
    return DigitsData(x[tr], y[tr], x[te], y[te])


def train(
    model: nn.Module,
    data: DigitsData,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "train",
    on_epoch: Optional[Callable[[int], None]] = None,
    progress: bool = True,
) -> None:
    """Train with Adam and cross-entropy (:func:`experiments.training.train`); ``on_epoch(epoch)`` after each epoch."""
    hook = None if on_epoch is None else (lambda epoch, loss: on_epoch(epoch))
    training.train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                   desc=desc, on_epoch=hook, progress=progress)  # fmt: skip
