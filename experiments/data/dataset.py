"""The value every loader of ``experiments.data`` returns, and the error for data not installed.

A :class:`Dataset` is a fixed train/test split held as tensors: inputs float32 of shape
``(N, *input_shape)``, labels int64 of shape ``(N,)`` in ``[0, num_classes)``. It is checked
when built, so a loader that returns one has returned a usable split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Dataset", "DatasetNotInstalledError"]


class DatasetNotInstalledError(FileNotFoundError):
    """A dataset's files or the programs that generate it are not on this machine.

    The message names what is missing and the command that installs it (``make data``).
    """


@dataclass(frozen=True)
class Dataset:
    """A train/test split: ``x_*`` float32 ``(N, *input_shape)``, ``y_*`` int64 ``(N,)``.

    ``input_shape`` is one sample's shape without the batch, e.g. ``(1, 28, 28)`` for an
    image or ``(40, 49)`` for ``(channels, frames)`` audio features. Labels lie in
    ``[0, num_classes)``. Construction raises ``ValueError`` naming the field at fault.

    >>> d = Dataset("toy", torch.zeros(4, 1, 2), torch.tensor([0, 1, 0, 1]),
    ...             torch.zeros(2, 1, 2), torch.tensor([1, 0]), num_classes=2, input_shape=(1, 2))
    >>> d.x_train.shape, d.num_classes
    (torch.Size([4, 1, 2]), 2)
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Dataset.name must be a non-empty string")
        if self.num_classes < 2:
            raise ValueError(f"Dataset.num_classes={self.num_classes} must be at least 2")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
                raise ValueError(f"Dataset.x_{split} must be a float32 tensor, got {getattr(x, 'dtype', type(x))}")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
                raise ValueError(f"Dataset.y_{split} must be an int64 tensor, got {getattr(y, 'dtype', type(y))}")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"Dataset.x_{split} has sample shape {tuple(x.shape[1:])}, input_shape is {self.input_shape}")
            if y.dim() != 1 or len(y) != len(x):
                raise ValueError(f"Dataset.y_{split} has shape {tuple(y.shape)}, expected ({len(x)},)")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"Dataset.y_{split} has labels outside [0, {self.num_classes})")
