"""SmoothQuant: the rescaled float model computes the original function, the input and weight ranges of each
channel become ``(max|X| max|W|)^(1-alpha)`` and ``(max|X| max|W|)^alpha`` (the method's defining property), activation
outliers cost much less after it, and the integer program of a smoothed model verifies at zero mismatches."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn

import quant
from quant import Datapath, QuantSpec
from quant.ptq import smooth
from quant.ptq.calibration import Layer, capture, float_reference
from quant.ptq.channel_pairs import find_pairs, input_ranges

WEIGHT8 = QuantSpec(bits=8, signed=True, symmetric=True, granularity="channel", axis=0)


class _Block(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear, with a few input channels of the first Linear far larger."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10)
        with torch.no_grad():
            self.norm.weight[:3] = 30.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(self.norm(x))))
        return out


def _attached(model: nn.Module, x: torch.Tensor, act_bits: int = 8) -> quant.QuantHandle:
    act = QuantSpec(bits=act_bits, signed=False, symmetric=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": WEIGHT8, "input": act}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    return handle


def _data() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _Block(), torch.randn(512, 32)


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_the_function_is_kept_and_the_ranges_meet(alpha: float) -> None:
    reference, x = _data()
    model = copy.deepcopy(reference)
    handle = _attached(model, x)
    inputs_before = torch.cat(capture(model, _layer(model, handle), [x], quantized=False, handle=handle))
    w_before = input_ranges(find_pairs(model, handle, "smooth", x)[0][0])
    report = smooth(model, handle, [x[:256], x[256:]], alpha=alpha, progress=False)
    assert report.options["pairs"] == ["norm -> fc1"]
    with torch.no_grad(), float_reference(handle):
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
    inputs = torch.cat(capture(model, _layer(model, handle), [x], quantized=False, handle=handle))
    x_max, x_max_before = inputs.abs().amax(dim=0), inputs_before.abs().amax(dim=0)
    w_max = input_ranges(find_pairs(model, handle, "smooth", x)[0][0])
    product = x_max_before * w_before  # x / s = (x w)^(1 - alpha), w s = (x w)^alpha: equal at alpha = 0.5
    torch.testing.assert_close(x_max, product ** (1 - alpha), rtol=1e-4, atol=0)
    torch.testing.assert_close(w_max, product**alpha, rtol=1e-4, atol=0)


def _layer(model: nn.Module, handle: quant.QuantHandle) -> Layer:
    return Layer("fc1", model.get_submodule("fc1"), handle.quantizer("fc1", "weight"))


@pytest.mark.parametrize("act_bits", [8, 6])
def test_outlier_channels_cost_much_less_after_smoothing(act_bits: int) -> None:
    reference, x = _data()
    model = copy.deepcopy(reference)
    handle = _attached(model, x, act_bits)
    target = reference(x).detach()
    with torch.no_grad():
        before = float(((model(x) - target) ** 2).mean())
        report = smooth(model, handle, [x], progress=False)
        after = float(((model(x) - target) ** 2).mean())
    assert after < before / 3, (before, after)
    assert report.layers[0].error < report.layers[0].rtn_error / 3


def test_a_smoothed_model_lowers_and_verifies_and_remove_restores_it() -> None:
    reference, x = _data()
    model = copy.deepcopy(reference)
    before = copy.deepcopy(model.state_dict())
    handle = _attached(model, x)
    smooth(model, handle, [x], progress=False)
    program = quant.lower(model, handle, x[:1], datapath=Datapath.preset("fbgemm_int8"))
    assert quant.verify(model, handle, program, x[:64], progress=False).mismatches == 0
    handle.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_refusals_name_the_cause() -> None:
    reference, x = _data()
    model = copy.deepcopy(reference)
    handle = _attached(model, x)
    with pytest.raises(ValueError, match=r"alpha=1.5 must lie in \[0, 1\]"):
        smooth(model, handle, [x], alpha=1.5, progress=False)
    model = copy.deepcopy(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"fc1": {"weight": WEIGHT8}, "fc2": {"weight": WEIGHT8}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    with pytest.raises(ValueError, match="no pair of layers"):
        smooth(model, handle, [x], progress=False)
