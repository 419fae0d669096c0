"""Arithmetic of a tensor with a number (``q / sqrt(d)``, ``x * c``, ``c - x``, ...) lowers to the exact table of
the function and verifies with 0 mismatches."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.datapath import Datapath
from quant.sim.recipe import datapath_recipe

CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "x / sqrt(d)": lambda t: t / math.sqrt(8),
    "x * c": lambda t: t * 0.3,
    "c * x": lambda t: -1.5 * t,
    "x + c": lambda t: t + 2,
    "c + x": lambda t: 0.25 + t,
    "x - c": lambda t: t - 0.75,
    "c - x": lambda t: 1 - t,
    "x.mul(c)": lambda t: t.mul(3.0),
    "x.div(c)": lambda t: t.div(-4.0),
}


class WithNumber(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(self.fn(self.a(x)))
        return out


@pytest.mark.parametrize("preset", ["tflite_int8", "w2a2_pow2_acc16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_arithmetic_with_a_number_is_an_exact_table(case: str, preset: str) -> None:
    torch.manual_seed(0)
    model, dp = WithNumber(CASES[case]).eval(), Datapath.preset(preset)
    x = torch.randn(32, 8)
    handle = quant.attach(model, datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        model(x)
    program = quant.lower(model, handle, x[:1], datapath=dp)
    assert [n.op for n in program.nodes] == ["linear", "lut", "linear"]
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 32 * 3

