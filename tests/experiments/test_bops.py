"""experiments.run.bit_operations: MACs x operand bits per layer, the attention's projections and matmuls and
a recurrent layer's gate products over every step included, each counted by hand here."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

import quant
from experiments.run import bit_operations
from quant.contract.spec import QuantSpec

W4, A8 = QuantSpec(bits=4, granularity="channel", axis=0), QuantSpec(bits=8, signed=False, symmetric=False)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.lstm = nn.LSTM(16, 8, batch_first=True)
        self.up = nn.ConvTranspose1d(8, 4, 3)
        self.fc = nn.Linear(4 * 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # x: (N, 5, 16)
        y = self.attn(x, x, x, need_weights=False)[0]
        h = self.lstm(y)[0]                                   # (N, 5, 8)
        out: torch.Tensor = self.fc(torch.flatten(self.up(h.transpose(1, 2)), 1))
        return out


def test_every_layer_counts_its_products_at_its_operands_bits() -> None:
    model = Mixed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": W4, "input": A8}, "attn": {"key": QuantSpec(bits=6)}})
    bops = bit_operations(model, handle, torch.randn(3, 5, 16))
    l, e = 5, 16
    projections = (3 * l * e * e) * 4 * 8 + (l * e * e) * 4 * 8   # q, k, v and out (its input: the context, 8 bits)
    matmuls = (l * l * e) * 8 * 6 + (l * l * e) * 8 * 8           # Q K^T (key at 6 bits), P V
    assert bops["attn"] == projections + matmuls
    assert bops["lstm"] == 5 * 4 * 8 * (16 + 8) * 4 * 8            # steps x gates x (input + hidden) products
    assert bops["up"] == 8 * 5 * (4 * 3) * 4 * 8                   # every input element to C_out x k outputs
    assert bops["fc"] == 4 * 7 * 2 * 4 * 8
    assert bit_operations(model, None, torch.randn(1, 5, 16))["lstm"] == 5 * 4 * 8 * (16 + 8) * 32 * 32
