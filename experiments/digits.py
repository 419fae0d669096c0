"""Bundled data, training and evaluation: scikit-learn's 8x8 handwritten digits.

The digits set ships inside scikit-learn (1797 images, 10 classes), so nothing is
downloaded. Pixels (0..16) are scaled to [0, 1]; the split is stratified and seeded.
The model trained on it is ``experiments.models.digits_cnn.DigitsCNN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn
from tqdm import tqdm


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


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: Optional[torch.Generator] = None
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in a random order (sequential when ``generator`` is None)."""
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        sel = order[start : start + batch_size]
        yield x[sel], y[sel]


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
    """Train with Adam and cross-entropy; ``on_epoch(epoch)`` runs after each epoch."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        model.train()
        for xb, yb in batches(data.x_train, data.y_train, batch_size, g):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] in eval mode."""
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / len(y)
