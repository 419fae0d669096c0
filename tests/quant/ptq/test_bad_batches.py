"""Every post-training algorithm refuses calibration batches the model cannot take, naming the batch and its
shapes, before it changes any quantizer state."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn

import quant
import quant.ptq as ptq
from tests.quant.ptq.support import ACT8, weight_spec


def _model() -> tuple[nn.Module, quant.QuantHandle, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    x = torch.randn(64, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": weight_spec(4), "input": ACT8}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    return model, handle, x


@pytest.mark.parametrize("algorithm", ["adaround", "gptq", "bias_correction", "equalize", "smooth"])
def test_a_batch_of_the_wrong_shape_is_named_before_any_work(algorithm: str) -> None:
    model, handle, x = _model()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=rf"{algorithm}: calibration batch 1 \(shape \(8, 5\)\) does not run through the model"):
        getattr(ptq, algorithm)(model, handle, [x, torch.randn(8, 5)], progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]) if isinstance(value, torch.Tensor) else value == state[key], key
    with pytest.raises(ValueError, match=rf"{algorithm}: calibration batch 0 \(0: \(4, 6\), 1: \(4, 6\)\)"):
        getattr(ptq, algorithm)(model, handle, [(x[:4], x[:4])], progress=False)
