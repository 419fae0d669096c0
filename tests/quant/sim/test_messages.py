"""Inputs the simulation cannot use are refused with a message that names the problem; inputs it can use
(an empty batch, a shared module named by its second name) are not refused at all."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.spec import QuantSpec
from quant.sim.quantizer import Quantizer

W4 = QuantSpec(bits=4, signed=True, symmetric=True, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def test_an_empty_batch_right_after_attach_gives_the_empty_output() -> None:
    model = _model()
    handle = quant.attach(model, {"*": {"weight": W4, "input": A4}})
    out = model(torch.randn(0, 3, 5, 5))
    assert out.shape == (0, 3)
    quantizer = model[0].input_quantizer
    assert isinstance(quantizer, Quantizer)
    assert not quantizer.calibrated  # nothing was observed
    assert model(torch.randn(2, 3, 5, 5)).shape == (2, 3) and quantizer.calibrated
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(0, 3, 5, 5))
        model(torch.randn(4, 3, 5, 5))
    handle.freeze()
    assert model(torch.randn(0, 3, 5, 5)).shape == (0, 3)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_zero_point_is_named(bad: float) -> None:
    for fn in (quant.quantize, quant.fake_quantize):
        with pytest.raises(ValueError, match=r"zero_point must be a finite integer in \[0, 15\], got"):
            fn(torch.randn(4), torch.tensor(0.1), torch.tensor(bad), A4)
    with pytest.raises(ValueError, match=r"zero_point must be an integer tensor in \[0, 15\], got dtype torch.bool"):
        quant.fake_quantize(torch.randn(4), torch.tensor(0.1), torch.tensor(True), A4)


def test_bool_codes_to_dequantize_are_named() -> None:
    with pytest.raises(TypeError, match="dequantize expects integer codes \\(an integer dtype\\), got torch.bool"):
        quant.dequantize(torch.tensor([True, False]), torch.tensor(0.1), torch.tensor(0), A4)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a  # one module under two names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(self.a(x))
        return out


@pytest.mark.parametrize("rule", ["a", "b"])
def test_a_rule_naming_either_alias_of_a_shared_module_applies_to_it(rule: str) -> None:
    model = _Shared()
    handle = quant.attach(model, {rule: {"weight": W4}})
    assert list(handle.modules) == ["a"]  # listed once, under its first name
    assert model.b is model.a and torch.equal(model.b.weight, model.a.weight)
    model(torch.randn(2, 4))


def test_later_rules_on_a_shared_module_win_under_either_name() -> None:
    handle = quant.attach(_Shared(), {"a": {"weight": W4}, "b": {"weight": W4.with_(bits=8)}})
    assert "int8" in repr(handle) and "int4" not in repr(handle)


def test_torch_jit_script_is_refused_naming_the_cause() -> None:
    model = _model()
    quant.attach(model, {"*": {"weight": W4, "input": A4}})
    with pytest.raises(TypeError, match="torch.jit.script cannot compile a model with quantizers .*quant.lower"):
        with pytest.warns(DeprecationWarning):
            torch.jit.script(model)
