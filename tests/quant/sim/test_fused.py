"""The fused C path of fake quantization (quant.sim.fused) against the torch path, its reference.

The property modules of fake quantization (test_functional, test_quantizer, test_half_precision) run
whole on both paths (tests/quant/sim/fake_quant_paths.py); here the two are compared directly on larger
tensors of up to four dimensions, with NaN, +-Inf, exact ties and far out-of-range values, on every loop
set this CPU runs, with and without threads, and on the layouts the fused path reads in place.
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from quant.contract.spec import QuantSpec
from quant.sim import fused
from quant.sim.functional import broadcast_qparams, fake_quantize, group_view, qparams_shape
from tests.quant.sim.test_functional import assert_equal

pytestmark = pytest.mark.skipif(not fused.available(), reason="quant._fakequant is not built (make ext)")
ISAS = [isa for isa in ("portable", "avx2") if fused.available(isa)]
MODES = ("half_even", "half_away", "half_up", "floor")


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantSpec]:
    """``(x, scale, zero_point, spec)``: a 1- to 4-d float32 ``x`` in step units around the code range."""
    bits = draw(st.integers(2, 8))
    signed, symmetric, narrow = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    gran = draw(st.sampled_from(("tensor", "channel", "group")))
    dims = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 7)) for _ in range(dims)]
    kw: dict[str, object] = {}
    if gran != "tensor":
        axis = draw(st.integers(-dims, dims - 1))
        kw["axis"] = axis
        if gran == "group":
            g = draw(st.sampled_from((1, 2, 4, 8)))
            kw["group_size"] = g
            shape[axis % dims] = g * draw(st.integers(1, 3))
    spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, narrow=narrow, granularity=gran,
                     rounding=draw(st.sampled_from(MODES)), **kw)  # type: ignore[arg-type]  # fmt: skip
    qshape = qparams_shape(tuple(shape), spec)
    n_q = math.prod(qshape)
    s = torch.tensor(draw(st.lists(st.floats(2.0**-20, 2.0**12, width=32), min_size=n_q, max_size=n_q)))
    z = torch.tensor([0 if symmetric else draw(st.integers(spec.qmin, spec.qmax)) for _ in range(n_q)],
                     dtype=torch.int32)  # fmt: skip
    s, z = s.reshape(qshape), z.reshape(qshape)
    n = math.prod(shape)
    span = float(1 << bits)
    steps = draw(st.lists(st.one_of(
        st.floats(-2 * span, 2 * span, width=32),
        st.integers(-4 * int(span), 4 * int(span)).map(lambda k: k / 2),  # exact ties
        st.sampled_from((0.0, -0.0, math.nan, math.inf, -math.inf, 3e38, -3e38)),
    ), min_size=n, max_size=n))  # fmt: skip
    x = torch.tensor(steps, dtype=torch.float32).reshape(shape)
    x = (group_view(x, spec) * broadcast_qparams(s, x, spec)).reshape(shape)  # steps -> values
    return x, s, z, spec


def both_paths(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec, isa: str
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(values, gradient of sum(values * w)) from the torch path, then the fused path with ``isa``."""
    w = torch.linspace(-2.0, 2.0, x.numel()).reshape(x.shape)
    for mode in ("off", isa):
        with fused.fused_path(mode):
            xr = x.clone().requires_grad_(True)
            out = fake_quantize(xr, s, z, spec)
            (out * w).sum().backward()
            assert xr.grad is not None
            yield out.detach(), xr.grad


@pytest.mark.parametrize("isa", ISAS)
@given(problem=problems())
def test_fused_values_and_gradients_equal_the_torch_path(isa: str,
                                                         problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantSpec]) -> None:  # fmt: skip
    x, s, z, spec = problem
    (ref, ref_grad), (got, got_grad) = both_paths(x, s, z, spec, isa)
    assert_equal(got, ref, f"values, {spec.describe()}")
    assert_equal(got_grad, ref_grad, f"gradient, {spec.describe()}")
    with fused.fused_path(isa), torch.no_grad():  # the inference form: no mask
        assert_equal(fake_quantize(x, s, z, spec), ref, "values without a mask")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_threads_split_the_work_without_changing_it(isa: str, granularity: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor large enough for several threads (and chunk boundaries mid-channel) equals the one-thread result."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 48, 33, 31, generator=g) * 3
    kw = {"axis": 1} if granularity == "channel" else ({"axis": 1, "group_size": 8} if granularity == "group" else {})
    spec = QuantSpec(bits=4, signed=False, symmetric=False, granularity=granularity, **kw)  # type: ignore[arg-type]
    qshape = qparams_shape(x.shape, spec)
    s = torch.rand(qshape, generator=g) * 0.5 + 0.05
    z = torch.randint(0, 16, qshape, generator=g, dtype=torch.int32)
    results = []
    for t in (1, 4):  # the loops' threads (quant.sim.fused: LOWBIT_FQ_THREADS)
        monkeypatch.setenv("LOWBIT_FQ_THREADS", str(t))
        results.append(list(both_paths(x, s, z, spec, isa))[1])
    with fused.fused_path("off"):
        ref = fake_quantize(x, s, z, spec)
    for values, grad in results:
        assert_equal(values, ref, "values")
        assert_equal(grad, results[0][1], "gradient")


@pytest.mark.parametrize("layout", ["channels-last", "permuted"])
def test_dense_layouts_are_read_in_place_and_keep_their_strides(layout: str) -> None:
    base = torch.randn(2, 8, 5, 6)
    x = base.to(memory_format=torch.channels_last) if layout == "channels-last" else base.permute(3, 1, 0, 2)
    spec = QuantSpec(bits=4, signed=False, symmetric=False)
    s, z = torch.tensor(0.1), torch.tensor(7, dtype=torch.int32)
    assert fused.fused_applies(x, s, spec)
    assert fused.tensor_extremes(x) == (float(x.min()), float(x.max()))
    x = x.detach().requires_grad_(True)
    out = fake_quantize(x, s, z, spec)
    assert out.stride() == x.stride()
    (out * out.detach()).sum().backward()
    with fused.fused_path("off"):
        ref = fake_quantize(x.detach(), s, z, spec)
        assert_equal(out.detach(), ref, f"{layout} values")
    assert x.grad is not None
    x_ref = x.detach().clone().requires_grad_(True)
    with fused.fused_path("off"):
        (fake_quantize(x_ref, s, z, spec) * ref).sum().backward()
    assert x_ref.grad is not None
    assert_equal(x.grad, x_ref.grad, f"{layout} gradient")


@pytest.mark.parametrize(
    "x, spec",
    [
        (torch.randn(4, 6, dtype=torch.float64), QuantSpec(bits=4)),  # float64
        (torch.randn(4, 6), QuantSpec(bits=4, rounding="stochastic")),  # random draws
        (torch.randn(4, 6), QuantSpec(bits=1, signed=True, symmetric=True)),  # binary
        (torch.randn(6, 4).t(), QuantSpec(bits=4, granularity="channel", axis=0)),  # strided
        (torch.randn(2, 8, 5, 6).to(memory_format=torch.channels_last), QuantSpec(bits=4, granularity="channel", axis=1)),
    ],
    ids=["float64", "stochastic", "binary", "transposed", "channels-last-per-channel"],
)
def test_other_calls_take_the_torch_path(x: torch.Tensor, spec: QuantSpec) -> None:
    s = torch.full(qparams_shape(x.shape, spec), 0.25)
    assert not fused.fused_applies(x, s, spec)
    z = torch.zeros(s.shape, dtype=torch.int32)
    if spec.rounding != "stochastic":  # the result is the torch path's, whatever the mode
        with fused.fused_path("off"):
            ref = fake_quantize(x, s, z, spec)
        assert_equal(fake_quantize(x, s, z, spec), ref, "torch path")


def test_wrong_qparams_counts_are_refused_before_the_loops_read_them() -> None:
    spec = QuantSpec(bits=4, granularity="channel", axis=0)
    with pytest.raises(ValueError, match="needs 3"):
        fused.fake_quantize_fused(torch.randn(3, 4), torch.ones(2), torch.zeros(2, dtype=torch.int32), spec, True)


def test_a_bad_thread_count_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOWBIT_FQ_THREADS", "two")
    with pytest.raises(ValueError, match="LOWBIT_FQ_THREADS='two'"):
        fake_quantize(torch.randn(8), torch.tensor(0.1), torch.tensor(0, dtype=torch.int32), QuantSpec(bits=4))


def test_bad_modes_are_named() -> None:
    with pytest.raises(ValueError, match="mode='fast'"):
        with fused.fused_path("fast"):
            pass


def test_gradient_of_another_layout_is_masked_by_torch() -> None:
    mask = torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8)
    grad = torch.tensor([[1.0, 2.0], [3.0, -4.0]]).t()  # strides differ from the mask's
    assert_equal(fused.masked_gradient(grad, mask), grad * mask, "masked gradient")


@st.composite
def observed_batches(draw: st.DrawFn) -> tuple[list[torch.Tensor], str, float, QuantSpec]:
    n = draw(st.integers(1, 40))
    batches = [torch.tensor(draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=n, max_size=n)))
               for _ in range(draw(st.integers(1, 4)))]  # fmt: skip
    observer = draw(st.sampled_from(("minmax", "moving_average")))
    momentum = draw(st.floats(1e-3, 1.0))
    bits = draw(st.integers(2, 8))
    spec = QuantSpec(bits=bits, signed=draw(st.booleans()), symmetric=draw(st.booleans()),
                     scale=draw(st.sampled_from(("float", "pow2"))))  # fmt: skip
    return batches, observer, momentum, spec


@given(observed_batches())
def test_observing_quantizers_keep_the_torch_paths_statistics_and_qparams(case: tuple[list[torch.Tensor], str, float, QuantSpec]) -> None:  # fmt: skip
    """QAT-style quantizers (observing every batch) on the per-tensor fast path (C extremes, Python-float
    statistics and qparams, buffers updated in place) hold and give what the torch path does, batch by batch."""
    batches, observer, momentum, spec = case
    _assert_both_paths_observe_alike(batches, observer, momentum, spec)


def _assert_both_paths_observe_alike(batches: list[torch.Tensor], observer: str, momentum: float,
                                     spec: QuantSpec) -> None:  # fmt: skip
    """A QAT-style quantizer observing every batch holds and gives, after each, what it does on the torch path."""
    from quant.sim.quantizer import Quantizer

    kwargs = {"momentum": momentum} if observer == "moving_average" else {}
    runs = []
    for mode in ("off", "auto"):
        q = Quantizer(spec, observer=observer, observer_kwargs=kwargs).train()
        states = []
        with fused.fused_path(mode):
            for x in batches:
                out = q(x)
                states.append((out, q.observer.min_val.clone(), q.observer.max_val.clone(), q.scale.clone(),
                               q.zero_point.clone()))  # fmt: skip
        runs.append(states)
    for step, (ref, got) in enumerate(zip(*runs)):
        for name, a, b in zip(("values", "min_val", "max_val", "scale", "zero_point"), got, ref):
            assert_equal(a, b, f"batch {step}: {name}")


def test_observers_refuse_non_finite_data_on_the_fast_path() -> None:
    from quant.sim.observers import MinMaxObserver

    obs = MinMaxObserver(QuantSpec())
    with pytest.raises(ValueError, match="NaN or Inf"):
        obs.update(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        obs.update(torch.tensor([1.0, math.inf]))
    assert not obs.has_data


def test_a_changed_buffer_is_read_again() -> None:
    """The Python copies of a quantizer's per-tensor qparams follow the buffers: written in place, replaced
    or loaded from a state_dict, the next forward quantizes with the new values."""
    from quant.sim.quantizer import Quantizer

    q = Quantizer(QuantSpec(bits=4))
    x = torch.tensor([0.3, 1.0, -2.0])
    q(x)
    q.observing = False
    with torch.no_grad():
        q.scale.fill_(0.5)
    assert q(x).tolist() == [0.5, 1.0, -2.0]
    q.scale = torch.tensor(0.25)
    assert q(x).tolist() == [0.25, 1.0, -2.0]
    state = dict(q.state_dict())
    state["scale"] = torch.tensor(1.0)
    q.load_state_dict(state)
    assert q(x).tolist() == [0.0, 1.0, -2.0]


def test_unchanged_statistics_and_qparams_are_not_written_again() -> None:
    """An observing quantizer whose running range does not grow leaves its buffers untouched (same versions);
    one that grows writes them; a buffer edited in place in between is written again with the observed value."""
    from quant.sim.quantizer import Quantizer

    q = Quantizer(QuantSpec(bits=4, signed=False, symmetric=False)).train()
    q(torch.tensor([-1.0, 2.0]))
    buffers = (q.observer.min_val, q.observer.max_val, q.scale, q.zero_point)
    versions = [b._version for b in buffers]
    q(torch.tensor([-0.5, 1.0]))  # inside the range: nothing changes
    assert [b._version for b in buffers] == versions
    q(torch.tensor([-0.5, 3.0]))  # the maximum grows: it and the qparams are written
    assert q.observer.max_val.item() == 3.0 and q.observer.min_val._version == versions[0]
    assert q.scale._version > versions[2]
    expected_scale = q.scale.item()
    with torch.no_grad():
        q.scale.fill_(123.0)
    q(torch.tensor([0.0, 1.0]))  # observing again recomputes the qparams over the edited buffer
    assert q.scale.item() == expected_scale


def test_host_scalars_match_only_the_same_number_of_the_same_tensor_version() -> None:
    host = fused.HostScalars()
    t = torch.tensor(0.0)
    host.put("v", t, 0.0)
    assert host.holds("v", t, 0.0)
    assert not host.holds("v", t, -0.0)  # the sign of zero is part of the value
    assert not host.holds("v", t, 0)  # an int is not the float
    assert not host.holds("v", torch.tensor(0.0), 0.0)  # another tensor
    t.add_(0.0)  # a new version
    assert not host.holds("v", t, 0.0)
    host.put("n", t, math.nan)
    assert not host.holds("n", t, math.nan)


@pytest.mark.parametrize("isa", ISAS)
@given(problem=problems(), grad_scale=st.sampled_from((1.0, 0.03)))
def test_fused_lsq_equals_the_torch_path(isa: str, problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantSpec],
                                         grad_scale: float) -> None:  # fmt: skip
    """LSQ on the fused path (values without a mask, then one backward pass over the saved input): the same
    values and input gradient as the torch path bit for bit, and its step gradient to float rounding (a sum in
    another order, accumulated in float64)."""
    from quant.sim.learned import lsq_fake_quantize

    x, s, z, spec = problem
    x = torch.nan_to_num(x, nan=0.0, posinf=1e30, neginf=-1e30)  # the step gradient of NaN is NaN on both paths
    w = torch.linspace(-2.0, 2.0, x.numel()).reshape(x.shape)
    runs = []
    for mode in ("off", isa):
        with fused.fused_path(mode):
            xr, sr = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
            out = lsq_fake_quantize(xr, sr, z, spec, grad_scale)
            (out * w).sum().backward()
            assert xr.grad is not None and sr.grad is not None
            runs.append((out.detach(), xr.grad, sr.grad))
    (ref, ref_gx, ref_gs), (got, got_gx, got_gs) = runs
    assert_equal(got, ref, "values")
    assert_equal(got_gx, ref_gx, "input gradient")
    scale_of_terms = (w.abs() * (x.abs() / s.abs().max() + 2.0 ** spec.bits)).sum() * grad_scale
    torch.testing.assert_close(got_gs, ref_gs, rtol=1e-5, atol=float(scale_of_terms) * 1e-6)


@given(a=st.floats(width=32, allow_nan=False, allow_infinity=False), b=st.floats(width=32, allow_nan=False, allow_infinity=False),
       bits=st.integers(2, 8), signed=st.booleans(), symmetric=st.booleans(), pow2=st.booleans())  # fmt: skip
def test_the_c_site_computes_the_qparams_of_the_python_path(a: float, b: float, bits: int, signed: bool, symmetric: bool,
                                                           pow2: bool) -> None:  # fmt: skip
    """fq_site's qparams (quant/csrc/site.c) are range_to_qparams_scalar's, bit for bit, over every float32 range
    whose scale is finite: observed by a site, the range of [a, b] gives the Python path's scale and zero point."""
    from quant.sim.qparams import range_to_qparams_scalar

    spec = QuantSpec(bits=bits, signed=signed, symmetric=symmetric, scale="pow2" if pow2 else "float")
    lo, hi = min(a, b), max(a, b)
    want = range_to_qparams_scalar(lo, hi, spec)
    if not math.isfinite(want[0]):
        return
    site = fused.HostSite.new(spec, observing=True, quantizing=True, moving_average=False, momentum=0.0, range_=None,
                              qparams=None, observer_name="MinMaxObserver")  # fmt: skip
    x = torch.tensor([lo, hi], dtype=torch.float32).reshape(2, 1)
    from quant import _fakequant

    out, mask = torch.empty_like(x), torch.empty_like(x, dtype=torch.uint8)
    _fakequant.site_call(site.state, x.data_ptr(), 2, out.data_ptr(), mask.data_ptr(), 0, 0)
    has_range, got_lo, got_hi, calibrated, scale, zero_point = site.values()
    assert has_range and calibrated and (got_lo, got_hi) == (lo, hi)
    assert (scale, zero_point) == want, f"{spec.describe()} [{lo}, {hi}]"


@pytest.mark.parametrize("isa", ISAS)
@given(values=st.lists(st.one_of(st.floats(-40.0, 40.0, width=32), st.sampled_from((math.nan, math.inf, -math.inf, 0.0))),
                       min_size=1, max_size=300),
       alpha=st.floats(2.0**-30, 30.0, width=32), bits=st.integers(2, 8), signed=st.booleans(),
       pow2=st.booleans(), rounding=st.sampled_from(MODES))  # fmt: skip
def test_fused_pact_equals_the_torch_path(isa: str, values: list[float], alpha: float, bits: int, signed: bool,
                                          pow2: bool, rounding: str) -> None:  # fmt: skip
    """PACT on the fused path: the torch path's values and input gradient bit for bit, the clip level's gradient
    to float rounding (a sum in another order, in float64)."""
    from quant.sim.learned import pact_fake_quantize

    spec = QuantSpec(bits=bits, signed=signed, symmetric=True, scale="pow2" if pow2 else "float", rounding=rounding)
    x = torch.tensor(values)
    g = torch.linspace(-1.0, 1.0, x.numel())
    runs = []
    for mode in ("off", isa):
        with fused.fused_path(mode):
            xr, ar = x.clone().requires_grad_(True), torch.tensor(alpha, requires_grad=True)
            out = pact_fake_quantize(xr, ar, spec)
            (out * g).sum().backward()
            assert xr.grad is not None and ar.grad is not None
            runs.append((out.detach(), xr.grad, ar.grad))
            with torch.no_grad():
                assert_equal(pact_fake_quantize(x, ar, spec), out.detach(), "inference values")
    (ref, ref_gx, ref_ga), (got, got_gx, got_ga) = runs
    assert_equal(got, ref, "values")
    assert_equal(got_gx, ref_gx, "input gradient")
    torch.testing.assert_close(got_ga, ref_ga, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@given(problem=problems())
def test_lsq_parts_are_the_torch_paths(isa: str, problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, QuantSpec]) -> None:
    """The fused recurrence's LSQ site (fused.lsq_parts): the values, inside mask and derivative by the step of
    quant.sim.learned.lsq_values, bit for bit, NaN and +-Inf included."""
    from quant.sim.learned import lsq_values

    x, s, z, spec = problem
    spec = spec.with_(granularity="tensor", axis=None, group_size=None)
    s0, z0 = s.reshape(-1)[0], z.reshape(-1)[0]
    want = lsq_values(x, s0, z0, spec, None, need_s=True)
    with fused.fused_path(isa):
        got = fused.lsq_parts(x, float(s0), int(z0), spec)
    assert_equal(got[0], want[0], "values")
    assert_equal(got[1].float(), want[1].float(), "mask")
    assert want[2] is not None
    assert_equal(got[2], want[2], "derivative by the step")


@given(case=observed_batches(), axis=st.sampled_from((0, 1, -1)), columns=st.integers(1, 5))
def test_per_channel_observing_keeps_the_torch_paths_statistics_and_qparams(
        case: tuple[list[torch.Tensor], str, float, QuantSpec], axis: int, columns: int) -> None:  # fmt: skip
    """Per-channel observers on the fused path (C extremes per channel, qparams of every range in C) hold and
    give what the torch path does, batch by batch, bit for bit."""
    batches, observer, momentum, spec = case
    shaped = [torch.cat([b] * columns).reshape(columns, -1).contiguous() for b in batches]
    _assert_both_paths_observe_alike(shaped, observer, momentum, spec.with_(granularity="channel", axis=axis))


@pytest.mark.parametrize("isa", ISAS)
def test_the_lstm_activations_are_within_3_ulp(isa: str) -> None:
    """fused.sigmoid / fused.tanh (the fused LSTM's, quant/csrc/lstm_step_loops.h) against the float64 functions
    rounded nowhere: at most 3 float32 ulps of the exact value wherever it is a normal float32 (below, sigmoid's
    error is under 1.2e-38 absolute), over a dense grid of [-90, 90] and magnitudes down to 1e-30; NaN in, NaN
    out; +-Inf to the limits (sigmoid's lower one within 1.2e-38)."""
    x = torch.cat([torch.linspace(-90.0, 90.0, 400_001), torch.logspace(-30, 1, 20_001), -torch.logspace(-30, 1, 20_001)])
    with fused.fused_path(isa):
        for name, ours, exact_fn in (("sigmoid", fused.sigmoid, torch.sigmoid), ("tanh", fused.tanh, torch.tanh)):
            got, exact = ours(x).double(), exact_fn(x.double())
            e32 = exact.float().abs()
            ulp = (torch.nextafter(e32, torch.tensor(math.inf)) - e32).double()
            normal = exact.abs() >= 1.1754944e-38
            worst = float(((got - exact).abs() / ulp)[normal].max())
            assert worst <= 3.0, f"{name}: {worst:.2f} ulp"
            tiny = (got - exact).abs()[~normal]
            assert tiny.numel() == 0 or float(tiny.max()) < 1.2e-38, name
            nan, pos, neg = ours(torch.tensor([math.nan, math.inf, -math.inf])).tolist()
            assert math.isnan(nan) and pos == 1.0
            assert (0.0 <= neg < 1.2e-38) if name == "sigmoid" else neg == -1.0
