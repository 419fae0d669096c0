"""Error metrics against NumPy formulas, and per-layer errors against prefix runs of a
Sequential model (float copy vs quantized), in both accumulation modes."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quant.sim.attach import QuantHandle, attach
from quant.sim.metrics import LayerError, collect_layer_errors, max_abs_error, mean_abs_error, sqnr_db
from quant.contract.spec import QuantSpec

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
U4 = QuantSpec(bits=4, signed=False)

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@given(arrays(np.float32, st.integers(1, 40), elements=finite), arrays(np.float32, 40, elements=finite))
def test_tensor_metrics_match_numpy(ref: np.ndarray, noise: np.ndarray) -> None:
    test = ref + noise[: ref.size]
    r, t = ref.astype(np.float64), test.astype(np.float64)
    err = r - t
    rt, tt = torch.from_numpy(ref), torch.from_numpy(test)
    assert max_abs_error(rt, tt) == float(np.max(np.abs(err)))
    assert math.isclose(mean_abs_error(rt, tt), float(np.mean(np.abs(err))), rel_tol=1e-12, abs_tol=1e-300)
    got = sqnr_db(rt, tt)
    signal, noise_power = float(np.sum(r * r)), float(np.sum(err * err))
    if noise_power == 0.0:
        assert got == math.inf
    elif signal == 0.0:
        assert got == -math.inf
    else:
        assert math.isclose(got, 10 * math.log10(signal / noise_power), rel_tol=1e-12, abs_tol=1e-9)


def test_edge_cases() -> None:
    z, one = torch.zeros(3), torch.ones(3)
    assert sqnr_db(one, one) == math.inf and sqnr_db(z, z) == math.inf
    assert sqnr_db(z, one) == -math.inf
    assert sqnr_db(torch.empty(0), torch.empty(0)) == math.inf
    assert max_abs_error(torch.empty(0), torch.empty(0)) == 0.0 == mean_abs_error(torch.empty(0), torch.empty(0))
    nan = torch.tensor([1.0, float("nan")])
    assert math.isnan(sqnr_db(one[:2], nan)) and math.isnan(max_abs_error(one[:2], nan))
    assert math.isnan(mean_abs_error(one[:2], nan))
    inf = torch.tensor([1.0, float("inf")])
    assert sqnr_db(one[:2], inf) == -math.inf and max_abs_error(one[:2], inf) == math.inf
    assert sqnr_db(torch.tensor([2.0]), torch.tensor([1.0])) == pytest.approx(10 * math.log10(4.0), rel=1e-15)
    # integer tensors are accepted and compared exactly in float64
    assert max_abs_error(torch.tensor([3, -4]), torch.tensor([0, 0])) == 4.0
    with pytest.raises(ValueError, match=r"reference shape \(3,\) != test shape \(1, 3\)"):
        sqnr_db(one, one[None])
    with pytest.raises(TypeError, match="test must be a tensor"):
        max_abs_error(one, [1.0, 1.0, 1.0])  # type: ignore[arg-type]


# ------------------------------------------------------------------ per layer


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=4),
        nn.ReLU6(),
        nn.Flatten(),
        nn.Linear(64, 5),
    )
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
    return model.eval()


RECIPE = {"*": {"weight": W4, "input": A4}, nn.ReLU: {"output": U4}}
LAYERS = ["0", "2", "3", "6"]


def batch(seed: int, n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def setup() -> tuple[nn.Sequential, nn.Sequential, QuantHandle]:
    model = make_model()
    reference = copy.deepcopy(model)
    handle = attach(model, RECIPE)
    with torch.no_grad(), handle.calibrate():
        model(batch(100, 32))
    return model, reference, handle


def expected_sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    r, t = ref.double().numpy(), test.double().numpy()
    return 10 * math.log10(float(np.sum(r * r)) / float(np.sum((r - t) ** 2)))


def test_accumulated_errors_match_prefix_runs() -> None:
    model, reference, handle = setup()
    x = batch(1)
    errors = collect_layer_errors(model, handle, x)
    assert list(errors) == LAYERS
    with torch.no_grad():
        for name in LAYERS:
            i = int(name)
            ref, out = reference[: i + 1](x), model[: i + 1](x)
            e = errors[name]
            assert isinstance(e, LayerError) and e.calls == 1
            assert math.isclose(e.sqnr_db, expected_sqnr(ref, out), rel_tol=1e-9)
            assert e.max_abs_error == float((ref.double() - out.double()).abs().max())
            assert math.isclose(e.mean_abs_error, float((ref.double() - out.double()).abs().mean()), rel_tol=1e-9)
    # errors grow along the network; the last layer's error is the whole model's
    assert errors["6"].sqnr_db < errors["0"].sqnr_db


def test_isolated_errors_use_the_quantized_input() -> None:
    model, reference, handle = setup()
    x = batch(2)
    errors = collect_layer_errors(model, handle, x, isolate=True)
    assert list(errors) == LAYERS
    with torch.no_grad():
        for name in LAYERS:
            i = int(name)
            layer_input = model[:i](x)  # what the quantized model feeds the layer
            ref, out = reference[i](layer_input), model[i](layer_input)
            assert math.isclose(errors[name].sqnr_db, expected_sqnr(ref, out), rel_tol=1e-9), name
    accumulated = collect_layer_errors(model, handle, x)
    assert errors["6"].sqnr_db > accumulated["6"].sqnr_db


def test_batches_pool_like_one_batch() -> None:
    model, _, handle = setup()
    x1, x2 = batch(3), batch(4)
    pooled = collect_layer_errors(model, handle, [x1, (x2,)])
    whole = collect_layer_errors(model, handle, torch.cat([x1, x2]))
    for name in LAYERS:
        assert pooled[name].calls == 2 and whole[name].calls == 1
        assert math.isclose(pooled[name].sqnr_db, whole[name].sqnr_db, rel_tol=1e-6)
        assert pooled[name].max_abs_error == whole[name].max_abs_error
        assert math.isclose(pooled[name].mean_abs_error, whole[name].mean_abs_error, rel_tol=1e-6)


def hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("isolate", [False, True])
def test_collection_changes_nothing(isolate: bool) -> None:
    model = make_model()
    handle = attach(model, RECIPE)
    with torch.no_grad():
        model(batch(5))  # QAT-style: observing and quantizing, qparams from this batch
    qs = [q for _, _, q in handle.quantizers()]
    assert all(q.observing and q.calibrated for q in qs)
    states = [{k: v.clone() for k, v in q.state_dict().items() if isinstance(v, torch.Tensor)} for q in qs]
    hooks = hook_counts(model)
    collect_layer_errors(model, handle, batch(6) * 10, isolate=isolate)  # far outside the observed range
    assert all(q.observing and q.enabled for q in qs)
    for q, state in zip(qs, states):
        assert all(torch.equal(q.state_dict()[k], v) for k, v in state.items())
    assert hook_counts(model) == hooks
    handle.disable()
    with pytest.raises(RuntimeError):
        collect_layer_errors(model, handle, torch.randn(2, 5), isolate=isolate)  # the forward fails
    assert hook_counts(model) == hooks and not any(q.enabled for q in qs)
    assert all(q.observing for q in qs)


def test_errors() -> None:
    model = make_model()
    handle = attach(model, RECIPE)
    with pytest.raises(ValueError, match=r"quantizers without parameters \('0' weight, '0' input, '2' output"):
        collect_layer_errors(model, handle, batch(0))
    with torch.no_grad(), handle.calibrate():
        model(batch(0))
    with pytest.raises(ValueError, match="not attached to this model"):
        collect_layer_errors(make_model(), handle, batch(0))
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        collect_layer_errors(model, handle, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="each batch must be a tensor"):
        collect_layer_errors(model, handle, [3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="inputs is empty"):
        collect_layer_errors(model, handle, [])
    handle.remove()
    with pytest.raises(RuntimeError, match="removed"):
        collect_layer_errors(model, handle, batch(0))


@pytest.mark.parametrize("isolate", [False, True])
def test_quantizers_the_user_disabled_stay_disabled(isolate: bool) -> None:
    """A layer whose quantizers the user turned off measures (and stays) float: collect_layer_errors used to
    re-enable every quantizer for its quantized pass."""
    model, reference, handle = setup()
    for name, _, q in handle.quantizers():
        if name == LAYERS[0]:
            q.enabled = False
    x = batch(1)
    errors = collect_layer_errors(model, handle, x, isolate=isolate)
    assert errors[LAYERS[0]].max_abs_error == 0.0
    assert [q.enabled for n, _, q in handle.quantizers() if n == LAYERS[0]] == [False, False]
    assert all(q.enabled for n, _, q in handle.quantizers() if n != LAYERS[0])
