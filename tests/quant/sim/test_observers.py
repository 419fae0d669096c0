"""Observers: statistics per granularity, accumulation over batches, the MSE search,
state_dict round trips; torch.ao's observers and NumPy's percentile as peers."""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from quant.sim.functional import fake_quantize
from quant.sim.observers import (
    OBSERVERS,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    make_observer,
    reduce_to_qparams_shape,
)
from quant.sim.qparams import qparams_from_range
from quant.contract.spec import QuantSpec
from tests.quant.sim.fake_quant_paths import fake_quant_path  # noqa: F401 (autouse: both paths)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.ao.quantization import (
        MinMaxObserver as AoMinMax,
        MovingAverageMinMaxObserver as AoMovingAverage,
        MovingAveragePerChannelMinMaxObserver as AoMovingAveragePerChannel,
    )

SPECS = [
    QuantSpec(bits=4, symmetric=False),
    QuantSpec(bits=3, granularity="channel", axis=1),
    QuantSpec(bits=4, signed=False, symmetric=False, granularity="channel", axis=-1),
    QuantSpec(bits=2, granularity="group", axis=1, group_size=3),
    QuantSpec(bits=8, symmetric=False, granularity="group", axis=0, group_size=2),
]
SPEC_IDS = [s.describe() for s in SPECS]


def slices(x: np.ndarray, spec: QuantSpec) -> dict[tuple[int, ...], np.ndarray]:
    """The elements sharing each quantization parameter, by its index (NumPy loops)."""
    out: dict[tuple[int, ...], list[float]] = {}
    for idx in np.ndindex(*x.shape):
        if spec.granularity == "tensor":
            key: tuple[int, ...] = ()
        elif spec.granularity == "channel":
            assert spec.axis is not None
            key = (idx[spec.axis % x.ndim],)
        else:
            assert spec.axis is not None and spec.group_size is not None
            a = spec.axis % x.ndim
            key = idx[:a] + (idx[a] // spec.group_size,) + idx[a + 1 :]
        out.setdefault(key, []).append(float(x[idx]))
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def batch(seed: int, shape: tuple[int, ...] = (4, 6, 5), scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


# --------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_reduce_to_qparams_shape_matches_per_slice_loops(spec: QuantSpec) -> None:
    x = batch(0)
    ref = slices(x.numpy(), spec)
    for op, fn in (("amin", np.min), ("amax", np.max), ("sum", np.sum), ("mean", np.mean)):
        got = reduce_to_qparams_shape(x.double(), spec, op)
        for key, vals in ref.items():
            assert math.isclose(float(got[key]), float(fn(vals)), rel_tol=1e-12, abs_tol=1e-12), (op, key)
    with pytest.raises(ValueError, match="op="):
        reduce_to_qparams_shape(x, spec, "median")


def test_channel_reduction_of_a_vector_keeps_every_element() -> None:
    x = torch.tensor([3.0, -1.0, 2.0])
    assert reduce_to_qparams_shape(x, QuantSpec(granularity="channel", axis=0), "amax").tolist() == [3.0, -1.0, 2.0]


# --------------------------------------------------------------------------- min-max
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_minmax_running_extremes(spec: QuantSpec) -> None:
    obs = MinMaxObserver(spec)
    xs = [batch(i, scale=1.0 + i) for i in range(3)]
    for x in xs:
        obs.update(x)
    # per-slice reference over all batches
    all_slices: dict[tuple[int, ...], list[np.ndarray]] = {}
    for x in xs:
        for key, vals in slices(x.numpy(), spec).items():
            all_slices.setdefault(key, []).append(vals)
    for key, parts in all_slices.items():
        vals = np.concatenate(parts)
        assert float(obs.min_val[key]) == float(vals.min()) and float(obs.max_val[key]) == float(vals.max()), key
    s, z = obs.qparams()
    want_s, want_z = qparams_from_range(obs.min_val, obs.max_val, spec)
    assert torch.equal(s, want_s) and torch.equal(z, want_z)


@given(st.lists(st.lists(st.floats(-1e3, 1e3, width=32), min_size=6, max_size=6), min_size=1, max_size=4),
       st.sampled_from(["tensor", "channel"]))
@example(batches=[[0.0, 0.0, 0.0, 0.0, 0.0, 9.80908925027372e-45]], granularity="tensor")  # range > 0, scale underflows
def test_minmax_bit_exact_with_torch_ao(batches: list[list[float]], granularity: str) -> None:
    spec = QuantSpec(bits=4, signed=False, symmetric=False, granularity=granularity,
                     axis=0 if granularity == "channel" else None)
    obs = MinMaxObserver(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if granularity == "tensor":
            ao: Any = AoMinMax(dtype=torch.quint8, quant_min=0, quant_max=15)
        else:
            from torch.ao.quantization import PerChannelMinMaxObserver

            ao = PerChannelMinMaxObserver(dtype=torch.quint8, qscheme=torch.per_channel_affine, quant_min=0, quant_max=15)
    for b in batches:
        x = torch.tensor(b).reshape(2, 3)
        obs.update(x)
        ao(x)
    assert obs.min_val.reshape(-1).tolist() == ao.min_val.reshape(-1).tolist()
    assert obs.max_val.reshape(-1).tolist() == ao.max_val.reshape(-1).tolist()
    if bool(((obs.max_val.clamp(min=0) - obs.min_val.clamp(max=0)) > 0).all()):  # torch.ao: eps for empty ranges
        s, z = obs.qparams()
        ao_s, ao_z = ao.calculate_qparams()
        assert s.reshape(-1).tolist() == ao_s.tolist() and z.reshape(-1).tolist() == ao_z.tolist()


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_moving_average_bit_exact_with_torch_ao(granularity: str) -> None:
    spec = QuantSpec(bits=8, signed=False, symmetric=False, granularity=granularity,
                     axis=0 if granularity == "channel" else None)
    obs = MovingAverageMinMaxObserver(spec, momentum=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao: Any = (AoMovingAverage if granularity == "tensor" else AoMovingAveragePerChannel)(averaging_constant=0.05)
    for i in range(6):
        x = batch(i, (3, 40), scale=1.0 + 0.5 * i)
        obs.update(x)
        ao(x)
    assert obs.min_val.reshape(-1).tolist() == ao.min_val.reshape(-1).tolist()
    assert obs.max_val.reshape(-1).tolist() == ao.max_val.reshape(-1).tolist()
    s, z = obs.qparams()
    ao_s, ao_z = ao.calculate_qparams()
    assert s.reshape(-1).tolist() == ao_s.reshape(-1).tolist() and z.reshape(-1).tolist() == ao_z.reshape(-1).tolist()


def test_moving_average_default_momentum_is_torch_ao_s() -> None:
    assert MovingAverageMinMaxObserver(QuantSpec()).momentum == 0.01


# --------------------------------------------------------------------------- percentile
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("p", [99.99, 90.0, 50.0, 100.0, 97.3])
def test_percentile_matches_numpy(spec: QuantSpec, p: float) -> None:
    x = batch(1, (4, 6, 30))
    obs = PercentileObserver(spec, percentile=p)
    obs.update(x)
    for key, vals in slices(x.numpy(), spec).items():
        lo = float(np.percentile(vals, 100.0 - p))
        hi = float(np.percentile(vals, p))
        assert math.isclose(float(obs.min_val[key]), lo, rel_tol=1e-6, abs_tol=1e-6), (key, lo)
        assert math.isclose(float(obs.max_val[key]), hi, rel_tol=1e-6, abs_tol=1e-6), (key, hi)


def test_percentile_averages_batches() -> None:
    spec = QuantSpec(bits=4, granularity="channel", axis=0)
    xs = [batch(i, (3, 200), scale=1.0 + i) for i in range(3)]
    obs = PercentileObserver(spec, percentile=99.0)
    for x in xs:
        obs.update(x)
    want_hi = np.mean([np.percentile(x.numpy().astype(np.float64), 99.0, axis=1) for x in xs], axis=0)
    want_lo = np.mean([np.percentile(x.numpy().astype(np.float64), 1.0, axis=1) for x in xs], axis=0)
    np.testing.assert_allclose(obs.max_val.numpy(), want_hi, rtol=1e-5)
    np.testing.assert_allclose(obs.min_val.numpy(), want_lo, rtol=1e-5)
    assert int(obs.count) == 3


def test_percentile_subsampling_is_deterministic_and_close() -> None:
    spec = QuantSpec(bits=8, granularity="channel", axis=0)
    x = batch(5, (2, 50_000))
    a, b = PercentileObserver(spec, percentile=99.0, max_samples=4096), PercentileObserver(spec, 99.0, 4096)
    a.update(x)
    b.update(x)
    assert torch.equal(a.max_val, b.max_val) and torch.equal(a.min_val, b.min_val)
    full = np.percentile(x.numpy(), 99.0, axis=1)
    np.testing.assert_allclose(a.max_val.numpy(), full, rtol=0.1)  # 4096 samples: a few % error
    c = PercentileObserver(spec, percentile=99.0, max_samples=4096, seed=1)
    c.update(x)
    assert not torch.equal(a.max_val, c.max_val)


# --------------------------------------------------------------------------- MSE
def brute_force_mse_range(x: torch.Tensor, spec: QuantSpec, ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slice, Python loops over slices and candidates: the ratio of the min-max range
    with the smallest squared fake-quantization error (first = largest ratio on ties)."""
    per_tensor = spec.with_(granularity="tensor", axis=None, group_size=None)
    lo = reduce_to_qparams_shape(x, spec, "amin")
    hi = reduce_to_qparams_shape(x, spec, "amax")
    best_lo, best_hi = lo.clone(), hi.clone()
    for key, vals in slices(x.numpy(), spec).items():
        v = torch.tensor(vals, dtype=torch.float32)
        best = None
        for r in ratios:
            s, z = qparams_from_range(lo[key] * r, hi[key] * r, per_tensor)
            err = float(((fake_quantize(v, s, z, per_tensor) - v) ** 2).sum())
            if best is None or err < best[0]:
                best = (err, r)
        assert best is not None
        best_lo[key], best_hi[key] = lo[key] * best[1], hi[key] * best[1]
    return best_lo, best_hi


@pytest.mark.parametrize("spec", SPECS + [QuantSpec.ternary(granularity="channel", axis=0), QuantSpec.binary()],
                         ids=SPEC_IDS + ["ternary", "binary"])
def test_mse_search_matches_a_per_slice_brute_force(spec: QuantSpec) -> None:
    x = batch(2, (4, 6, 5))
    x[0, 0, 0] = 9.0  # an outlier worth clipping
    obs = MSEObserver(spec, num_candidates=25)
    obs.update(x)
    want_lo, want_hi = brute_force_mse_range(x, spec, obs.ratios())
    assert torch.equal(obs.min_val, want_lo) and torch.equal(obs.max_val, want_hi)


def test_mse_never_worse_than_minmax_and_clips_outliers() -> None:
    spec = QuantSpec(bits=3, granularity="channel", axis=0)
    x = batch(3, (8, 500))
    x[:, 0] = 20.0
    mse, mm = MSEObserver(spec), MinMaxObserver(spec)
    mse.update(x)
    mm.update(x)

    def err(obs: Observer) -> torch.Tensor:
        s, z = obs.qparams()
        return ((fake_quantize(x, s, z, spec) - x) ** 2).sum(dim=1)

    assert bool((err(mse) <= err(mm)).all())
    assert bool((mse.max_val < mm.max_val).all())
    ratios = MSEObserver(spec).ratios()
    assert len(ratios) == 100 and ratios[0] == 1.0 and math.isclose(ratios[-1], 0.3)


def test_mse_stochastic_rounding_is_deterministic() -> None:
    spec = QuantSpec(bits=4, rounding="stochastic")
    x = batch(4, (200,))
    a, b = MSEObserver(spec, num_candidates=10), MSEObserver(spec, num_candidates=10)
    a.update(x)
    b.update(x)
    assert torch.equal(a.max_val, b.max_val)


# --------------------------------------------------------------------------- common behaviour
@pytest.mark.parametrize("name", list(OBSERVERS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_raises_naming_the_observer(name: str, bad: float) -> None:
    obs = make_observer(name, QuantSpec(granularity="channel", axis=0))
    x = torch.zeros(3, 4)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=f"{type(obs).__name__}: the observed tensor contains NaN or Inf"):
        obs.update(x)
    assert not obs.has_data


@pytest.mark.parametrize("name", list(OBSERVERS))
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_state_dict_round_trip_into_a_fresh_observer(name: str, spec: QuantSpec) -> None:
    obs = make_observer(name, spec)
    obs.update(batch(0))
    obs.update(batch(1, scale=2.0))
    buf = io.BytesIO()
    torch.save(obs.state_dict(), buf)
    buf.seek(0)
    fresh = make_observer(name, spec)
    assert not fresh.has_data
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.has_data
    for a, b in zip(obs.qparams(), fresh.qparams()):
        assert torch.equal(a, b)
    obs.update(batch(2))
    fresh.update(batch(2))
    assert torch.equal(obs.min_val, fresh.min_val) and torch.equal(obs.max_val, fresh.max_val)


@pytest.mark.parametrize("name", list(OBSERVERS))
def test_reset_shapes_empty_tensors_and_no_grad(name: str) -> None:
    spec = QuantSpec(granularity="channel", axis=0)
    obs = make_observer(name, spec)
    with pytest.raises(RuntimeError, match="observed no data"):
        obs.qparams()
    obs.update(torch.zeros(0, 3))
    assert not obs.has_data
    x = batch(0, (3, 8)).requires_grad_(True)
    obs.update(x)
    assert obs.has_data and obs.min_val.shape == (3,) and not obs.min_val.requires_grad
    with pytest.raises(ValueError, match=r"statistics of shape \(4,\)"):
        obs.update(batch(1, (4, 8)))
    with pytest.raises(ValueError, match="axis=0 is out of range for a tensor with 0 dimensions"):
        obs.update(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating tensor"):
        obs.update(torch.zeros(3, 8, dtype=torch.int32))
    obs.reset()
    assert not obs.has_data
    obs.update(batch(1, (4, 8)))
    assert obs.min_val.shape == (4,)


def test_group_size_must_divide() -> None:
    obs = MinMaxObserver(QuantSpec(granularity="group", axis=1, group_size=4))
    with pytest.raises(ValueError, match="group_size=4 does not divide"):
        obs.update(torch.zeros(2, 6))


def test_float64_and_half_inputs_give_float32_statistics() -> None:
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        obs = MinMaxObserver(QuantSpec())
        obs.update(torch.tensor([-1.5, 2.0], dtype=dtype))
        assert obs.min_val.dtype == torch.float32 and obs.min_val.item() == -1.5


def test_registry() -> None:
    assert set(OBSERVERS) == {"minmax", "moving_average", "percentile", "mse"}
    assert isinstance(make_observer("percentile", QuantSpec(), percentile=99.0), PercentileObserver)
    with pytest.raises(ValueError, match="allowed: 'minmax', 'moving_average', 'percentile', 'mse'"):
        make_observer("kl", QuantSpec())
    with pytest.raises(TypeError):
        make_observer("minmax", QuantSpec(), momentum=0.1)
    with pytest.raises(TypeError, match="QuantSpec"):
        MinMaxObserver("int8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("moving_average", {"momentum": 0.0}, "momentum"),
        ("moving_average", {"momentum": 1.5}, "momentum"),
        ("percentile", {"percentile": 40.0}, "percentile"),
        ("percentile", {"percentile": 100.5}, "percentile"),
        ("percentile", {"max_samples": 1}, "max_samples"),
        ("percentile", {"seed": 1.5}, "seed"),
        ("mse", {"num_candidates": 0}, "num_candidates"),
        ("mse", {"min_ratio": 0.0}, "min_ratio"),
        ("mse", {"min_ratio": 1.2}, "min_ratio"),
    ],
)
def test_bad_observer_arguments(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_observer(name, QuantSpec(), **kwargs)

