"""End to end: a small CNN on the bundled digits reaches >= 95% in float, and W4A4 with
LSQ quantization-aware training stays within 2 points of float."""

from __future__ import annotations

import copy

import pytest
import torch

import quant
from experiments.demo import calibrate, recipe
from experiments.digits import accuracy, load_digits_data, train
from experiments.models.digits_cnn import DigitsCNN


@pytest.mark.slow
def test_w4a4_lsq_within_two_points_of_float() -> None:
    torch.manual_seed(0)
    data = load_digits_data(seed=0)
    model = DigitsCNN()
    train(model, data, epochs=15, seed=0, progress=False)
    model = quant.fold_bn(model.eval())
    float_acc = accuracy(model, data.x_test, data.y_test)
    assert float_acc >= 0.95, f"float accuracy {float_acc:.4f} < 0.95"

    qat_model = copy.deepcopy(model)
    handle = quant.attach(qat_model, recipe(4, 4, learn="lsq"))
    calibrate(handle, qat_model, data)
    train(qat_model, data, epochs=6, lr=1e-3, seed=0, progress=False)
    w4a4 = accuracy(qat_model, data.x_test, data.y_test)
    print(f"float {float_acc:.4f}  W4A4 LSQ {w4a4:.4f}")
    assert w4a4 >= float_acc - 0.02, f"W4A4 LSQ {w4a4:.4f} is more than 2 points below float {float_acc:.4f}"

    handle.remove()  # the trained float weights stay, under the float model's own keys
    assert list(qat_model.state_dict()) == list(model.state_dict())
