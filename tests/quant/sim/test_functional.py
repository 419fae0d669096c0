"""Property tests of quant.sim.functional: quantize / dequantize / fake_quantize.

The reference is the written contract evaluated independently: the product ``x * (1/s)``
in NumPy float32, rounded by Python's ``decimal``/``fractions`` per the mode's
definition, plus the zero point, clamped. PyTorch's fake-quant ops are the peer for
``half_even`` with float scales.
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import math
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any, Optional

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from quant.sim.fused import StraightThrough
from quant.sim.functional import (
    check_qparams,
    fake_quantize_values,
    dequantize,
    fake_quantize,
    qparams_shape,
    quantize,
)
from quant.contract.spec import QuantSpec
from tests.quant.sim.fake_quant_paths import fake_quant_path  # noqa: F401 (autouse: both paths)

Case = tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantSpec]

NEAREST = ("half_even", "half_away", "half_up")
DETERMINISTIC = NEAREST + ("floor",)


# --------------------------------------------------------------------------- reference
def ref_round(v: Fraction, mode: str) -> int:
    """``round(v)`` for a rational ``v`` by the definition of ``mode`` (docs/arithmetic.md §2)."""
    with localcontext() as ctx:
        ctx.prec = 1000  # exact for the dyadic values used here (float32/float64 ratios)
        d = Decimal(v.numerator) / Decimal(v.denominator)
    if Fraction(d) != v:
        raise AssertionError("inexact decimal conversion")
    if mode == "half_even":
        return int(d.to_integral_value(rounding=ROUND_HALF_EVEN))
    if mode == "half_away":  # decimal's ROUND_HALF_UP rounds ties away from zero
        return int(d.to_integral_value(rounding=ROUND_HALF_UP))
    if mode == "floor":
        return int(d.to_integral_value(rounding=ROUND_FLOOR))
    if mode == "half_up":  # ties toward +infinity
        return math.floor(v + Fraction(1, 2))
    raise AssertionError(mode)


def expand_qparams(t: np.ndarray, x_shape: tuple[int, ...], spec: QuantSpec) -> np.ndarray:
    """A per-element copy of a scale/zero-point array (NumPy only)."""
    return np.array(_expand(t, x_shape, spec), copy=True)


def _expand(t: np.ndarray, x_shape: tuple[int, ...], spec: QuantSpec) -> np.ndarray:
    if spec.granularity == "tensor":
        return np.broadcast_to(t.reshape(()), x_shape)
    assert spec.axis is not None
    axis = spec.axis % len(x_shape)
    if spec.granularity == "channel":
        shape = [1] * len(x_shape)
        shape[axis] = x_shape[axis]
        return np.broadcast_to(t.reshape(shape), x_shape)
    assert spec.group_size is not None
    return np.repeat(t, spec.group_size, axis=axis)


def ref_codes(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unclamped ``round(x * fl(1/s)) + z`` and clamped codes, element by element (int64)."""
    xn = x.detach().numpy()
    dt = xn.dtype.type
    sn = expand_qparams(s.numpy().astype(xn.dtype), tuple(x.shape), spec)
    zn = expand_qparams(z.numpy().astype(np.int64), tuple(x.shape), spec)
    with np.errstate(over="ignore"):
        inv = (dt(1) / sn).astype(xn.dtype)
        prod = (xn * inv).astype(xn.dtype)
    raw = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        if spec.is_binary:
            raw[idx] = 1 if xn[idx] >= 0 else -1
        else:
            raw[idx] = ref_round(Fraction(float(prod[idx])), spec.rounding) + int(zn[idx])
    return raw, np.clip(raw, spec.qmin, spec.qmax)


def ref_fake(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``(q - z) * s`` in the dtype of ``x`` from the reference codes."""
    _, q = ref_codes(x, s, z, spec)
    xn = x.detach().numpy()
    sn = expand_qparams(s.numpy().astype(xn.dtype), tuple(x.shape), spec)
    zn = expand_qparams(z.numpy().astype(np.int64), tuple(x.shape), spec)
    rel = (q - (0 if spec.is_binary else zn)).astype(xn.dtype)
    return torch.from_numpy(np.ascontiguousarray(rel * sn))


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Exact equality (NaN == NaN); on failure name the first differing index and both values."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    same = (actual == expected) | (torch.isnan(actual) & torch.isnan(expected)) if actual.is_floating_point() else (
        actual == expected
    )
    if not bool(same.all()):
        idx = tuple(int(i) for i in torch.nonzero(~same)[0])
        raise AssertionError(
            f"{what}: {int((~same).sum())} elements differ; first at {idx}: {actual[idx].item()!r} != "
            f"{expected[idx].item()!r}"
        )


# --------------------------------------------------------------------------- strategies
@st.composite
def specs(
    draw: st.DrawFn,
    rounding: Optional[st.SearchStrategy[str]] = None,
    granularity: Optional[st.SearchStrategy[str]] = None,
    binary: bool = True,
) -> QuantSpec:
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    if bits == 1 and signed and not binary:
        signed = False
    symmetric = True if bits == 1 and signed else draw(st.booleans())
    narrow = False if bits == 1 else draw(st.booleans())
    gran = draw(granularity if granularity is not None else st.sampled_from(("tensor", "channel", "group")))
    mode = draw(rounding if rounding is not None else st.sampled_from(DETERMINISTIC))
    kw: dict[str, Any] = {}
    if gran != "tensor":
        kw["axis"] = draw(st.integers(-2, 1))
    if gran == "group":
        kw["group_size"] = draw(st.sampled_from((1, 2, 3)))
    return QuantSpec(bits=bits, signed=signed, symmetric=symmetric, narrow=narrow, granularity=gran, rounding=mode, **kw)


def x_shape_for(draw: st.DrawFn, spec: QuantSpec) -> tuple[int, ...]:
    shape = [draw(st.integers(1, 4)), draw(st.integers(1, 6))]
    if spec.granularity == "group":
        assert spec.axis is not None and spec.group_size is not None
        shape[spec.axis % 2] = spec.group_size * draw(st.integers(1, 3))
    return tuple(shape)


@st.composite
def cases(
    draw: st.DrawFn,
    spec_strategy: Optional[st.SearchStrategy[QuantSpec]] = None,
    pow2: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Case:
    """``(x, scale, zero_point, spec)`` with valid qparams; ``x`` in units of steps around the code range."""
    spec = draw(spec_strategy if spec_strategy is not None else specs())
    if pow2:
        spec = spec.with_(scale="pow2")
    shape = x_shape_for(draw, spec)
    qshape = qparams_shape(shape, spec)
    n_q = math.prod(qshape)
    if pow2:
        scale = [2.0 ** draw(st.integers(-12, 12)) for _ in range(n_q)]
    else:
        scale = draw(st.lists(st.floats(2.0**-13, 2.0**13, width=32), min_size=n_q, max_size=n_q))
    if spec.symmetric:
        zp = [0] * n_q
    else:
        zp = draw(st.lists(st.integers(spec.qmin, spec.qmax), min_size=n_q, max_size=n_q))
    s = torch.tensor(scale, dtype=torch.float32).reshape(qshape)
    z = torch.tensor(zp, dtype=torch.int32).reshape(qshape)
    span = (1 << spec.bits) + 3
    step = st.one_of(
        st.floats(-span, span, width=32),
        st.integers(-2 * span, 2 * span).map(lambda k: k / 2),  # exact ties in step units
        st.sampled_from((0.0, -0.0)),
    )
    u = torch.tensor(draw(st.lists(step, min_size=math.prod(shape), max_size=math.prod(shape))), dtype=dtype)
    x = (u.reshape(shape) * torch.from_numpy(expand_qparams(s.numpy(), shape, spec).astype(np.float32)).to(dtype))
    return x, s, z, spec


def generic_fake_quantize(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The torch path's values and straight-through gradient, called directly (views computed here, not by
    functional)."""
    xg = x
    if spec.granularity == "tensor":
        sv, zv = s.reshape(()), z.reshape(())
    else:
        assert spec.axis is not None
        axis = spec.axis % x.dim()
        if spec.granularity == "channel":
            view = (-1,) + (1,) * (x.dim() - axis - 1)
            sv, zv = s.reshape(view), z.reshape(view)
        else:
            assert spec.group_size is not None
            split = (x.shape[axis] // spec.group_size, spec.group_size)
            xg = x.reshape(x.shape[:axis] + split + x.shape[axis + 1 :])
            sv, zv = s.unsqueeze(axis + 1), z.unsqueeze(axis + 1)
    s_x = sv.to(x.dtype)
    out: torch.Tensor = StraightThrough.apply(xg, lambda t: fake_quantize_values(t, s_x, zv, spec, None, need_mask=True))
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- codes and values
@given(cases())
def test_codes_match_the_contract_and_stay_in_range(case: Case) -> None:
    x, s, z, spec = case
    q = quantize(x, s, z, spec)
    _, expected = ref_codes(x, s, z, spec)
    assert q.dtype == torch.int32
    assert_equal(q, torch.from_numpy(expected).to(torch.int32), f"codes {spec.describe()}")
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax
    if spec.is_binary:
        assert not bool((q == 0).any())


@given(cases(spec_strategy=specs(binary=False)))
def test_fake_quantize_matches_the_contract_in_float32_and_float64(case: Case) -> None:
    x, s, z, spec = case
    assert_equal(fake_quantize(x, s, z, spec), ref_fake(x, s, z, spec), f"float32 {spec.describe()}")
    x64 = x.double()
    assert_equal(fake_quantize(x64, s, z, spec), ref_fake(x64, s.double(), z, spec), f"float64 {spec.describe()}")


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC), binary=True)))
def test_dequantize_inverts_codes(case: Case) -> None:
    x, s, z, spec = case
    assert_equal(dequantize(quantize(x, s, z, spec), s, z, spec), fake_quantize(x, s, z, spec), spec.describe())


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC), binary=False)))
def test_error_within_half_a_step_inside_the_range(case: Case) -> None:
    x, s, z, spec = case
    xd = x.double()
    sd = torch.from_numpy(expand_qparams(s.numpy(), tuple(x.shape), spec)).double()
    zd = torch.from_numpy(expand_qparams(z.numpy(), tuple(x.shape), spec)).double()
    lo, hi = (spec.qmin - zd) * sd, (spec.qmax - zd) * sd
    inside = (xd >= lo) & (xd <= hi)
    err = fake_quantize(x, s, z, spec).double() - xd
    # float32 evaluation of x * (1/s): |x/s| < 2^9 steps, relative error 2^-23 per product
    slack = sd * 2.0**-13 + xd.abs() * 2.0**-22
    if spec.rounding == "floor":
        ok = (err <= slack) & (err > -sd - slack)
    else:
        ok = err.abs() <= sd / 2 + slack
    bad = inside & ~ok
    assert not bool(bad.any()), f"error {err[bad].tolist()} steps {sd[bad].tolist()} for {spec.describe()}"


@given(cases(spec_strategy=specs(rounding=st.sampled_from(NEAREST))))
def test_idempotent_for_nearest_modes(case: Case) -> None:
    x, s, z, spec = case
    once = fake_quantize(x, s, z, spec)
    assert_equal(fake_quantize(once, s, z, spec), once, spec.describe())


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC + ("stochastic",))), pow2=True))
def test_idempotent_for_every_mode_with_pow2_scales(case: Case) -> None:
    # With float (non-pow2) scales `floor` is not idempotent: (q*s) * fl(1/s) can land
    # just below q. Powers of two make every product exact, so every mode is.
    x, s, z, spec = case
    gen = torch.Generator().manual_seed(0)
    once = fake_quantize(x, s, z, spec, generator=gen)
    assert_equal(fake_quantize(once, s, z, spec, generator=gen), once, spec.describe())


@given(cases(pow2=True))
def test_pow2_scales_are_exact(case: Case) -> None:
    """With s = 2^k, x * (1/s) is exact: codes are round(x / s) over the rationals."""
    x, s, z, spec = case
    sn = expand_qparams(s.numpy(), tuple(x.shape), spec)
    zn = expand_qparams(z.numpy(), tuple(x.shape), spec)
    expected = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        v = Fraction(float(x[idx])) / Fraction(float(sn[idx]))
        if spec.is_binary:
            expected[idx] = 1 if v >= 0 else -1
        else:
            expected[idx] = min(max(ref_round(v, spec.rounding) + int(zn[idx]), spec.qmin), spec.qmax)
    assert_equal(quantize(x, s, z, spec), torch.from_numpy(expected).to(torch.int32), spec.describe())
    rel = torch.from_numpy(expected - (0 if spec.is_binary else zn)).double()
    exact = rel * torch.from_numpy(np.ascontiguousarray(sn)).double()  # exact: pow2 times a small integer
    assert_equal(fake_quantize(x, s, z, spec).double(), exact, spec.describe())


def test_pow2_constraint_is_checked() -> None:
    spec = QuantSpec(bits=4, scale="pow2")
    x = torch.zeros(3)
    check_qparams(x, torch.tensor(0.25), torch.tensor(0), spec)
    with pytest.raises(ValueError, match="power of two"):
        check_qparams(x, torch.tensor(0.3), torch.tensor(0), spec)
    with pytest.raises(ValueError, match="power of two"):
        fake_quantize(x, torch.tensor(3.0), torch.tensor(0), spec)


# --------------------------------------------------------------------------- granularity
@pytest.mark.parametrize(
    "shape, spec, expected",
    [
        ((5, 7), QuantSpec(), ()),
        ((5, 7), QuantSpec(granularity="channel", axis=0), (5,)),
        ((5, 7), QuantSpec(granularity="channel", axis=-1), (7,)),
        ((2, 6, 3), QuantSpec(granularity="group", axis=1, group_size=3), (2, 2, 3)),
        ((2, 6), QuantSpec(granularity="group", axis=-1, group_size=2), (2, 3)),
    ],
)
def test_qparams_shape(shape: tuple[int, ...], spec: QuantSpec, expected: tuple[int, ...]) -> None:
    assert qparams_shape(shape, spec) == expected


@given(cases(spec_strategy=specs(granularity=st.sampled_from(("channel", "group")))))
def test_channel_and_group_equal_per_tensor_on_each_slice(case: Case) -> None:
    x, s, z, spec = case
    out = fake_quantize(x, s, z, spec)
    per_tensor = spec.with_(granularity="tensor", axis=None, group_size=None)
    sn = expand_qparams(s.numpy(), tuple(x.shape), spec)
    zn = expand_qparams(z.numpy(), tuple(x.shape), spec)
    for idx in np.ndindex(*x.shape):
        one = fake_quantize(x[idx].reshape(1), torch.tensor(float(sn[idx])), torch.tensor(int(zn[idx])), per_tensor)
        assert_equal(out[idx].reshape(1), one, f"{spec.describe()} at {idx}")


# --------------------------------------------------------------------------- ties
TIES = [Fraction(2 * k + 1, 2) * sign for k in range(3) for sign in (1, -1)]  # +-0.5, +-1.5, +-2.5


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [2.0**-7, 1.0, 0.75, 0.1])
@pytest.mark.parametrize("symmetric, zero_point", [(True, 0), (False, 3), (False, -4)])
def test_rounding_at_exact_ties(
    mode: str, dtype: torch.dtype, scale: float, symmetric: bool, zero_point: int
) -> None:
    spec = QuantSpec(bits=8, symmetric=symmetric, rounding=mode)
    s32 = float(np.float32(scale))
    inv = np.float32(1) / np.float32(s32) if dtype == torch.float32 else 1.0 / s32
    # x such that x * fl(1/s) is exactly the tie t (solve in the float type; skip if unrepresentable)
    xs, expected = [], []
    for t in TIES:
        for ulps in (-1, 0, 1):
            x_t = torch.tensor(float(t) / float(inv), dtype=dtype)
            x_t = torch.nextafter(x_t, torch.tensor(math.copysign(math.inf, ulps), dtype=dtype)) if ulps else x_t
            prod = x_t * torch.tensor(float(inv), dtype=dtype)
            v = Fraction(float(prod))
            if ulps == 0 and v != t:
                continue  # 1/s not exact enough to hit the tie; the pow2 scales cover it
            xs.append(float(x_t))
            expected.append(min(max(ref_round(v, mode) + zero_point, spec.qmin), spec.qmax))
    if not xs:
        pytest.skip("no exact tie representable for this scale")
    x = torch.tensor(xs, dtype=dtype)
    s = torch.tensor(s32)
    z = torch.tensor(zero_point)
    codes = quantize(x, s, z, spec)
    assert codes.tolist() == expected, f"{mode}: x={xs} codes {codes.tolist()} != {expected}"
    fq = fake_quantize(x, s, z, spec)
    want = (torch.tensor(expected, dtype=torch.float64) - zero_point).to(dtype) * s.to(dtype)
    assert_equal(fq, want, mode)


def test_every_tie_value_is_hit_with_pow2_scale() -> None:
    x = torch.tensor([float(t) for t in TIES]) * 0.25
    for mode in DETERMINISTIC:
        got = quantize(x, torch.tensor(0.25), torch.tensor(0), QuantSpec(rounding=mode)).tolist()
        assert got == [ref_round(t, mode) for t in TIES], mode


# --------------------------------------------------------------------------- stochastic
def test_stochastic_rounding_is_unbiased() -> None:
    spec = QuantSpec(bits=8, rounding="stochastic")
    n = 20000
    fracs = torch.tensor([0.1, 0.25, 0.5, 0.9, -0.3, -1.7])
    x = fracs.repeat_interleave(n)
    codes = quantize(x, torch.tensor(1.0), torch.tensor(0), spec, generator=torch.Generator().manual_seed(7))
    means = codes.double().reshape(len(fracs), n).mean(dim=1)
    p = fracs.double() - torch.floor(fracs.double())
    se = torch.sqrt(p * (1 - p) / n)
    dev = (means - fracs.double()).abs()
    assert bool((dev <= 5 * se).all()), f"means {means.tolist()} for {fracs.tolist()} (se {se.tolist()})"
    floor = torch.floor(fracs.double()).repeat_interleave(n)
    assert bool(((codes.double() == floor) | (codes.double() == floor + 1)).all())


def test_stochastic_rounding_is_reproducible_with_a_seeded_generator() -> None:
    spec = QuantSpec(bits=4, rounding="stochastic", granularity="channel", axis=0)
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    s, z = torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int32)
    a = fake_quantize(x, s, z, spec, generator=torch.Generator().manual_seed(3))
    b = fake_quantize(x, s, z, spec, generator=torch.Generator().manual_seed(3))
    c = fake_quantize(x, s, z, spec, generator=torch.Generator().manual_seed(4))
    assert_equal(a, b, "same seed")
    assert not torch.equal(a, c)


# --------------------------------------------------------------------------- gradient
@given(cases(spec_strategy=specs(rounding=st.sampled_from(("half_even", "half_away")), binary=False)))
def test_straight_through_gradient_is_the_in_range_mask(case: Case) -> None:
    x, s, z, spec = case
    raw, _ = ref_codes(x, s, z, spec)
    mask = torch.from_numpy((raw >= spec.qmin) & (raw <= spec.qmax))
    for dtype in (torch.float32, torch.float64):  # float32 half_even runs torch's kernel
        xg = x.detach().clone().to(dtype).requires_grad_(True)
        g = torch.arange(1, x.numel() + 1, dtype=dtype).reshape(x.shape)
        fake_quantize(xg, s, z, spec).backward(g)
        raw_d, _ = ref_codes(x.to(dtype), s, z, spec)
        mask_d = torch.from_numpy((raw_d >= spec.qmin) & (raw_d <= spec.qmax))
        assert xg.grad is not None
        assert_equal(xg.grad, g * mask_d, f"{dtype} {spec.describe()}")
    del mask


def test_no_gradient_for_scale_and_zero_point() -> None:
    s = torch.tensor(0.5, requires_grad=True)
    x = torch.randn(10, requires_grad=True)
    fake_quantize(x, s, torch.tensor(0), QuantSpec(rounding="half_away")).sum().backward()
    assert s.grad is None and x.grad is not None


# --------------------------------------------------------------------------- binary / ternary
def test_binary_is_sign_with_plus_one_at_zero() -> None:
    spec = QuantSpec.binary()
    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    vals = x.tolist()
    codes = [1 if v >= 0 else -1 for v in vals]  # docs §7: +1 for x >= 0 (-0.0 included), else -1
    assert quantize(x, torch.tensor(0.5), torch.tensor(0), spec).tolist() == codes
    fq = fake_quantize(x.requires_grad_(), torch.tensor(0.5), torch.tensor(0), spec)
    assert fq.tolist() == [float(Fraction(c) * Fraction(1, 2)) for c in codes]
    fq.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [float(abs(Fraction(v) / Fraction(1, 2)) <= 1) for v in vals]
    with pytest.raises(ValueError, match="binary codes"):
        dequantize(torch.tensor([0, 1]), torch.tensor(1.0), torch.tensor(0), spec)


def test_ternary_codes() -> None:
    spec = QuantSpec.ternary()
    x = torch.tensor([-5.0, -0.6, -0.5, -0.4, 0.0, 0.4, 0.5, 0.6, 5.0])
    for mode in DETERMINISTIC:
        q = quantize(x, torch.tensor(1.0), torch.tensor(0), spec.with_(rounding=mode)).tolist()
        want = [min(max(ref_round(Fraction(float(v)), mode), -1), 1) for v in x.tolist()]
        assert q == want, mode
    assert set(quantize(torch.randn(100), torch.tensor(0.3), torch.tensor(0), spec).tolist()) <= {-1, 0, 1}


# --------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(bits=4, symmetric=False),  # float32 half_even: torch kernel
        QuantSpec(bits=4, symmetric=False, rounding="half_away"),  # generic path
        QuantSpec(bits=3, granularity="channel", axis=0),
        QuantSpec(bits=3, symmetric=False, granularity="group", axis=1, group_size=2, rounding="floor"),
        QuantSpec.binary(),
    ],
    ids=lambda s: s.describe(),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_policy(spec: QuantSpec, dtype: torch.dtype) -> None:
    x = torch.tensor([[math.nan, math.inf, -math.inf, 0.3], [1.0, -math.inf, 2.0, math.nan]], dtype=dtype)
    qshape = qparams_shape(x.shape, spec)
    s = torch.full(qshape, 0.25)
    z = torch.full(qshape, 0 if spec.symmetric else 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize(x, s, z, spec)
    xg = x.clone().requires_grad_(True)
    out = fake_quantize(xg, s, z, spec)
    values = out.detach()
    zf = 0.0 if spec.symmetric else 2.0
    hi = 0.25 if spec.is_binary else (spec.qmax - zf) * 0.25
    lo = -0.25 if spec.is_binary else (spec.qmin - zf) * 0.25
    assert math.isnan(values[0, 0]) and math.isnan(values[1, 3])
    assert values[0, 1].item() == hi and values[0, 2].item() == lo and values[1, 1].item() == lo
    out.masked_fill(torch.isnan(out), 0.0).sum().backward()
    assert xg.grad is not None
    assert xg.grad[torch.isfinite(x).logical_not()].tolist() == [0.0] * 5


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bits", [0, 9, -1, True, 4.0])
def test_bad_bits(bits: Any) -> None:
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=bits)


def test_bad_group_and_axis() -> None:
    x = torch.zeros(4, 6)
    with pytest.raises(ValueError, match="group_size=4 does not divide"):
        fake_quantize(x, torch.ones(4, 1), torch.zeros(4, 1), QuantSpec(granularity="group", axis=1, group_size=4))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        fake_quantize(x, torch.ones(4), torch.zeros(4), QuantSpec(granularity="channel", axis=2))
    with pytest.raises(ValueError, match="axis=-3 is out of range"):
        quantize(x, torch.ones(4), torch.zeros(4), QuantSpec(granularity="channel", axis=-3))


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan, math.inf, -math.inf])
def test_bad_scale(bad: float) -> None:
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        fake_quantize(torch.zeros(2, 3), torch.tensor([0.5, bad]), torch.zeros(2), QuantSpec(granularity="channel", axis=0))


def test_bad_zero_point_and_sizes() -> None:
    x = torch.zeros(2, 3)
    asym = QuantSpec(bits=4, signed=False, symmetric=False)
    with pytest.raises(ValueError, match=r"zero_point must be within the code range \[0, 15\]"):
        fake_quantize(x, torch.tensor(1.0), torch.tensor(16), asym)
    with pytest.raises(ValueError, match=r"zero_point must be within the code range"):
        quantize(x, torch.tensor(1.0), torch.tensor(-1), asym)
    with pytest.raises(ValueError, match="zero_point must be 0 for a symmetric spec"):
        fake_quantize(x, torch.tensor(1.0), torch.tensor(1), QuantSpec(bits=4))
    with pytest.raises(ValueError, match="zero_point must be integer-valued"):
        fake_quantize(x, torch.tensor(1.0), torch.tensor(1.5), asym)
    with pytest.raises(ValueError, match="scale has 3 elements"):
        fake_quantize(x, torch.ones(3), torch.zeros(3), QuantSpec(granularity="channel", axis=0))
    with pytest.raises(ValueError, match="zero_point has 1 elements"):
        fake_quantize(x, torch.ones(2), torch.zeros(1), QuantSpec(granularity="channel", axis=0))
    with pytest.raises(ValueError, match="scale must be a floating tensor"):
        fake_quantize(x, torch.tensor(1), torch.tensor(0), QuantSpec())
    with pytest.raises(TypeError, match="floating tensor"):
        fake_quantize(torch.zeros(3, dtype=torch.int32), torch.tensor(1.0), torch.tensor(0), QuantSpec())
    with pytest.raises(TypeError, match="floating tensor"):
        quantize(torch.zeros(3, dtype=torch.int64), torch.tensor(1.0), torch.tensor(0), QuantSpec())
    with pytest.raises(TypeError, match="integer codes"):
        dequantize(torch.zeros(3), torch.tensor(1.0), torch.tensor(0), QuantSpec())
    with pytest.raises(ValueError, match="codes outside the range"):
        dequantize(torch.tensor([8]), torch.tensor(1.0), torch.tensor(0), QuantSpec(bits=4))


def test_unsigned_narrow_symmetric_per_channel() -> None:
    """Zero point 0 lies below qmin = 1 here; every granularity must agree (torch's
    per-channel op refuses such a zero point, so this case takes the generic path)."""
    spec = QuantSpec(bits=4, signed=False, narrow=True, granularity="channel", axis=0)
    x = torch.tensor([[-1.0, 0.0, 0.26, 9.0], [0.05, 1.0, 2.0, 3.0]])
    s, z = torch.tensor([0.5, 0.25]), torch.zeros(2, dtype=torch.int32)
    out = fake_quantize(x, s, z, spec)
    assert_equal(out, ref_fake(x, s, z, spec), "unsigned narrow")
    per_tensor = spec.with_(granularity="tensor", axis=None)
    assert_equal(out[0], fake_quantize(x[0], s[0], z[0], per_tensor), "row 0")


# --------------------------------------------------------------------------- peer: PyTorch
def torch_range_specs(granularity: str) -> st.SearchStrategy[QuantSpec]:
    """half_even specs whose code range and zero points torch's fake-quant ops accept."""
    return specs(
        rounding=st.just("half_even"), granularity=st.just(granularity), binary=False
    ).filter(lambda sp: not (sp.symmetric and sp.qmin > 0))


WIDE = st.floats(-1e6, 1e6, width=32)


@st.composite
def torch_cases(draw: st.DrawFn, granularity: str) -> Case:
    x, s, z, spec = draw(cases(spec_strategy=torch_range_specs(granularity)))
    if draw(st.booleans()):  # arbitrary float32 values and scales as well as step-aligned ones
        x = torch.tensor(draw(st.lists(WIDE, min_size=x.numel(), max_size=x.numel())), dtype=torch.float32).reshape(
            x.shape
        )
        s = torch.tensor(
            draw(st.lists(st.floats(2.0**-20, 2.0**17, width=32), min_size=s.numel(), max_size=s.numel())), dtype=torch.float32
        ).reshape(s.shape)
    return x, s, z, spec


@given(torch_cases("tensor"))
@example((torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5]), torch.tensor(1.0), torch.tensor(1, dtype=torch.int32),
          QuantSpec(bits=3, symmetric=False)))
def test_bit_exact_with_torch_per_tensor(case: Case) -> None:
    x, s, z, spec = case
    want = torch.fake_quantize_per_tensor_affine(x, s.reshape(()), z.reshape(()), spec.qmin, spec.qmax)
    assert_equal(fake_quantize(x, s, z, spec), want, f"fake_quantize {spec.describe()}")
    assert_equal(generic_fake_quantize(x, s, z, spec), want, f"generic {spec.describe()}")
    assert_equal(ref_fake(x, s, z, spec), want, f"reference {spec.describe()}")


@given(torch_cases("channel"))
def test_bit_exact_with_torch_per_channel(case: Case) -> None:
    x, s, z, spec = case
    assert spec.axis is not None
    want = torch.fake_quantize_per_channel_affine(x, s, z, spec.axis % x.dim(), spec.qmin, spec.qmax)
    assert_equal(fake_quantize(x, s, z, spec), want, f"fake_quantize {spec.describe()}")
    assert_equal(generic_fake_quantize(x, s, z, spec), want, f"generic {spec.describe()}")


@given(torch_cases("group"))
def test_bit_exact_with_torch_per_group_through_per_channel(case: Case) -> None:
    x, s, z, spec = case
    assert spec.axis is not None and spec.group_size is not None
    axis = spec.axis % x.dim()
    # groups along `axis` are the channels of the (rows, group_size) matrix
    rows = x.movedim(axis, -1).reshape(-1, spec.group_size)
    want_rows = torch.fake_quantize_per_channel_affine(
        rows, s.movedim(axis, -1).reshape(-1), z.movedim(axis, -1).reshape(-1), 0, spec.qmin, spec.qmax
    )
    want = want_rows.reshape(x.movedim(axis, -1).shape).movedim(-1, axis)
    assert_equal(generic_fake_quantize(x, s, z, spec), want, f"generic {spec.describe()}")
    assert_equal(fake_quantize(x, s, z, spec), want, f"fake_quantize {spec.describe()}")


@given(torch_cases("tensor"))
def test_torch_peer_gradient_mask(case: Case) -> None:
    x, s, z, spec = case
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(a, s.reshape(()), z.reshape(()), spec.qmin, spec.qmax).sum().backward()
    generic_fake_quantize(b, s, z, spec).sum().backward()
    assert a.grad is not None and b.grad is not None
    assert_equal(b.grad, a.grad, spec.describe())

