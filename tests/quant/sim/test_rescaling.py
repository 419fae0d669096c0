"""Equivalent rescaling as quantizer state: a quantizer with prescale factors quantizes ``x * factors``
(values, codes, observed range), a layer computes with ``b * bias_factors + shift``, all of it only while
enabled (the shift only while quantizing), carried by ``state_dict`` (older states load), and bad factors are
refused naming the quantizer."""

from __future__ import annotations

import copy
from typing import cast

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings

import quant
from quant import QuantSpec
from quant.sim.fast import original_parameter
from quant.sim.functional import fake_quantize, quantize
from quant.sim.quantizer import Quantizer

SPEC = QuantSpec(bits=4, granularity="channel", axis=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_a_prescaled_quantizer_is_the_quantizer_of_the_rescaled_tensor(rows: int, cols: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    factors = torch.rand(rows, cols, generator=g) * 4 + 0.05
    q, plain = Quantizer(SPEC), Quantizer(SPEC)
    q.set_prescale(factors)
    out, ref = q(w), plain(w * factors)
    assert torch.equal(out, ref) and torch.equal(q.scale, plain.scale)
    assert torch.equal(q.codes(w), quantize(w * factors, plain.scale, plain.zero_point, SPEC).to(torch.int64))
    assert torch.equal(ref, fake_quantize(w * factors, plain.scale, plain.zero_point, SPEC))
    q.enabled = False
    assert q(w) is w


def test_bad_factors_and_shifts_are_refused_naming_the_quantizer() -> None:
    q = Quantizer(SPEC)
    with pytest.raises(ValueError, match=r"Quantizer\(int4.*finite and > 0"):
        q.set_prescale(torch.tensor([[1.0, -1.0]]))
    with pytest.raises(TypeError, match="floating tensor"):
        q.set_prescale(torch.tensor([[1, 2]]))
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"shape \(3,\) does not fit the layer's bias shape \(2,\)"):
        q.set_bias_shift(torch.zeros(3), layer)
    with pytest.raises(ValueError, match="must be finite"):
        q.set_bias_shift(torch.tensor([0.0, float("nan")]), layer)
    with pytest.raises(TypeError, match="a bias shift applies to"):
        q.set_bias_shift(torch.zeros(2), nn.Embedding(2, 2))
    q.set_prescale(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"does not fit its prescale factors of shape \(2, 3\)"):
        q(torch.randn(2, 4))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_layer_computes_with_its_factored_and_shifted_bias_while_enabled(kind: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3) if kind == "linear" else nn.Conv2d(2, 3, 3))
    x = torch.randn(8, 4) if kind == "linear" else torch.randn(8, 2, 5, 5)
    reference = copy.deepcopy(model)
    handle = quant.attach(model, {"*": {"weight": QuantSpec(bits=8, granularity="channel", axis=0)}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    q, layer = handle.quantizer("0", "weight"), model[0]
    b = cast(torch.Tensor, reference[0].bias).detach()
    assert not layer._forward_hooks  # no bias hook, no cost per forward, until a shift or bias factors are set
    factors, shift = torch.tensor([0.5, 2.0, 1.0]), torch.tensor([0.25, -1.0, 0.0])
    q.set_bias_prescale(factors, layer)
    q.set_bias_shift(shift, layer)
    w_q = q(original_parameter(layer)).detach()
    bias = b * factors + shift
    expected = (torch.nn.functional.linear(x, w_q, bias) if kind == "linear"
                else torch.nn.functional.conv2d(x, w_q, bias))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(cast(torch.Tensor, q.layer_bias(b)), bias)
        q.quantizing = False  # passing through: the rescaled float layer, without the correction

        def per_channel(v: torch.Tensor) -> torch.Tensor:
            return v if kind == "linear" else v.reshape(-1, 1, 1)

        torch.testing.assert_close(model(x), reference(x) + per_channel(b * factors - b), rtol=1e-5, atol=1e-5)
        q.quantizing = True
        handle.disable()
        assert torch.equal(model(x), reference(x))
    handle.enable()
    state = model.state_dict()
    other = copy.deepcopy(reference)
    other_handle = quant.attach(other, {"*": {"weight": QuantSpec(bits=8, granularity="channel", axis=0)}})
    other.load_state_dict(state)  # the loaded shift brings its hook
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
    other_handle.remove()
    handle.remove()
    assert not layer._forward_hooks and not layer._load_state_dict_post_hooks
    assert torch.equal(model(x), reference(x))


def test_the_state_round_trips_and_older_states_load() -> None:
    q = Quantizer(SPEC)
    q.set_prescale(torch.full((2, 3), 2.0))
    q(torch.randn(2, 3))
    q.set_bias_shift(torch.tensor([1.0, 2.0]), nn.Linear(3, 2))
    state = q.state_dict()
    fresh = Quantizer(SPEC)
    fresh.load_state_dict(state)
    for key in ("prescale", "bias_prescale", "bias_shift", "scale"):
        assert torch.equal(getattr(fresh, key), getattr(q, key)), key
    older = {k: v for k, v in state.items() if k not in ("prescale", "bias_prescale", "bias_shift")}
    old = Quantizer(SPEC)
    old.load_state_dict(older)
    assert not old.has_prescale and not old.bias_shift.numel()
    bad = dict(state, prescale=torch.full((2, 3), -1.0))
    with pytest.raises(ValueError, match="prescale"):
        Quantizer(SPEC).load_state_dict(bad)
