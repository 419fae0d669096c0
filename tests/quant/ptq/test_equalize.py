"""Cross-layer equalization: the rescaled float model computes the original function, each pair's channel
ranges end equal in producer and consumer (the method's defining property), per-tensor low-bit weights
quantize better, and the factors are quantizer state that lowering verifies at zero mismatches."""

from __future__ import annotations

import copy
from typing import cast
import warnings

import pytest
import torch
import torch.nn as nn

import quant
from quant import Datapath, QuantSpec
from quant.ptq import adaround, equalize
from quant.ptq.calibration import float_reference
from quant.ptq.channel_pairs import find_pairs, input_ranges
from tests.quant.ptq.support import ACT8, accuracy, digits_cnn


def _per_tensor(model: nn.Module, x: torch.Tensor, bits: int) -> quant.QuantHandle:
    spec = QuantSpec(bits=bits, signed=True, symmetric=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": spec, "input": ACT8}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    return handle


def _batches(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[i : i + 128] for i in range(0, len(x), 128)]


def test_the_function_is_kept_and_every_pair_ends_with_equal_ranges() -> None:
    float_model, x, x_test, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = _per_tensor(model, x, 4)
    report = equalize(model, handle, _batches(x), progress=False)
    assert report.options["pairs"] == ["features.0 -> features.3", "features.3 -> features.7", "features.7 -> classifier"]
    with torch.no_grad(), float_reference(handle):
        torch.testing.assert_close(model(x_test), float_model(x_test), rtol=1e-4, atol=1e-4)
    pairs, _ = find_pairs(model, handle, "equalize", x[:8])
    for pair in pairs:
        rows = pair.producer.weight.abs().reshape(pair.channels, -1).amax(dim=1)
        torch.testing.assert_close(rows, input_ranges(pair), rtol=2e-3, atol=0)


def test_per_tensor_weights_quantize_better_after_equalization() -> None:
    float_model, x, x_test, y_test = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = _per_tensor(model, x, 4)
    rtn = accuracy(model, x_test, y_test)
    report = equalize(model, handle, _batches(x), progress=False)
    assert all(r.error < r.rtn_error for r in report.layers), report.table()
    assert accuracy(model, x_test, y_test) >= rtn


def test_the_factors_are_state_lowering_verifies_and_remove_restores() -> None:
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    before = copy.deepcopy(model.state_dict())
    handle = _per_tensor(model, x, 8)
    equalize(model, handle, _batches(x[:256]), progress=False)
    program = quant.lower(model, handle, x[:1], datapath=Datapath.preset("fbgemm_int8"))
    assert quant.verify(model, handle, program, x[:64], progress=False).mismatches == 0
    other = copy.deepcopy(float_model)
    other_handle = _per_tensor(other, x, 8)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(other(x[:32]), model(x[:32]))
    other_handle.remove()
    handle.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Chain(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Conv2d(2, 4, 3), act, nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(self.act(self.a(x)))
        return out


def test_refusals_name_the_cause_before_any_change() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 2, 6, 6)
    model = _Chain(nn.ReLU6())
    handle = _per_tensor(model, x, 4)
    with pytest.raises(ValueError, match=r"no pair of layers.*ReLU6"):
        equalize(model, handle, [x], progress=False)
    with pytest.raises(ValueError, match="iterations=0"):
        equalize(model, handle, [x], iterations=0, progress=False)
    assert not handle.quantizer("a", "weight").has_prescale

    model = _Chain(nn.ReLU())
    handle = _per_tensor(model, x, 4)
    adaround(model, handle, [x], iterations=5, progress=False)
    with pytest.raises(ValueError, match="holds chosen codes"):
        equalize(model, handle, [x], progress=False)

    model = _Chain(nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": QuantSpec(bits=4), "input": ACT8}})
    with pytest.raises(ValueError, match="calibrate the handle first"):
        equalize(model, handle, [x], progress=False)


def test_a_depthwise_chain_is_equalized_through_its_groups() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(), nn.Conv2d(8, 5, 1))
    with torch.no_grad():
        cast(nn.Conv2d, model[2]).weight.mul_(torch.logspace(-2, 1, 8).reshape(8, 1, 1, 1))  # channel ranges 1000x apart
    reference = copy.deepcopy(model)
    x = torch.randn(32, 3, 10, 10)
    handle = _per_tensor(model, x, 4)
    report = equalize(model, handle, [x], progress=False)
    assert report.options["pairs"] == ["0 -> 2", "2 -> 4"]
    with torch.no_grad(), float_reference(handle):
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
    errors = {r.name: r for r in report.layers}
    assert errors["2"].error < errors["2"].rtn_error / 2, report.table()
