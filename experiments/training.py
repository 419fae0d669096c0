"""Training and evaluation loops shared by the experiments (any dataset of tensors).

``train`` runs Adam with cross-entropy and a cosine schedule over seeded random mini-batches and
returns the mean loss of each epoch; ``accuracy`` is top-1 in eval mode. Both take the tensors
themselves, so they serve every dataset of :mod:`experiments.data`.

With ``checkpoint=path``, ``train`` writes the whole training state after every epoch (the
model's state dict, quantizers included, the optimizer, the schedule, the batch-order generator,
torch's global RNG and the losses so far; atomically) and, when the file exists at the start,
continues after its last epoch: a run killed mid-epoch and started again ends with exactly the
weights of an uninterrupted one.
"""

from __future__ import annotations

import os
from pathlib import Path
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
    checkpoint: Optional[Path] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> list[float]:
    """Adam + cross-entropy for ``epochs``; ``on_epoch(epoch, mean loss)`` after each (``on_batch(epoch, batch)``
    after each step); resumable through ``checkpoint`` (see the module docstring); the mean losses."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state.get("epochs") != epochs:
            raise ValueError(f"{checkpoint}: a checkpoint of a {state.get('epochs')}-epoch run, not of {epochs} epochs")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        g.set_state(state["batch_order"])
        torch.set_rng_state(state["rng"])
        losses, start = list(state["losses"]), int(state["epoch"]) + 1
    for epoch in tqdm(range(start, epochs), desc=desc, leave=False, disable=not progress, initial=start, total=epochs):
        model.train()
        total, count = 0.0, 0
        for b, (xb, yb) in enumerate(batches(x, y, batch_size, g)):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(yb), count + len(yb)
            if on_batch is not None:
                on_batch(epoch, b)
        sched.step()
        losses.append(total / max(1, count))
        if checkpoint is not None:
            state = {"epoch": epoch, "epochs": epochs, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "schedule": sched.state_dict(), "batch_order": g.get_state(), "rng": torch.get_rng_state(),
                     "losses": losses}  # fmt: skip
            tmp = checkpoint.with_suffix(checkpoint.suffix + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, checkpoint)
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
