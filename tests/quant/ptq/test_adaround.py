"""AdaRound (quant.ptq.adaround): its codes are the nearest or the other neighbour, they reproduce each layer's
float output better than nearest, they live in the quantizers only, and lowering runs them unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.datapath import Datapath
from quant.ptq import adaround
from quant.sim.fast import original_parameter
from tests.quant.ptq.support import accuracy, calibrated, digits_cnn, program_weight_codes, weight_spec

ITERATIONS = 250


def _batches(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[i : i + 128] for i in range(0, len(x), 128)]


@pytest.mark.parametrize("bits", [4, 3])
def test_codes_move_at_most_one_step_from_nearest_and_every_layer_gets_closer_to_float(bits: int) -> None:
    """The paper's defining properties: each chosen code is the floor or the ceiling of w/s (so within one of
    the nearest code), and each layer's output error on the calibration inputs is below round-to-nearest's;
    the model's accuracy does not drop below round-to-nearest's."""
    float_model, x, x_test, y_test = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, bits)
    rtn_accuracy = accuracy(model, x_test, y_test)
    report = adaround(model, handle, _batches(x), iterations=ITERATIONS, progress=False)
    assert [r.name for r in report.layers] == [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for r in report.layers:
        assert r.error < r.rtn_error, r
        assert 0 < r.changed_codes < r.codes, r
    for r in report.layers:
        q = handle.quantizer(r.name, "weight")
        w = original_parameter(handle.modules[r.name])
        s, z = q.effective_qparams()
        scaled = w * torch.reciprocal(s.reshape(-1, *([1] * (w.dim() - 1))))
        codes = q.codes(w)
        lo, hi = torch.floor(scaled).to(torch.int64), torch.ceil(scaled).to(torch.int64)
        inside = (codes >= q.spec.qmin) & (codes <= q.spec.qmax)
        assert bool(inside.all())
        assert bool(((codes == lo.clamp(q.spec.qmin, q.spec.qmax)) | (codes == hi.clamp(q.spec.qmin, q.spec.qmax))).all())
        assert int(q.code_offsets.abs().max()) <= 1
    assert accuracy(model, x_test, y_test) >= rtn_accuracy - 0.005


def test_the_result_is_quantizer_state_only() -> None:
    """The float parameters are untouched (remove() gives them back bit for bit), the same seed gives the same
    codes, and the state loads into a freshly attached handle, which then computes the same outputs."""
    float_model, x, x_test, _ = digits_cnn()
    before = copy.deepcopy(float_model.state_dict())
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, 3)
    adaround(model, handle, _batches(x[:256]), iterations=60, progress=False)
    offsets = {n: handle.quantizer(n, "weight").code_offsets.clone() for n in handle.modules}
    out = model(x_test[:32]).detach()
    saved = copy.deepcopy(model.state_dict())

    again = copy.deepcopy(float_model)
    again_handle = calibrated(again, x, 3)
    adaround(again, again_handle, _batches(x[:256]), iterations=60, progress=False)
    assert all(torch.equal(offsets[n], again_handle.quantizer(n, "weight").code_offsets) for n in offsets)

    loaded = copy.deepcopy(float_model)
    calibrated(loaded, x[:64], 3)  # other qparams until the state arrives
    loaded.load_state_dict(saved)
    assert torch.equal(loaded(x_test[:32]), out)

    handle.remove()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_lowering_takes_the_chosen_codes_and_verifies_at_zero_mismatches() -> None:
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, 4)
    dp = Datapath.preset("fbgemm_int8")  # uint8 activations, int8 weight operands
    nearest = program_weight_codes(quant.lower(model, handle, x[:1], datapath=dp))
    adaround(model, handle, _batches(x[:256]), iterations=60, progress=False)
    program = quant.lower(model, handle, x[:1], datapath=dp)
    chosen = program_weight_codes(program)
    assert chosen.keys() == nearest.keys() and any(not np.array_equal(chosen[k], nearest[k]) for k in chosen)
    for name, module in handle.modules.items():
        codes = handle.quantizer(name, "weight").codes(original_parameter(module)).numpy()
        assert any(v.shape == codes.shape and np.array_equal(v, codes) for v in chosen.values()), name
    report = quant.verify(model, handle, program, x[:64], progress=False)
    assert report.mismatches == 0


class _KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(6, 12), nn.Linear(12, 3)

    def forward(self, features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        out: torch.Tensor = self.second(torch.relu(self.first(features * scale)))
        return out


@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_calibration_batches_are_called_as_the_model_takes_them(form: str) -> None:
    torch.manual_seed(0)
    model = _KeywordModel()
    xs = [torch.randn(32, 6) for _ in range(3)]
    handle = quant.attach(model, {"*": {"weight": weight_spec(3)}})
    with torch.no_grad(), handle.calibrate():
        model(xs[0])
    forms: dict[str, list[object]] = {"tensor": list(xs), "tuple": [(x, 1.0) for x in xs], "dict": [{"features": x} for x in xs]}
    batches = forms[form]
    report = adaround(model, handle, batches, iterations=40, progress=False)
    assert [r.name for r in report.layers] == ["first", "second"]
    assert all(handle.quantizer(n, "weight").has_code_offsets for n in ("first", "second"))


def test_bad_input_is_refused_before_any_work() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    handle = quant.attach(model, {"*": {"weight": weight_spec(4)}})
    with pytest.raises(ValueError, match="no qparams: calibrate"):
        adaround(model, handle, [x], progress=False)
    with torch.no_grad(), handle.calibrate():
        model(x)
    with pytest.raises(ValueError, match="iterations=0 must be >= 1"):
        adaround(model, handle, [x], iterations=0, progress=False)
    with pytest.raises(ValueError, match="'2' is a LayerNorm"):
        adaround(model, handle, [x], layers=["0", "2"], progress=False)
    with pytest.raises(ValueError, match="no calibration batches"):
        adaround(model, handle, [], progress=False)
    with pytest.raises(TypeError, match="not one batch"):
        adaround(model, handle, x, progress=False)
    assert not any(q.has_code_offsets for _, _, q in handle.quantizers())
