"""Exact comparison of integer results against oracle values."""

from __future__ import annotations

import numpy as np
import torch


def assert_exact(actual: torch.Tensor, expected: object, what: str) -> None:
    """Exact equality; on failure name the first differing index and both values."""
    exp = torch.as_tensor(np.asarray(expected, dtype=np.int64)) if not isinstance(expected, torch.Tensor) else expected
    exp = exp.to(torch.int64)
    act = actual.to(torch.int64)
    assert tuple(act.shape) == tuple(exp.shape), f"{what}: shape {tuple(act.shape)} != expected {tuple(exp.shape)}"
    diff = (act != exp).nonzero()
    if diff.shape[0]:
        idx = tuple(int(i) for i in diff[0].tolist())
        raise AssertionError(
            f"{what}: {diff.shape[0]} of {act.numel()} values differ; first at index {idx}: "
            f"got {int(act[idx])}, expected {int(exp[idx])}"
        )
