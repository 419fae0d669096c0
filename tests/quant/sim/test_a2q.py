"""learn="a2q": accumulator-aware weight codes whose every channel's L1 norm is within the target's limit.

The defining property (Colbert et al. 2023) is checked exactly: for random weights, steps and norms, and for
every channel after QAT, ``||q||_1 <= T``; a model trained with A2Q lowers to a 10-bit saturating variant of
``w4a4_acc16_sat`` whose overflow check (``overflow="error"``) never fires on the test set, while the same
model trained without A2Q overflows there.
"""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

import quant
from experiments.accumulator_study import BiasFreeMLP, datapath_for, qat, saturating_samples
from experiments.data.dataset import Dataset
from experiments.data.digits import load_digits
from experiments.training import accuracy, train
from quant.contract.accumulator import AccumulatorTarget
from quant.contract.spec import QuantSpec
from quant.sim.a2q import a2q_codes, a2q_l1
from quant.sim.accumulator import accumulator_bound
from quant.sim.fast import original_parameter
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig, Recipe, Rule

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
TARGET = AccumulatorTarget(acc_bits=12, input_bits=4, input_signed=False)


def a2q_config(target: AccumulatorTarget = TARGET, spec: QuantSpec = W4) -> QuantizerConfig:
    return QuantizerConfig(spec, learn="a2q", accumulator=target)


def _l1_per_channel(codes: torch.Tensor, axis: int = 0) -> torch.Tensor:
    return codes.abs().movedim(axis, 0).reshape(codes.shape[axis], -1).sum(1)


# --------------------------------------------------------------------------- the bound, exactly
@settings(max_examples=80)
@given(channels=st.integers(1, 4), k=st.integers(1, 40), bits=st.integers(2, 8), limit=st.integers(1, 3000),
       seed=st.integers(0, 2**31 - 1), norm_scale=st.floats(1e-3, 1e3), step=st.floats(1e-4, 10.0))
@example(channels=1, k=1, bits=8, limit=5, seed=0, norm_scale=1e3, step=1.0)      # one weight: the code is T
@example(channels=2, k=7, bits=4, limit=7, seed=1, norm_scale=1e3, step=1e-3)     # K = T equal-ish weights
@example(channels=3, k=40, bits=8, limit=2184, seed=2, norm_scale=1e3, step=1e-4)
def test_the_codes_l1_norm_never_exceeds_the_limit(channels: int, k: int, bits: int, limit: int, seed: int,
                                                   norm_scale: float, step: float) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    spec = QuantSpec(bits=bits, granularity="channel", axis=0)
    v = torch.randn(channels, k, generator=g) * torch.rand(channels, 1, generator=g)
    if k == 1 or seed % 3 == 0:  # equal magnitudes: u lands on integers, where rounding errors would show
        v = torch.sign(v) * 0.37
    norm = a2q_l1(v, spec) * norm_scale
    scale = torch.full((channels,), step)
    codes = a2q_codes(v, scale, norm, spec, limit)
    assert bool((codes == torch.trunc(codes)).all()) and codes.min() >= spec.qmin and codes.max() <= spec.qmax
    assert int(_l1_per_channel(codes).max()) <= limit
    if k == 1 and limit <= spec.qmax and norm_scale * 0.37 >= 1.01 * step * limit:  # capped: the bound is reached
        assert int(_l1_per_channel(codes).max()) == limit


def test_without_the_cap_the_codes_round_the_normalized_weight_toward_zero() -> None:
    v = torch.tensor([[0.31, -0.29, 0.05], [0.0, 0.0, 0.0]])
    codes = a2q_codes(v, torch.tensor([0.1, 0.1]), a2q_l1(v, W4), W4, limit=100)
    assert codes.tolist() == [[3.0, -2.0, 0.0], [0.0, 0.0, 0.0]]  # 3.1, -2.9, 0.5 toward zero; a zero channel


def test_a_transposed_convolutions_channels_are_axis_1() -> None:
    spec = QuantSpec(bits=4, granularity="channel", axis=1)
    v = torch.randn(6, 3, 2, 2)
    codes = a2q_codes(v, torch.full((3,), 1e-3), a2q_l1(v, spec), spec, limit=9)
    assert int(_l1_per_channel(codes, axis=1).max()) <= 9


# --------------------------------------------------------------------------- the quantizer
def parametrize_original(module: nn.Module) -> torch.Tensor:
    """The float weight Parameter under the quantizer's parametrization."""
    original = getattr(getattr(module, "parametrizations").weight, "original")
    assert isinstance(original, torch.Tensor)
    return original


def _quantized(target: AccumulatorTarget = TARGET) -> tuple[nn.Sequential, nn.Sequential, quant.QuantHandle]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8, bias=False), nn.ReLU(), nn.Linear(8, 4))
    reference = copy.deepcopy(model)
    handle = quant.attach(model, {"*": {"weight": a2q_config(target), "input": A4}})
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(64, 32))
    return model, reference, handle


def test_the_forward_is_the_codes_times_the_step_and_gradients_reach_every_parameter() -> None:
    model, _, handle = _quantized(AccumulatorTarget(acc_bits=16, input_bits=4, input_signed=False))
    q = handle.quantizer("2", "weight")  # 8 inputs: the cap does not bind, so the norm learns
    last = handle.modules["2"]
    w = original_parameter(last)
    s, z = q.effective_qparams()
    assert torch.equal(getattr(last, "weight"), q.codes(w).to(torch.float32) * s[:, None]) and not bool(z.any())
    model(torch.randn(16, 32)).square().sum().backward()
    original = parametrize_original(last)
    for name, p in (("weight", original), ("scale", q.scale), ("norm", q.norm)):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_a_capped_channel_passes_no_gradient_to_its_norm() -> None:
    model, _, handle = _quantized(AccumulatorTarget(acc_bits=8, input_bits=4, input_signed=False))  # T = 8
    q = handle.quantizer("0", "weight")
    model(torch.randn(16, 32)).sum().backward()
    assert q.norm.grad is not None and not bool(q.norm.grad.any())
    assert int(_l1_per_channel(q.codes(original_parameter(model[0]))).max()) <= 8


def test_state_dict_round_trip_and_remove_restore_the_float_model_bit_for_bit() -> None:
    model, reference, handle = _quantized()
    opt = torch.optim.SGD([p for _, _, q in handle.quantizers() for p in q.parameters()], lr=0.1)
    model(torch.randn(16, 32)).sum().backward()
    opt.step()  # the learned step and norm move; the float weights are the model's own
    x = torch.randn(5, 32)
    state = model.state_dict()
    assert {"0.parametrizations.weight.0.scale", "0.parametrizations.weight.0.norm"} <= set(state)
    fresh = copy.deepcopy(reference)
    fresh_handle = quant.attach(fresh, {"*": {"weight": a2q_config(), "input": A4}})
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), model(x))
    for name in ("0", "2"):
        a, b = handle.quantizer(name, "weight"), fresh_handle.quantizer(name, "weight")
        assert torch.equal(a.codes(original_parameter(model[int(name)])), b.codes(original_parameter(fresh[int(name)])))
    other = copy.deepcopy(reference)
    quant.attach(other, {"*": {"weight": a2q_config(AccumulatorTarget(14, 4, False)), "input": A4}})
    with pytest.raises(ValueError, match="saved from a quantizer configured as .*acc12"):
        other.load_state_dict(state)
    handle.remove()
    for (n, p), (_, r) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, r), n
    assert type(model[0]) is nn.Linear


def test_freeze_and_reset() -> None:
    _, _, handle = _quantized()
    q = handle.quantizer("0", "weight")
    q.freeze()
    assert not q.scale.requires_grad and not q.norm.requires_grad
    q.reset()
    assert q.scale.requires_grad and q.norm.requires_grad and q.norm.numel() == 0 and not q.calibrated


# --------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("build,message", [
    (lambda: QuantizerConfig(W4, learn="a2q"), r"learn='a2q' needs accumulator=AccumulatorTarget\(acc_bits="),
    (lambda: QuantizerConfig(W4, learn="lsq", accumulator=TARGET), r"accumulator is only for learn='a2q', not learn='lsq'"),
    (lambda: QuantizerConfig(W4, learn="a2q", accumulator=12), r"QuantizerConfig\.accumulator=12 must be an AccumulatorTarget"),  # type: ignore[arg-type]
    (lambda: a2q_config(spec=QuantSpec(bits=4, signed=False, granularity="channel", axis=0)), r"QuantSpec\.signed=False"),
    (lambda: a2q_config(spec=QuantSpec(bits=4, symmetric=False, granularity="channel", axis=0)), r"QuantSpec\.symmetric=False"),
    (lambda: a2q_config(spec=QuantSpec(bits=4)), r"QuantSpec\.granularity='tensor'.*use granularity='channel'"),
    (lambda: a2q_config(spec=QuantSpec(bits=1, granularity="channel", axis=0)), r"QuantSpec\.bits=1; A2Q needs at least 2 bits"),
    (lambda: a2q_config(spec=W4.with_(rounding="stochastic")), r"QuantSpec\.rounding='stochastic'; A2Q rounds toward zero"),
    (lambda: Rule("*", input=a2q_config()), r"Rule\.input\.learn='a2q' for '\*': A2Q bounds weight codes"),
    (lambda: Quantizer(W4, learn="a2q"), r"Quantizer: learn='a2q' needs accumulator="),
    (lambda: Quantizer(W4, accumulator=TARGET), r"Quantizer: accumulator is only for learn='a2q', not learn='none'"),
    (lambda: AccumulatorTarget(acc_bits=33, input_bits=4, input_signed=False), r"AccumulatorTarget\.acc_bits=33 must be an integer in 8\.\.32"),
])  # fmt: skip
def test_bad_configs_name_the_argument_and_what_is_allowed(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_the_config_describes_its_target_and_a_recipe_takes_it() -> None:
    recipe = Recipe.from_dict({"*": {"weight": a2q_config(), "input": A4}})
    assert recipe.rules[0].weight is not None and recipe.rules[0].weight.accumulator == TARGET
    assert "learn=a2q(acc12 for uint4 inputs with a zero point (||q||_1 <= 136))" in a2q_config().describe()


# --------------------------------------------------------------------------- QAT and the datapath
ACC_BITS = 10  # T = 34: the plain model's first layer (64 pixels) overflows here on real digits


@functools.lru_cache(maxsize=1)
def trained() -> tuple[Dataset, dict[str, tuple[nn.Module, quant.QuantHandle]]]:
    """A bias-free 64-32-32-10 MLP on the digits, float-trained, then QAT-trained for 2 epochs plain and with A2Q."""
    data = load_digits()
    torch.manual_seed(0)
    float_model = BiasFreeMLP(64, 10, 32)
    train(float_model, data.x_train, data.y_train, epochs=8, progress=False)
    dp = datapath_for(ACC_BITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {m: qat(float_model, data, dp, m, epochs=2, lr=1e-3, seed=0) for m in ("plain", "a2q")}
    return data, models


def test_after_qat_every_a2q_channel_is_within_the_limit_and_the_bound_fits() -> None:
    data, models = trained()
    model, handle = models["a2q"]
    dp = datapath_for(ACC_BITS)
    limit = AccumulatorTarget.of(dp).l1_limit
    for name, role, q in handle.quantizers():
        if role == "weight":
            codes = q.codes(original_parameter(handle.modules[name]))
            assert int(_l1_per_channel(codes).max()) <= limit, name
    report = accumulator_bound(handle, dp)
    assert len(report.layers) == 3 and report.fits, report.table()
    assert all(int(layer.l1.max()) <= limit for layer in report.layers)
    assert accuracy(model, data.x_test, data.y_test) > 0.5
    plain = accumulator_bound(models["plain"][1], dp)
    assert "fc1" in plain.overflowing


def test_the_a2q_model_never_overflows_the_datapath_and_the_plain_model_does() -> None:
    data, models = trained()
    strict = datapath_for(ACC_BITS).with_(overflow="error")
    a2q_program = quant.lower(*models["a2q"], data.x_test[:1], datapath=strict)
    a2q_program.run(data.x_test)  # every test sample: the exact overflow check never fires
    assert saturating_samples(a2q_program, data.x_test) == 0
    plain_program = quant.lower(*models["plain"], data.x_test[:1], datapath=strict)
    with pytest.raises(OverflowError, match="the 10-bit accumulator overflows"):
        plain_program.run(data.x_test)
