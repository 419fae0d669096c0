"""LSQ and PACT: forwards against fake_quantize, gradients against the papers' formulas
evaluated element by element in the test (Esser et al. 2020 eq. 3; Choi et al. 2018 eq. 3)."""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quant.sim.functional import fake_quantize, qparams_shape
from quant.sim.learned import (
    lsq_effective_scale,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_init_scale,
    pact_fake_quantize,
    pact_scale,
)
from quant.sim.qparams import SCALE_EPS, pow2_ceil
from quant.contract.spec import QuantSpec
from tests.quant.sim.fake_quant_paths import fake_quant_path  # noqa: F401 (autouse: both paths)
from tests.quant.sim.test_functional import DETERMINISTIC, Case, assert_equal, cases, expand_qparams, ref_round, specs


def key_of(idx: tuple[int, ...], spec: QuantSpec, ndim: int) -> tuple[int, ...]:
    """Index of the quantization parameter that element ``idx`` uses."""
    if spec.granularity == "tensor":
        return ()
    assert spec.axis is not None
    a = spec.axis % ndim
    if spec.granularity == "channel":
        return (idx[a],)
    assert spec.group_size is not None
    return idx[:a] + (idx[a] // spec.group_size,) + idx[a + 1 :]


def grads_of(fn: object, x: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.detach().clone().requires_grad_(True)
    pr = p.detach().clone().requires_grad_(True)
    out = fn(xr, pr)  # type: ignore[operator]
    out.backward(g)
    assert xr.grad is not None and pr.grad is not None
    return xr.grad, pr.grad


# --------------------------------------------------------------------------- LSQ
def lsq_reference_grads(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec, g: torch.Tensor, grad_scale: float
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """dL/dx (exact) and dL/ds (float64 sum, plus the sum of |terms| for the tolerance)."""
    xn = x.numpy()
    sn = expand_qparams(s.numpy(), tuple(x.shape), spec)
    zn = expand_qparams(z.numpy().astype(np.int64), tuple(x.shape), spec)
    gx = torch.zeros_like(x)
    gs = np.zeros(s.shape, dtype=np.float64)
    mag = np.zeros(s.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        v_s = np.float32(xn[idx]) * (np.float32(1) / np.float32(sn[idx]))  # v/s as the forward computes it
        gi = float(g[idx])
        if spec.is_binary:
            inside = abs(float(v_s)) <= 1.0
            term = gi * (1.0 if xn[idx] >= 0 else -1.0)
        else:
            u = Fraction(float(v_s)) + int(zn[idx])
            inside = spec.qmin <= u <= spec.qmax
            if inside:
                term = gi * float(ref_round(Fraction(float(v_s)), spec.rounding) - Fraction(float(v_s)))
            elif u < spec.qmin:
                term = gi * (spec.qmin - int(zn[idx]))
            else:
                term = gi * (spec.qmax - int(zn[idx]))
        if inside:
            gx[idx] = gi
        k = key_of(idx, spec, x.dim())
        gs[k] += grad_scale * term
        mag[k] += abs(grad_scale * term)
    return gx, gs, mag


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC))), st.floats(0.01, 4.0))
def test_lsq_gradients_are_the_papers(case: Case, grad_scale: float) -> None:
    x, s, z, spec = case
    g = torch.linspace(-1.0, 2.0, x.numel()).reshape(x.shape)
    gx, gs = grads_of(lambda a, b: lsq_fake_quantize(a, b, z, spec, grad_scale), x, s, g)
    want_gx, want_gs, mag = lsq_reference_grads(x, s, z, spec, g, grad_scale)
    assert_equal(gx, want_gx, f"dL/dx {spec.describe()}")
    assert gs.shape == s.shape
    err = np.abs(gs.double().numpy() - want_gs)
    tol = 1e-5 * mag + 1e-30
    assert bool((err <= tol).all()), f"dL/ds {gs.tolist()} != {want_gs.tolist()} ({spec.describe()})"


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC + ("stochastic",)))))
def test_lsq_forward_is_fake_quantize(case: Case) -> None:
    x, s, z, spec = case
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        got = lsq_fake_quantize(xd, s, z, spec, 1.0, generator=torch.Generator().manual_seed(1))
        want = fake_quantize(xd, s, z, spec, generator=torch.Generator().manual_seed(1))
        assert got.dtype == dtype
        assert_equal(got, want, f"{dtype} {spec.describe()}")


def test_lsq_binary_scale_gradient_is_the_sign_everywhere() -> None:
    spec = QuantSpec.binary()
    x = torch.tensor([-3.0, -0.2, 0.0, 0.4, 2.5])
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    gx, gs = grads_of(lambda a, b: lsq_fake_quantize(a, b, torch.tensor(0), spec, 0.5), x, torch.tensor(1.0), g)
    # STE: dL/dx = g where |x/s| <= 1; dL/ds = grad_scale * sum(g * sign(x)), sign(0) = +1
    assert gx.tolist() == [gi if abs(v) <= 1.0 else 0.0 for v, gi in zip(x.tolist(), g.tolist())]
    assert gs.item() == 0.5 * sum(gi if v >= 0 else -gi for v, gi in zip(x.tolist(), g.tolist()))


def test_lsq_grad_scale_is_linear() -> None:
    spec = QuantSpec(bits=4, granularity="channel", axis=0)
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    s, z = torch.tensor([0.1, 0.2, 0.3]), torch.zeros(3, dtype=torch.int32)
    g = torch.ones_like(x)
    _, g1 = grads_of(lambda a, b: lsq_fake_quantize(a, b, z, spec, 1.0), x, s, g)
    _, g2 = grads_of(lambda a, b: lsq_fake_quantize(a, b, z, spec, 2.0), x, s, g)
    assert torch.equal(g2, 2 * g1)


def test_lsq_helpers() -> None:
    assert lsq_grad_scale(1000, 7) == 1.0 / math.sqrt(7000)
    for bad in ((0, 7), (10, 0), (1.5, 7), (True, 7)):
        with pytest.raises(ValueError):
            lsq_grad_scale(*bad)
    spec = QuantSpec(bits=4, granularity="group", axis=1, group_size=2)
    x = torch.tensor([[1.0, -3.0, 0.5, 0.5], [0.0, 0.0, 2.0, -2.0]])
    got = lsq_init_scale(x, spec)
    want = [[2 * 2.0 / math.sqrt(7), 2 * 0.5 / math.sqrt(7)], [1.0, 2 * 2.0 / math.sqrt(7)]]
    assert got.dtype == torch.float32 and got.shape == qparams_shape(x.shape, spec)
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-6)
    with pytest.raises(ValueError, match="NaN or Inf"):
        lsq_init_scale(torch.tensor([1.0, math.nan]), QuantSpec())
    with pytest.raises(TypeError):
        lsq_init_scale(torch.tensor([1, 2]), QuantSpec())


def test_lsq_pow2_and_non_positive_scales() -> None:
    spec = QuantSpec(bits=4, scale="pow2")
    x = torch.randn(50, generator=torch.Generator().manual_seed(0))
    s = torch.tensor(0.3)
    got = lsq_fake_quantize(x, s, torch.tensor(0), spec, 1.0)
    assert torch.equal(got, fake_quantize(x, torch.tensor(0.5), torch.tensor(0), spec))
    _, gs = grads_of(lambda a, b: lsq_fake_quantize(a, b, torch.tensor(0), spec, 1.0), x, s, torch.ones_like(x))
    _, gs_half = grads_of(
        lambda a, b: lsq_fake_quantize(a, b, torch.tensor(0), spec.with_(scale="float"), 1.0), x,
        torch.tensor(0.5), torch.ones_like(x),
    )
    assert torch.equal(gs, gs_half)  # the gradient at the effective scale, passed straight through
    # a learned scale that went negative is used as SCALE_EPS (validate=False: no check)
    out = lsq_fake_quantize(x, torch.tensor(-1.0), torch.tensor(0), QuantSpec(bits=4), 1.0, validate=False)
    assert bool(torch.isfinite(out).all())
    assert lsq_effective_scale(torch.tensor([-1.0, 0.0, 3.0]), QuantSpec()).tolist() == [SCALE_EPS, SCALE_EPS, 3.0]
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        lsq_fake_quantize(x, torch.tensor(-1.0), torch.tensor(0), QuantSpec(bits=4), 1.0)
    with pytest.raises(ValueError, match="grad_scale"):
        lsq_fake_quantize(x, torch.tensor(1.0), torch.tensor(0), QuantSpec(bits=4), math.nan)
    with pytest.raises(TypeError, match="floating"):
        lsq_fake_quantize(torch.ones(3, dtype=torch.int32), torch.tensor(1.0), torch.tensor(0), QuantSpec(), 1.0)


def test_lsq_non_finite_inputs_follow_fake_quantize() -> None:
    spec = QuantSpec(bits=4, symmetric=False, rounding="half_away")
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.3])
    s, z = torch.tensor(0.25), torch.tensor(3)
    assert_equal(lsq_fake_quantize(x, s, z, spec, 1.0), fake_quantize(x, s, z, spec), "non-finite")
    gx, _ = grads_of(lambda a, b: lsq_fake_quantize(a, b, z, spec, 1.0), x, s, torch.ones(4))
    assert gx.tolist() == [0.0, 0.0, 0.0, 1.0]
    finite = x[1:]  # +-Inf are clipped: (qmax - z) and (qmin - z) in the scale gradient
    _, gs = grads_of(lambda a, b: lsq_fake_quantize(a, b, z, spec, 1.0), finite, s, torch.ones(3))
    r = round(0.3 / 0.25)
    assert gs.item() == pytest.approx((spec.qmax - 3) + (spec.qmin - 3) + (r - 0.3 / 0.25), rel=1e-6)


# --------------------------------------------------------------------------- PACT
@st.composite
def pact_cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, QuantSpec]:
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    narrow = signed and bits > 1 and draw(st.booleans())
    gran = draw(st.sampled_from(("tensor", "channel")))
    spec = QuantSpec(
        bits=bits, signed=signed, symmetric=True, narrow=narrow, granularity=gran,
        axis=1 if gran == "channel" else None, rounding=draw(st.sampled_from(DETERMINISTIC)),
    )
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    n_a = math.prod(qparams_shape(shape, spec))
    alpha = torch.tensor(draw(st.lists(st.floats(2.0**-4, 2.0**6, width=32), min_size=n_a, max_size=n_a)))
    alpha = alpha.reshape(qparams_shape(shape, spec))
    a_full = torch.from_numpy(expand_qparams(alpha.numpy(), shape, spec))
    u = draw(st.lists(st.one_of(st.floats(-1.5, 1.5, width=32), st.sampled_from((-1.0, 0.0, 1.0))),
                      min_size=math.prod(shape), max_size=math.prod(shape)))
    x = torch.tensor(u).reshape(shape) * a_full  # includes x = +-alpha and 0 exactly
    return x, alpha, spec


@given(pact_cases())
def test_pact_forward_and_gradients_are_the_papers(case: tuple[torch.Tensor, torch.Tensor, QuantSpec]) -> None:
    x, alpha, spec = case
    g = torch.linspace(-1.0, 2.0, x.numel()).reshape(x.shape)
    xn = x.numpy()
    an = expand_qparams(alpha.numpy(), tuple(x.shape), spec)
    want_out = torch.zeros_like(x)
    want_gx = torch.zeros_like(x)
    want_ga = np.zeros(alpha.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        v, a = np.float32(xn[idx]), np.float32(an[idx])
        lo = -a if spec.signed else np.float32(0)
        y = min(max(v, lo), a)
        s = np.float32(a / np.float32(spec.qmax))
        if spec.is_binary:
            code = 1 if y >= 0 else -1
        else:
            prod = np.float32(y * (np.float32(1) / s))
            code = min(max(ref_round(Fraction(float(prod)), spec.rounding), spec.qmin), spec.qmax)
        want_out[idx] = float(np.float32(np.float32(code) * s))
        gi = float(g[idx])
        if lo <= v <= a:
            want_gx[idx] = gi
        k = key_of(idx, spec, x.dim())
        want_ga[k] += gi * (v >= a) - (gi * (v <= -a) if spec.signed else 0.0)
    assert_equal(pact_fake_quantize(x, alpha, spec), want_out, f"forward {spec.describe()}")
    gx, ga = grads_of(lambda p, q: pact_fake_quantize(p, q, spec), x, alpha, g)
    assert_equal(gx, want_gx, f"dL/dx {spec.describe()}")
    np.testing.assert_allclose(ga.double().numpy(), want_ga, rtol=1e-5, atol=1e-5)


def test_pact_matches_clamp_then_fake_quantize() -> None:
    x = torch.randn(4, 30, generator=torch.Generator().manual_seed(0)) * 3
    alpha = torch.tensor(2.5)
    for spec in (QuantSpec(bits=4, signed=False), QuantSpec(bits=3, signed=False, rounding="half_up")):
        want = fake_quantize(x.clamp(0, 2.5), alpha / spec.qmax, torch.tensor(0), spec)
        assert torch.equal(pact_fake_quantize(x, alpha, spec), want)
    spec = QuantSpec(bits=4, scale="pow2")
    s = pow2_ceil(alpha / 7)
    assert pact_scale(alpha, spec).item() == s.item()
    assert torch.equal(pact_fake_quantize(x, alpha, spec), fake_quantize(x.clamp(-2.5, 2.5), s, torch.tensor(0), spec))


def test_pact_bad_input() -> None:
    with pytest.raises(ValueError, match="narrow"):
        pact_fake_quantize(torch.zeros(3), torch.tensor(1.0), QuantSpec(bits=4, signed=False, narrow=True))
    with pytest.raises(ValueError, match="alpha has 2 elements"):
        pact_fake_quantize(torch.zeros(3), torch.ones(2), QuantSpec(bits=4, signed=False))
    with pytest.raises(TypeError, match="floating"):
        pact_fake_quantize(torch.zeros(3, dtype=torch.int64), torch.tensor(1.0), QuantSpec(signed=False))
    with pytest.raises(TypeError, match="alpha"):
        pact_fake_quantize(torch.zeros(3), torch.tensor(1), QuantSpec(signed=False))
    out = pact_fake_quantize(torch.tensor([1.0, -1.0]), torch.tensor(-2.0), QuantSpec(bits=4, signed=False))
    assert bool(torch.isfinite(out).all())  # a learned alpha that went negative acts as SCALE_EPS
