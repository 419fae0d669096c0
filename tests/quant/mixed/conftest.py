"""What the mixed-precision tests share: a small MLP trained on the digits for a few seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from experiments.data.digits import load_digits
from experiments.training import train


@pytest.fixture(scope="session")
def digits_mlp() -> tuple[nn.Module, torch.Tensor]:
    """``(trained float MLP, 256 training images)``; never modified by a test (they take a deepcopy)."""
    torch.manual_seed(0)
    data = load_digits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    train(model, data.x_train, data.y_train, epochs=6, progress=False)
    return model.eval(), data.x_train[:256]
