"""Empirical bias correction: the corrected layers' output means equal the float model's on the calibration
data (the method's defining property), the mean squared error never grows, a second run changes nothing, and
the shifts are quantizer state that lowering verifies at zero mismatches."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import quant
from quant import Datapath
from quant.ptq import bias_correction
from tests.quant.ptq.support import ACT8, accuracy, calibrated, digits_cnn, weight_spec


def _batches(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[i : i + 128] for i in range(0, len(x), 128)]


def _outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's output on ``x`` (after every hook the module already has)."""
    out: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda _m, _a, y, n=n: out.__setitem__(n, y.detach()))
             for n in names]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def test_every_corrected_layer_has_the_float_output_mean_per_channel() -> None:
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, 3)  # weights and inputs quantized, no output quantizer: outputs are pre-activation
    report = bias_correction(model, handle, _batches(x), progress=False)
    names = [r.name for r in report.layers]
    assert names == list(handle.modules)
    quantized, reference = _outputs(model, names, x), _outputs(float_model, names, x)
    for name in names:
        q, f = quantized[name].double(), reference[name].double()
        axes = tuple(d for d in range(q.dim()) if d != (1 if q.dim() == 4 else q.dim() - 1))
        torch.testing.assert_close(q.mean(axes), f.mean(axes), rtol=0, atol=1e-4 * float(f.abs().max()))
    for r in report.layers:  # a constant per channel removes the error's mean and nothing else
        assert r.error <= r.rtn_error * (1 + 1e-9), r


def test_it_improves_accuracy_at_three_and_two_bits_and_a_second_run_changes_nothing() -> None:
    float_model, x, x_test, y_test = digits_cnn()
    for bits in (3, 2):
        model = copy.deepcopy(float_model)
        handle = calibrated(model, x, bits)
        rtn = accuracy(model, x_test, y_test)
        bias_correction(model, handle, _batches(x), progress=False)
        corrected = accuracy(model, x_test, y_test)
        assert corrected > rtn + 0.05, (bits, rtn, corrected)
        shifts = {n: handle.quantizer(n, "weight").bias_shift.clone() for n in handle.modules}
        bias_correction(model, handle, _batches(x), progress=False)
        for n, s in shifts.items():
            torch.testing.assert_close(handle.quantizer(n, "weight").bias_shift, s, rtol=1e-5, atol=1e-6)


def test_the_shifts_are_state_remove_restores_the_float_model_and_lowering_verifies() -> None:
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    before = copy.deepcopy(model.state_dict())
    handle = calibrated(model, x, 4)
    dp = Datapath.preset("fbgemm_int8")
    plain = quant.lower(model, handle, x[:1], datapath=dp)
    bias_correction(model, handle, _batches(x[:256]), progress=False)
    program = quant.lower(model, handle, x[:1], datapath=dp)
    biases = [(a.params["bias"], b.params["bias"]) for a, b in zip(plain.nodes, program.nodes) if "bias" in b.params]
    assert biases and any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in biases)
    assert quant.verify(model, handle, program, x[:64], progress=False).mismatches == 0

    state = model.state_dict()
    other = copy.deepcopy(float_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other_handle = quant.attach(other, {"*": {"weight": weight_spec(4), "input": ACT8}})
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(other(x[:32]), model(x[:32]))
    other_handle.remove()
    handle.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_input_is_refused_before_any_work() -> None:
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, 4)
    with pytest.raises(ValueError, match="'nope' is not a quantized module"):
        bias_correction(model, handle, [x], layers=["nope"], progress=False)
    with pytest.raises(ValueError, match="no calibration batches"):
        bias_correction(model, handle, [], progress=False)
    assert all(not handle.quantizer(n, "weight").bias_shift.numel() for n in handle.modules)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.fc = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.attn(x, x, x, need_weights=False)[0])
        return out


def test_an_attention_output_projection_is_left_alone_and_named() -> None:
    torch.manual_seed(0)
    model, x = _Attention().eval(), torch.randn(16, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": weight_spec(8), "input": ACT8}, "*.out_proj": {"weight": weight_spec(8)}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    report = bias_correction(model, handle, [x], progress=False)
    assert [r.name for r in report.layers] == ["fc"]
    assert report.skipped == ["attn.out_proj (an attention's output projection, which the attention computes itself)"]
    with pytest.raises(ValueError, match="'attn.out_proj' is a MultiheadAttention's output projection"):
        bias_correction(model, handle, [x], layers=["attn.out_proj"], progress=False)
