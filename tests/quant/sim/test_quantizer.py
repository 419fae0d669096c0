"""Quantizer: flags, QAT-style and calibrated forwards, LSQ/PACT parameters, shape
checks, state_dict round trips and the steady-state forward's cost discipline."""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import copy
import io
import math
import pickle
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import quant.sim.functional
import quant.sim.quantizer
from quant.sim.functional import fake_quantize
from quant.sim.learned import lsq_init_scale
from quant.sim.observers import OBSERVERS, make_observer
from quant.sim.quantizer import Quantizer
from quant.contract.spec import QuantSpec
from tests.quant.sim.fake_quant_paths import fake_quant_path  # noqa: F401 (autouse: both paths)
from tests.quant.sim.test_functional import DETERMINISTIC, Case, assert_equal, cases, specs

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
G3 = QuantSpec(bits=3, granularity="group", axis=1, group_size=4)
SPECS = [W4, A4, G3, QuantSpec.binary(), QuantSpec(bits=4, scale="pow2", rounding="half_away")]
SPEC_IDS = [s.describe() for s in SPECS]


def data(seed: int, shape: tuple[int, ...] = (6, 8), scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def calibrate(q: Quantizer, batches: list[torch.Tensor]) -> None:
    """What a handle's calibrate() does."""
    q.observing, q.quantizing = True, False
    for b in batches:
        assert q(b) is b
    q.compute_qparams()
    q.observing, q.quantizing = False, True


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded: dict[str, Any] = torch.load(buf, weights_only=True)
    return loaded


# --------------------------------------------------------------------------- flags and forwards
def test_defaults_and_repr() -> None:
    q = Quantizer(W4, learn="lsq")
    assert (q.enabled, q.observing, q.quantizing, q.calibrated) == (True, True, True, False)
    assert q.extra_repr() == "int4 sym per-channel(0) half_even, observer=minmax, learn=lsq"
    assert "MinMaxObserver" in repr(q)
    assert Quantizer(A4, observer="mse").extra_repr() == "uint4 asym per-tensor half_even, observer=mse, learn=none"


@pytest.mark.parametrize("name", list(OBSERVERS))
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_qat_style_forward_observes_then_quantizes(name: str, spec: QuantSpec) -> None:
    q = Quantizer(spec, observer=name)
    obs = make_observer(name, spec)
    for i in range(3):
        x = data(i, scale=1.0 + i)
        y = q(x)
        obs.update(x)
        s, z = obs.qparams()
        assert torch.equal(y, fake_quantize(x, s, z, spec)), i
        assert torch.equal(q.scale, s) and torch.equal(q.zero_point, z)
    assert q.calibrated and q.observing


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_calibrate_then_fixed_qparams(spec: QuantSpec) -> None:
    q = Quantizer(spec, observer="moving_average")
    batches = [data(i, scale=1.0 + i) for i in range(3)]
    calibrate(q, batches)
    obs = make_observer("moving_average", spec)
    for b in batches:
        obs.update(b)
    s, z = obs.qparams()
    assert torch.equal(q.scale, s) and torch.equal(q.zero_point, z) and q.calibrated
    big = data(9, scale=100.0)
    assert torch.equal(q(big), fake_quantize(big, s, z, spec))
    assert torch.equal(q.scale, s)  # not observing: parameters stay


def test_disabled_and_pass_through_return_the_input_itself() -> None:
    q = Quantizer(A4)
    q.enabled = False
    x = data(0)
    assert q(x) is x and not q.observer.has_data
    q.enabled, q.quantizing = True, False
    assert q(x) is x and q.observer.has_data and not q.calibrated


def test_quantizing_without_qparams_raises() -> None:
    q = Quantizer(A4)
    q.observing = False
    with pytest.raises(RuntimeError, match="no quantization parameters yet"):
        q(data(0))
    with pytest.raises(RuntimeError, match="no data was observed"):
        q.compute_qparams()


def test_input_checks() -> None:
    with pytest.raises(TypeError, match="expects a floating tensor, got torch.int64"):
        Quantizer(A4)(torch.arange(4))
    with pytest.raises(ValueError, match=r"input of shape \(4,\) does not fit the spec: QuantSpec.axis=1 is out of range"):
        Quantizer(QuantSpec(granularity="channel", axis=1))(torch.zeros(4))
    with pytest.raises(ValueError, match="group_size=4 does not divide dimension 1 of size 6"):
        Quantizer(G3)(torch.zeros(2, 6))
    q = Quantizer(W4)
    q(data(0, (6, 8)))
    q.observing = False
    with pytest.raises(ValueError, match=r"needs quantization parameters of shape \(5,\), but they have shape \(6,\)"):
        q(data(0, (5, 8)))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="learn='adaround' is not one of 'none', 'lsq', 'pact'"):
        Quantizer(A4, learn="adaround")
    with pytest.raises(ValueError, match="unknown observer 'kl'"):
        Quantizer(A4, observer="kl")
    with pytest.raises(TypeError, match="QuantSpec"):
        Quantizer("int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pact"):
        Quantizer(QuantSpec(bits=4, signed=False, narrow=True), learn="pact")
    with pytest.raises(ValueError, match="percentile"):
        Quantizer(A4, observer="percentile", observer_kwargs={"percentile": 10.0})
    q = Quantizer(A4, observer="percentile", observer_kwargs={"percentile": 99.0})
    assert q.observer.percentile == 99.0


def test_straight_through_gradient_and_dtypes() -> None:
    q = Quantizer(A4)
    x = data(0).requires_grad_(True)
    y = q(x)
    y.backward(torch.ones_like(y))
    s, z = q.scale, q.zero_point
    codes = torch.round(x.detach() * (1 / s)) + z
    assert x.grad is not None and torch.equal(x.grad, ((codes >= 0) & (codes <= 15)).float())
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        out = Quantizer(A4)(data(1).to(dtype))
        assert out.dtype == dtype


@given(cases(spec_strategy=specs(rounding=st.sampled_from(DETERMINISTIC + ("stochastic",)), binary=False)),
       st.sampled_from([torch.float32, torch.float64]))
def test_quantizer_forward_and_gradient_equal_fake_quantize(case: Case, dtype: torch.dtype) -> None:
    x, s, z, spec = case
    x = x.to(dtype)
    x[(0,) * x.dim()] = math.inf  # the non-finite policy holds without a separate check
    if x.numel() > 1:
        x.view(-1)[-1] = math.nan
    q = Quantizer(spec)
    q.observing = False
    q.scale, q.zero_point, q.calibrated = s, z, True
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    torch.manual_seed(0)
    got = q(a)
    torch.manual_seed(0)
    want = fake_quantize(b, s, z, spec)
    assert_equal(got.detach(), want.detach(), f"values {spec.describe()}")
    g = torch.linspace(1.0, 2.0, x.numel(), dtype=dtype).reshape(x.shape)
    got.backward(g)
    want.backward(g)
    assert a.grad is not None and b.grad is not None
    assert_equal(a.grad, b.grad, f"gradient {spec.describe()}")


# --------------------------------------------------------------------------- LSQ
def test_lsq_initializes_from_the_first_batch_and_learns() -> None:
    q = Quantizer(W4, learn="lsq")
    assert isinstance(q.scale, nn.Parameter) and any(p is q.scale for p in q.parameters())
    opt = torch.optim.SGD(q.parameters(), lr=0.1)  # built before the scale has a shape
    x = data(0).requires_grad_(True)
    y = q(x)
    assert torch.equal(q.scale.detach(), lsq_init_scale(x, W4))
    assert q.calibrated and not q.observing
    assert torch.equal(y, fake_quantize(x, q.scale.detach(), q.zero_point, W4))
    (y**2).sum().backward()
    assert q.scale.grad is not None and q.scale.grad.shape == (6,) and bool((q.scale.grad != 0).any())
    assert x.grad is not None
    before = q.scale.detach().clone()
    opt.step()
    assert not torch.equal(before, q.scale.detach())
    x2 = data(1, scale=10.0)
    q(x2)
    assert not q.observer.max_val.ge(x2.amax(dim=1)).all()  # observing stopped itself


def test_lsq_calibration_uses_every_batch_and_sets_the_zero_point() -> None:
    q = Quantizer(A4, learn="lsq")
    batches = [data(i, (4, 8), scale=1.0 + i) + 0.5 for i in range(3)]
    calibrate(q, batches)
    want = lsq_init_scale(torch.cat(batches), A4)
    assert torch.allclose(q.scale.detach(), want, rtol=1e-6)
    lo = min(float(b.min()) for b in batches)
    s = q.scale.detach()
    assert q.zero_point.item() == min(max(-round(lo / s.item()), 0), 15)
    assert q.zero_point.dtype == torch.int32


def test_lsq_gradient_scale_uses_elements_per_scale() -> None:
    q = Quantizer(W4, learn="lsq")
    q(data(0))
    x = data(1)
    q(x).sum().backward()
    got = q.scale.grad
    assert got is not None
    s = q.scale.detach().clone().requires_grad_(True)
    from quant.sim.learned import lsq_fake_quantize

    lsq_fake_quantize(x, s, q.zero_point, W4, 1 / math.sqrt(8 * 7)).sum().backward()
    assert s.grad is not None and torch.equal(got, s.grad)


# --------------------------------------------------------------------------- PACT
@pytest.mark.parametrize("observer", ["minmax", "percentile"])
def test_pact_alpha_from_the_observer(observer: str) -> None:
    spec = QuantSpec(bits=4, signed=False)
    q = Quantizer(spec, learn="pact", observer=observer)
    x = data(0).relu().requires_grad_(True)
    y = q(x)
    obs = make_observer(observer, spec)
    obs.update(x.detach())
    s_obs, _ = obs.qparams()
    assert torch.equal(q.alpha.detach(), s_obs * 15)
    assert torch.equal(q.scale, q.alpha.detach() / 15) and q.zero_point.item() == 0
    assert not q.observing and q.calibrated
    from quant.sim.learned import pact_fake_quantize

    assert torch.equal(y, pact_fake_quantize(x, q.alpha, spec))
    (y * 2).sum().backward()
    assert q.alpha.grad is not None and q.alpha.grad.item() == 2.0 * float((x.detach() >= q.alpha.detach()).sum())


def test_pact_signed_uses_a_symmetric_observer() -> None:
    q = Quantizer(QuantSpec(bits=4, symmetric=False), learn="pact")
    q(torch.tensor([-3.0, 1.0]))
    assert q.alpha.item() == pytest.approx(3.0, rel=1e-6)


# --------------------------------------------------------------------------- freeze / reset
@pytest.mark.parametrize("learn", ["none", "lsq", "pact"])
def test_freeze_and_reset(learn: str) -> None:
    spec = A4 if learn != "none" else W4
    q = Quantizer(spec, learn=learn)
    q.quantizing = False
    q(data(0).abs())
    q.freeze()  # computes the qparams from what was observed
    assert q.calibrated and not q.observing
    q.quantizing = True
    s0 = q.scale.detach().clone()
    q(data(5, scale=50.0))
    assert torch.equal(q.scale.detach(), s0)
    learned = [p for p in q.parameters()]
    assert all(not p.requires_grad for p in learned)
    q.reset()
    assert not q.calibrated and q.observing and not q.observer.has_data
    assert all(p.requires_grad for p in q.parameters())
    q(data(1))
    assert q.calibrated


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize("learn", ["none", "lsq", "pact"])
@pytest.mark.parametrize("observer", list(OBSERVERS))
@pytest.mark.parametrize("spec", [W4, G3, A4], ids=["W4", "G3", "A4"])
def test_state_dict_round_trip_into_a_fresh_quantizer(learn: str, observer: str, spec: QuantSpec) -> None:
    if learn == "pact" and spec is W4:
        spec = QuantSpec(bits=4, granularity="channel", axis=0)
    q = Quantizer(spec, learn=learn, observer=observer)
    calibrate(q, [data(0), data(1, scale=2.0)])
    x = data(7)
    want = q(x)
    fresh = Quantizer(spec, learn=learn, observer=observer)
    fresh.load_state_dict(roundtrip(q.state_dict()))
    assert (fresh.calibrated, fresh.observing, fresh.quantizing) == (True, False, True)
    assert torch.equal(fresh(x), want)
    assert torch.equal(fresh.scale, q.scale) and torch.equal(fresh.zero_point, q.zero_point)


def test_state_dict_restores_an_uncalibrated_snapshot() -> None:
    q = Quantizer(W4, learn="lsq")
    snapshot = copy.deepcopy(q.state_dict())
    calibrate(q, [data(0)])
    q.load_state_dict(snapshot)
    assert not q.calibrated and q.observing and q.scale.shape == (0,) and not q.observer.has_data


def test_state_dict_of_another_configuration_is_refused() -> None:
    q = Quantizer(W4)
    q(data(0))
    with pytest.raises(ValueError, match="saved from a quantizer configured as"):
        Quantizer(W4.with_(bits=8)).load_state_dict(q.state_dict())


def test_in_a_model_saved_and_loaded_into_a_fresh_copy() -> None:
    def build() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(Quantizer(A4, learn="lsq"), nn.Linear(8, 3), Quantizer(W4, observer="mse"))

    model = build()
    model(data(0))
    loaded = build()
    loaded.load_state_dict(roundtrip(model.state_dict()))
    for m in (model, loaded):
        for sub in m:
            if isinstance(sub, Quantizer):
                sub.observing = False
    x = data(3)
    assert torch.equal(model(x), loaded(x))


def test_copy_and_pickle() -> None:
    for learn in ("none", "lsq", "pact"):
        q = Quantizer(A4, learn=learn)
        q(data(0).abs())
        for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            assert torch.equal(other(data(1)), q(data(1)))


# --------------------------------------------------------------------------- cost discipline
@pytest.mark.parametrize("learn", ["none", "lsq", "pact"])
def test_steady_state_forward_does_not_validate(learn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_qparams (host syncs) runs when qparams change, not on every forward."""
    q = Quantizer(A4, learn=learn)
    calibrate(q, [data(0).abs()])

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_qparams called in the steady-state forward")

    monkeypatch.setattr(quant.sim.functional, "check_qparams", refuse)
    monkeypatch.setattr(quant.sim.quantizer, "check_qparams", refuse)
    x = data(1).requires_grad_(True)
    q(x).sum().backward()


def test_many_channels_are_handled_without_per_channel_python_work() -> None:
    """A 4096-channel weight through every observer: vectorized, so well under a second each."""
    import time

    w = data(0, (4096, 64))
    for name in OBSERVERS:
        q = Quantizer(W4, observer=name, observer_kwargs={"num_candidates": 20} if name == "mse" else None)
        t0 = time.perf_counter()
        q(w)
        assert time.perf_counter() - t0 < 5.0, name
