"""Code offsets (quant.sim.code_offsets) and the quantizer state that holds them: with zero offsets the codes and
values are round-to-nearest's exactly; the offsets move codes by exactly their amount (clamped), carry the
straight-through gradient, round-trip through state_dict and are refused where they cannot apply."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import QuantSpec
from quant.sim.code_offsets import fake_quantize_with_offsets, offsets_for_codes, quantize_with_offsets
from quant.sim.functional import fake_quantize, quantize
from quant.sim.quantizer import Quantizer

SPECS = [
    QuantSpec(bits=4),
    QuantSpec(bits=3, signed=False, symmetric=False),
    QuantSpec(bits=4, granularity="channel", axis=0),
    QuantSpec(bits=2, granularity="group", axis=1, group_size=4),
    QuantSpec(bits=4, rounding="half_away"),
]


def _calibrated(spec: QuantSpec, w: torch.Tensor) -> Quantizer:
    q = Quantizer(spec)
    q.observing, q.quantizing = True, False
    q(w)
    q.compute_qparams()
    q.observing, q.quantizing = False, True
    return q


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(SPECS), seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 5), cols=st.sampled_from([4, 8]))
def test_zero_offsets_are_round_to_nearest_and_offsets_move_codes_by_their_amount(spec: QuantSpec, seed: int, rows: int,
                                                                                   cols: int) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 3.0
    q = _calibrated(spec, w)
    s, z = q.effective_qparams()
    zero = torch.zeros(w.shape, dtype=torch.int32)
    assert torch.equal(quantize_with_offsets(w, s, z, zero, spec), quantize(w, s, z, spec))
    assert torch.equal(fake_quantize_with_offsets(w, s, z, zero, spec), fake_quantize(w, s, z, spec))
    offsets = torch.randint(-2, 3, w.shape, generator=g, dtype=torch.int32)
    moved = quantize_with_offsets(w, s, z, offsets, spec).to(torch.int64)
    nearest = quantize(w, s, z, spec).to(torch.int64)  # min-max scales keep w inside the range: never clamped
    assert torch.equal(moved, (nearest + offsets).clamp(spec.qmin, spec.qmax))
    assert torch.equal(offsets_for_codes(w, s, z, moved, spec).to(torch.int64) + nearest, moved)
    q.set_code_offsets(offsets)
    assert torch.equal(q.codes(w), moved)
    values = q(w)
    from quant.sim.functional import dequantize

    assert torch.equal(values, dequantize(moved.to(torch.int32), s, z, spec).to(values.dtype))


def test_the_gradient_is_straight_through_inside_the_moved_range() -> None:
    spec = QuantSpec(bits=3)  # codes -4..3
    w = torch.tensor([0.0, 0.9, -0.9, 0.5], requires_grad=True)
    s, z = torch.tensor(0.3), torch.tensor(0, dtype=torch.int32)
    offsets = torch.tensor([0, 1, -1, 0], dtype=torch.int32)  # 3 + 1 leaves the range (clipped), -3 - 1 is its end
    out = fake_quantize_with_offsets(w, s, z, offsets, spec)
    out.sum().backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None and w.grad.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert quantize_with_offsets(w, s, z, offsets, spec).tolist() == [0, 3, -4, 2]


def test_the_quantizer_state_round_trips_and_older_states_load() -> None:
    spec = QuantSpec(bits=4, granularity="channel", axis=0)
    w = torch.randn(3, 5)
    q = _calibrated(spec, w)
    q.set_code_offsets(torch.ones(3, 5, dtype=torch.int32))
    state = q.state_dict()
    fresh = Quantizer(spec)
    fresh.load_state_dict(state)
    assert fresh.has_code_offsets and torch.equal(fresh.codes(w), q.codes(w))
    older = {k: v for k, v in state.items() if k != "code_offsets"}  # saved before code offsets existed
    plain = Quantizer(spec)
    plain.load_state_dict(older)
    assert not plain.has_code_offsets and torch.equal(plain.codes(w), quantize(w, *q.effective_qparams(), spec).to(torch.int64))


def test_offsets_are_refused_where_they_cannot_apply() -> None:
    w = torch.randn(3, 5)
    with pytest.raises(ValueError, match="calibrate first"):
        Quantizer(QuantSpec(bits=4)).set_code_offsets(torch.zeros(3, 5, dtype=torch.int32))
    q = _calibrated(QuantSpec(bits=4), w)
    with pytest.raises(TypeError, match="integer tensor"):
        q.set_code_offsets(torch.zeros(3, 5))
    q.set_code_offsets(torch.zeros(3, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="does not fit its code offsets"):
        q(torch.randn(3, 4))
    lsq = Quantizer(QuantSpec(bits=4), learn="lsq")
    lsq(w)
    with pytest.raises(ValueError, match="learn='none'"):
        lsq.set_code_offsets(torch.zeros(3, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="one code per sign"):
        _calibrated(QuantSpec(bits=1, signed=True, symmetric=True), w).set_code_offsets(torch.zeros(3, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="exceed"):
        q.set_code_offsets(torch.full((3, 5), 1 << 23, dtype=torch.int32))
    with pytest.raises(ValueError, match="outside the code range"):
        offsets_for_codes(w, torch.tensor(0.1), torch.tensor(0, dtype=torch.int32), torch.full((3, 5), 9), QuantSpec(bits=4))
