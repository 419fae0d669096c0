"""Training and evaluation loops shared by the experiments (any dataset of tensors).

``train`` runs Adam with cross-entropy and a cosine schedule over seeded random mini-batches and
returns the mean loss of each epoch; ``accuracy`` is top-1 in eval mode. Both take the tensors
themselves, so they serve every dataset of :mod:`experiments.data`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn
from tqdm import tqdm

__all__ = ["accuracy", "batches", "train"]


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
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    desc: str = "train",
    on_epoch: Optional[Callable[[int, float], None]] = None,
    progress: bool = True,
) -> list[float]:
    """Adam + cross-entropy for ``epochs``; ``on_epoch(epoch, mean loss)`` after each; the mean losses."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        model.train()
        total, count = 0.0, 0
        for xb, yb in batches(x, y, batch_size, g):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(yb), count + len(yb)
        sched.step()
        losses.append(total / max(1, count))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] in eval mode."""
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / len(y)
