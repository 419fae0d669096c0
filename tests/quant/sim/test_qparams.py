"""qparams_from_range: the formulas, their edge cases, and torch.ao's observers as a peer."""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from quant.sim.functional import fake_quantize, quantize
from quant.sim.qparams import SCALE_EPS, float32, pow2_ceil, qparams_from_range, range_to_qparams, range_to_qparams_scalar
from quant.contract.spec import QuantSpec

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

FINITE = st.floats(-1e4, 1e4, width=32)


@st.composite
def specs(draw: st.DrawFn) -> QuantSpec:
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    symmetric = True if bits == 1 and signed else draw(st.booleans())
    narrow = False if bits == 1 else draw(st.booleans())
    scale = draw(st.sampled_from(("float", "pow2")))
    return QuantSpec(bits=bits, signed=signed, symmetric=symmetric, narrow=narrow, scale=scale)


@st.composite
def ranges(draw: st.DrawFn, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor(draw(st.lists(FINITE, min_size=n, max_size=n)), dtype=torch.float32)
    b = torch.tensor(draw(st.lists(FINITE, min_size=n, max_size=n)), dtype=torch.float32)
    return torch.minimum(a, b), torch.maximum(a, b)


def f32(v: float) -> np.float32:
    return np.float32(v)


def expected_qparams(lo: float, hi: float, spec: QuantSpec) -> tuple[float, int]:
    """The documented formulas, evaluated in NumPy float32 one element at a time."""
    lo32, hi32 = min(f32(lo), f32(0.0)), max(f32(hi), f32(0.0))
    if spec.symmetric:
        width = max(-lo32, hi32) if spec.signed else hi32
        s = np.float32(width / f32(spec.qmax))
    else:
        width = np.float32(hi32 - lo32)
        s = np.float32(width / f32(spec.qmax - spec.qmin))
    s = f32(1.0) if width == 0 else max(s, f32(SCALE_EPS))  # an empty range, not a scale that underflows
    if spec.scale == "pow2":
        s = f32(2.0 ** math.ceil(math.log2(float(s))))
    if spec.symmetric:
        return float(s), 0
    z = spec.qmin - int(np.round(np.float32(lo32 / s)))  # np.round is half to even
    return float(s), min(max(z, spec.qmin), spec.qmax)


@given(ranges(), specs())
@example(rng=(torch.zeros(1), torch.tensor([1.4013e-45])), spec=QuantSpec(bits=2, signed=False, symmetric=False))
def test_formulas(rng: tuple[torch.Tensor, torch.Tensor], spec: QuantSpec) -> None:
    lo, hi = rng
    s, z = qparams_from_range(lo, hi, spec)
    assert s.dtype == torch.float32 and z.dtype == torch.int32 and s.shape == lo.shape == z.shape
    for i in range(lo.numel()):
        want_s, want_z = expected_qparams(float(lo[i]), float(hi[i]), spec)
        assert (float(s[i]), int(z[i])) == (want_s, want_z), f"element {i}: [{float(lo[i])}, {float(hi[i])}] {spec}"


@given(ranges(), specs())
def test_zero_is_exact_and_the_range_is_clipped_by_at_most_half_a_step(
    rng: tuple[torch.Tensor, torch.Tensor], spec: QuantSpec
) -> None:
    lo, hi = rng
    s, z = qparams_from_range(lo, hi, spec.with_(scale="float"))
    per_elem = spec.with_(granularity="channel", axis=0, scale="float")
    assert bool((s > 0).all()) and bool(torch.isfinite(s).all())
    if not spec.is_binary and not (spec.symmetric and spec.qmin > 0):  # no code for 0 in these
        assert_zero = fake_quantize(torch.zeros_like(lo), s, z, per_elem)
        assert torch.equal(assert_zero, torch.zeros_like(lo)), f"0 -> {assert_zero.tolist()}"
        assert torch.equal(quantize(torch.zeros_like(lo), s, z, per_elem), z)
    if spec.is_binary or (spec.symmetric and spec.qmin > 0):
        return  # sign codes; unsigned narrow symmetric starts at code 1 (0 clips to s)
    # the widened range [min(lo, 0), max(hi, 0)] (negatives ignored for unsigned symmetric)
    lo0 = torch.clamp(lo, max=0.0) if (spec.signed or not spec.symmetric) else torch.zeros_like(lo)
    hi0 = torch.clamp(hi, min=0.0)
    for v in (lo0, hi0):
        err = (fake_quantize(v, s, z, per_elem).double() - v.double()).abs()
        bound = s.double() / 2 + v.double().abs() * 2.0**-21
        assert bool((err <= bound).all()), f"clipped {err.tolist()} > half steps {(s / 2).tolist()} for {spec}"


@given(ranges(), specs())
def test_pow2_rounds_the_float_scale_up_exactly(rng: tuple[torch.Tensor, torch.Tensor], spec: QuantSpec) -> None:
    lo, hi = rng
    s_float, _ = qparams_from_range(lo, hi, spec.with_(scale="float"))
    s_pow2, _ = qparams_from_range(lo, hi, spec.with_(scale="pow2"))
    mant, _ = torch.frexp(s_pow2)
    assert bool((mant == 0.5).all())
    assert bool((s_pow2 >= s_float).all()) and bool((s_pow2 < 2 * s_float).all())


def _pow2_ceil_exact(v: float) -> float:
    """The smallest power of two >= v, found over the rationals."""
    f = Fraction(v)
    e = f.numerator.bit_length() - f.denominator.bit_length()
    while Fraction(2) ** e < f:
        e += 1
    while Fraction(2) ** (e - 1) >= f:
        e -= 1
    return float(Fraction(2) ** e)


def test_pow2_ceil() -> None:
    s = torch.tensor([2.0**-30, 0.3, 0.5, 0.5000001, 1.0, 3.0, 2.0**100])
    assert pow2_ceil(s).tolist() == [_pow2_ceil_exact(v) for v in s.tolist()]


@pytest.mark.parametrize(
    "spec",
    [QuantSpec(bits=4), QuantSpec(bits=4, signed=False), QuantSpec(bits=4, symmetric=False), QuantSpec.binary()],
    ids=lambda s: s.describe(),
)
def test_degenerate_range_gets_scale_one(spec: QuantSpec) -> None:
    s, z = qparams_from_range(torch.zeros(3), torch.zeros(3), spec)
    assert s.tolist() == [1.0] * 3 and z.tolist() == [spec.qmin if not spec.symmetric else 0] * 3


def test_unsigned_symmetric_ignores_negatives() -> None:
    spec = QuantSpec(bits=4, signed=False)
    s, z = qparams_from_range(torch.tensor([-5.0, -5.0]), torch.tensor([-1.0, 3.0]), spec)
    assert s.tolist() == [1.0, float(f32(3.0) / f32(15.0))] and z.tolist() == [0, 0]


def test_tiny_range_is_floored_at_eps() -> None:
    s, _ = qparams_from_range(torch.tensor(-1e-30), torch.tensor(1e-30), QuantSpec())
    assert s.item() == SCALE_EPS
    s, _ = qparams_from_range(torch.tensor(-1e-30), torch.tensor(1e-30), QuantSpec(scale="pow2"))
    assert s.item() == SCALE_EPS == 2.0**-23


def test_binary_scale_is_the_absolute_maximum() -> None:
    lo, hi = [-3.0, -1.0], [2.0, 5.0]
    s, z = qparams_from_range(torch.tensor(lo), torch.tensor(hi), QuantSpec.binary())
    assert s.tolist() == [max(-a, b) for a, b in zip(lo, hi)] and z.tolist() == [0, 0]


def test_numbers_and_shapes() -> None:
    s, z = qparams_from_range(-1.0, 3.0, QuantSpec(bits=8, signed=False, symmetric=False))
    assert s.shape == () and z.shape == ()
    s, z = qparams_from_range(torch.zeros(2, 3), torch.ones(2, 3), QuantSpec())
    assert s.shape == (2, 3)


@pytest.mark.parametrize(
    "lo, hi, match",
    [
        (math.nan, 1.0, "finite"),
        (-1.0, math.inf, "finite"),
        (-math.inf, 1.0, "finite"),
        (2.0, 1.0, "min_val > max_val"),
    ],
)
def test_bad_ranges(lo: float, hi: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        qparams_from_range(torch.tensor([lo]), torch.tensor([hi]), QuantSpec(symmetric=False))


def test_the_widest_ranges() -> None:
    """A range of +-3e38 is wider than float32 but its 8-bit scale is not (computed in float64 there); with one
    level (1-bit codes) the scale itself would overflow, which is refused."""
    s, _ = qparams_from_range(torch.tensor([-3e38]), torch.tensor([3e38]), QuantSpec(symmetric=False))
    assert math.isfinite(float(s)) and float(s) == pytest.approx(6e38 / 255, rel=1e-6)
    with pytest.raises(ValueError, match="too wide"):
        qparams_from_range(torch.tensor([-3e38]), torch.tensor([3e38]), QuantSpec(bits=1, signed=False, symmetric=False))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shape"):
        qparams_from_range(torch.zeros(2), torch.zeros(3), QuantSpec())
    with pytest.raises(TypeError, match="spec"):
        qparams_from_range(0.0, 1.0, "int8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="min_val"):
        qparams_from_range("0", 1.0, QuantSpec())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- peer: torch.ao
def ao_observer(spec: QuantSpec, per_channel: bool) -> Any:
    dtype = torch.qint8 if spec.signed else torch.quint8
    if spec.symmetric:
        qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
    else:
        qscheme = torch.per_channel_affine if per_channel else torch.per_tensor_affine
    cls = PerChannelMinMaxObserver if per_channel else MinMaxObserver
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(dtype=dtype, qscheme=qscheme, quant_min=spec.qmin, quant_max=spec.qmax)


@st.composite
def peer_specs(draw: st.DrawFn) -> QuantSpec:
    """Specs whose formulas torch.ao shares: asymmetric with 0 in the code range, and
    signed narrow symmetric (torch.ao divides by (qmax - qmin) / 2 = qmax when qmin = -qmax)."""
    if draw(st.booleans()):
        return QuantSpec(bits=draw(st.integers(2, 8)), signed=True, symmetric=True, narrow=True)
    bits = draw(st.integers(1, 8))
    signed = bits > 1 and draw(st.booleans())
    narrow = signed and draw(st.booleans())  # unsigned narrow has qmin = 1 (torch.ao needs 0 in range)
    return QuantSpec(bits=bits, signed=signed, symmetric=False, narrow=narrow)


@given(st.lists(FINITE, min_size=2, max_size=40), peer_specs())
def test_bit_exact_with_torch_ao_minmax_per_tensor(values: list[float], spec: QuantSpec) -> None:
    x = torch.tensor(values, dtype=torch.float32)
    if float(x.max() - x.min()) == 0.0:
        return  # torch.ao gives eps for an empty range, this project 1.0 (documented)
    obs = ao_observer(spec, per_channel=False)
    obs(x)
    want_s, want_z = obs.calculate_qparams()
    s, z = qparams_from_range(x.min(), x.max(), spec)
    assert (s.item(), z.item()) == (want_s.item(), want_z.item()), spec


@given(st.lists(FINITE, min_size=12, max_size=12), peer_specs())
def test_bit_exact_with_torch_ao_minmax_per_channel(values: list[float], spec: QuantSpec) -> None:
    x = torch.tensor(values, dtype=torch.float32).reshape(3, 4)
    lo, hi = x.amin(dim=1), x.amax(dim=1)
    if bool((torch.clamp(hi, min=0) - torch.clamp(lo, max=0) == 0).any()):
        return
    obs = ao_observer(spec, per_channel=True)
    obs(x)
    want_s, want_z = obs.calculate_qparams()
    s, z = qparams_from_range(lo, hi, spec.with_(granularity="channel", axis=0))
    assert s.tolist() == want_s.tolist() and z.tolist() == want_z.tolist(), spec


WIDE = st.one_of(FINITE, st.floats(width=32, allow_nan=False, allow_infinity=False),
                 st.floats(-2.0**-126, 2.0**-126, width=32),
                 st.sampled_from((0.0, -0.0, 3.4028234663852886e38, -3.4028234663852886e38, 2.0**-149)))  # fmt: skip


@given(WIDE, WIDE, specs())
@example(-3e38, 3e38, QuantSpec(symmetric=False))  # a width past float32, whose scale is not
@example(0.0, 2.0**-149, QuantSpec(bits=2, signed=False, symmetric=False))
def test_the_scalar_qparams_are_the_tensor_ones_bit_for_bit(a: float, b: float, spec: QuantSpec) -> None:
    """range_to_qparams_scalar (the observers' per-tensor fast path, on Python floats) gives exactly the
    (scale, zero point) of range_to_qparams's float32 tensor arithmetic, wherever the scale is finite."""
    lo, hi = min(a, b), max(a, b)
    s, z = range_to_qparams(torch.tensor(lo), torch.tensor(hi), spec)
    if not math.isfinite(float(s)):
        return  # a range too wide for any float32 scale (refused by qparams_from_range)
    got = range_to_qparams_scalar(lo, hi, spec)
    assert got == (float(s), int(z)), f"{spec.describe()} [{lo}, {hi}]: {got} != {(float(s), int(z))}"
    assert np.float32(got[0]) == got[0]  # a float32 value


def test_float32_rounds_to_nearest_even_and_overflows_to_infinity() -> None:
    assert float32(1.0 + 2.0**-24) == 1.0 and float32(1.0 + 3 * 2.0**-24) == 1.0 + 2.0**-22
    assert float32(3.4028235e38) == 3.4028234663852886e38 and float32(3.5e38) == math.inf
    assert float32(-3.5e38) == -math.inf
