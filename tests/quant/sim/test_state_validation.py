"""Validated state: observers never store an infinite scale for a finite range, and load_state_dict refuses
scales and zero points a quantizer could not use (named)."""

from __future__ import annotations

import math

import pytest
import torch

from quant.contract.spec import QuantSpec
from quant.sim.observers import make_observer
from quant.sim.quantizer import Quantizer


@pytest.mark.parametrize("spec", [QuantSpec(bits=8, signed=False, symmetric=False), QuantSpec(bits=4),
                                  QuantSpec(bits=8, granularity="channel", axis=0, symmetric=False)])  # fmt: skip
def test_a_range_of_the_whole_float32_line_has_a_finite_scale(spec: QuantSpec) -> None:
    obs = make_observer("minmax", spec)
    obs.update(torch.tensor([[-3e38, 3e38], [-1.0, 2.0]]))
    scale, _ = obs.qparams()
    assert bool(torch.isfinite(scale).all()) and float(scale.max()) > 1e36


def _calibrated(spec: QuantSpec) -> Quantizer:
    q = Quantizer(spec)
    q(torch.randn(16))
    q.observing = False
    return q


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, 1e-45])
def test_load_state_dict_refuses_unusable_scales(bad: float) -> None:
    spec = QuantSpec(bits=8, signed=False, symmetric=False)
    state = _calibrated(spec).state_dict()
    state["scale"] = torch.full_like(state["scale"], bad)
    with pytest.raises(ValueError, match="scale must be finite and > 0 with a finite float32 reciprocal"):
        Quantizer(spec).load_state_dict(state)


def test_load_state_dict_refuses_zero_points_outside_the_code_range() -> None:
    spec = QuantSpec(bits=4, signed=False, symmetric=False)
    state = _calibrated(spec).state_dict()
    state["zero_point"] = torch.full_like(state["zero_point"], 16)
    with pytest.raises(ValueError, match=r"zero_point holds values in \[16, 16\] outside the code range \[0, 15\]"):
        Quantizer(spec).load_state_dict(state)
    good = _calibrated(spec).state_dict()
    Quantizer(spec).load_state_dict(good)  # a valid state still loads


@pytest.mark.parametrize("learn, key", [("lsq", "scale"), ("pact", "alpha")])
def test_a_learned_step_that_training_took_below_zero_still_loads(learn: str, key: str) -> None:
    """LSQ/PACT project their parameter to max(., SCALE_EPS): a QAT checkpoint with a step at or below 0 is valid
    (refusing it broke resuming QAT of an LSTM), a non-finite one is not."""
    spec = QuantSpec(bits=4, signed=False, symmetric=False) if learn == "pact" else QuantSpec(bits=4)
    q = Quantizer(spec, learn=learn)
    q(torch.rand(16))
    state = q.state_dict()
    state[key] = torch.full_like(state[key], -0.5)
    fresh = Quantizer(spec, learn=learn)
    fresh.load_state_dict(state)
    assert float(fresh.effective_qparams()[0].min()) > 0
    state[key] = torch.full_like(state[key], math.nan)
    with pytest.raises(ValueError, match=rf"{key} holds \[nan\]; a saved learned step must be finite"):
        Quantizer(spec, learn=learn).load_state_dict(state)
