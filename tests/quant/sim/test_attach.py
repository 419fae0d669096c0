"""attach/remove: exact restoration, outputs equal to an independent fake-quant model,
mixed precision, early errors, gradients through the hooks and the handle's states."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from quant.sim.attach import QuantHandle, attach
from quant.sim.fast import INPUT_QUANTIZER, OUTPUT_QUANTIZER
from quant.sim.modes import MODES, register_mode
from quant.sim.learned import lsq_fake_quantize, lsq_grad_scale
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig, Recipe
from quant.contract.spec import QuantSpec

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
W8 = QuantSpec(bits=8, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=False, symmetric=False)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
U4 = QuantSpec(bits=4, signed=False)
S6 = QuantSpec(bits=6, symmetric=False)


class SmallCNN(nn.Module):
    """Conv2d, BN, ReLU6, depthwise Conv2d, Hardswish, Conv1d, F.relu, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.hs = nn.Hardswish()
        self.conv1d = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = self.hs(self.dw(x))
        x = self.conv1d(x.flatten(2)).mean(-1)
        out: torch.Tensor = self.fc(F.relu(x))
        return out


RECIPE: dict[Any, dict[str, QuantSpec]] = {
    "*": {"weight": W4, "input": A8},
    nn.ReLU6: {"output": U4},
    "hs": {"input": A8, "output": S6},
}


def make_model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
        model.bn.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    return model.eval()


def inputs(seed: int = 1, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def calibrated(model: nn.Module, recipe: Any = RECIPE) -> QuantHandle:
    handle = attach(model, recipe)
    with torch.no_grad(), handle.calibrate():
        for seed in range(3):
            model(inputs(seed))
    return handle


def plist(module: nn.Module) -> nn.ModuleList:
    """``module.parametrizations.weight`` (typed)."""
    out = getattr(module, "parametrizations")["weight"]
    assert isinstance(out, nn.ModuleList)
    return out


def original(module: nn.Module) -> torch.Tensor:
    """The float weight under a parametrization."""
    out = getattr(plist(module), "original")
    assert isinstance(out, torch.Tensor)
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k


def hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


# ------------------------------------------------------------------ restoration


def test_attach_remove_restores_bit_for_bit() -> None:
    model = make_model()
    x = inputs(7)
    with torch.no_grad():
        y_float = model(x)
    state = snapshot(model)
    params = list(model.parameters())
    classes = [type(m) for m in model.modules()]
    hooks = hook_counts(model)

    handle = calibrated(model)
    with torch.no_grad():
        y_quant = model(x)
    assert not torch.equal(y_quant, y_float)
    keys = list(model.state_dict())
    assert "conv.parametrizations.weight.original" in keys and "fc.input_quantizer.scale" in keys
    assert "act.output_quantizer.zero_point" in keys

    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(x), y_float)
    assert_state_equal(state, model)
    assert all(a is b for a, b in zip(model.parameters(), params)) and len(list(model.parameters())) == len(params)
    assert [type(m) for m in model.modules()] == classes
    assert hook_counts(model) == hooks
    assert not any(isinstance(m, Quantizer) for m in model.modules())
    handle.remove()  # idempotent
    assert "removed" in repr(handle)
    with pytest.raises(RuntimeError, match="was removed"):
        handle.enable()


def test_optimizer_built_before_attach_still_trains_the_weights() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weight = model.fc.weight
    before = weight.detach().clone()
    handle = calibrated(model)
    assert original(model.fc) is weight
    model.train()
    opt.zero_grad()
    model(inputs(3)).square().sum().backward()
    assert weight.grad is not None and bool(weight.grad.abs().sum() > 0)
    opt.step()
    assert not torch.equal(weight, before)
    handle.remove()
    assert model.fc.weight is weight


# ------------------------------------------------------------------ independent fake-quant model


def fq(x: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """torch's own fake-quant ops with the quantizer's parameters (half_even, float32)."""
    spec = q.spec
    if spec.granularity == "tensor":
        return torch.fake_quantize_per_tensor_affine(
            x, q.scale.reshape(()), q.zero_point.reshape(()), spec.qmin, spec.qmax
        )
    assert spec.granularity == "channel" and spec.axis is not None
    return torch.fake_quantize_per_channel_affine(x, q.scale, q.zero_point, spec.axis, spec.qmin, spec.qmax)


def manual_forward(model: SmallCNN, handle: QuantHandle, x: torch.Tensor) -> torch.Tensor:
    def w(name: str) -> torch.Tensor:
        return fq(getattr(model, name).parametrizations.weight.original, handle.quantizer(name, "weight"))

    def qin(name: str, t: torch.Tensor) -> torch.Tensor:
        return fq(t, handle.quantizer(name, "input"))

    c, bn, dw, c1, fc = model.conv, model.bn, model.dw, model.conv1d, model.fc
    y = F.conv2d(qin("conv", x), w("conv"), c.bias, c.stride, c.padding, c.dilation, c.groups)
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    y = fq(F.hardtanh(y, 0.0, 6.0), handle.quantizer("act", "output"))
    y = F.conv2d(qin("dw", y), w("dw"), None, dw.stride, dw.padding, dw.dilation, dw.groups)
    y = fq(F.hardswish(qin("hs", y)), handle.quantizer("hs", "output"))
    y = F.conv1d(qin("conv1d", y.flatten(2)), w("conv1d"), c1.bias, c1.stride, c1.padding, c1.dilation, c1.groups)
    y = F.relu(y.mean(-1))
    return F.linear(qin("fc", y), w("fc"), fc.bias)


def test_outputs_equal_independent_fake_quant() -> None:
    model = make_model()
    handle = calibrated(model)
    handle.freeze()
    assert [(n, r) for n, r, _ in handle.quantizers()] == [
        ("conv", "weight"), ("conv", "input"), ("act", "output"), ("dw", "weight"), ("dw", "input"),
        ("hs", "input"), ("hs", "output"), ("conv1d", "weight"), ("conv1d", "input"), ("fc", "weight"),
        ("fc", "input"),
    ]  # fmt: skip
    # per-channel symmetric min-max: s_c = max|w_c| / qmax
    for name in ("conv", "dw", "conv1d", "fc"):
        wt = getattr(model, name).parametrizations.weight.original
        expect = wt.detach().abs().flatten(1).amax(1) / 7
        torch.testing.assert_close(handle.quantizer(name, "weight").scale, expect, rtol=1e-6, atol=0)
    for seed in (11, 12):
        x = inputs(seed) * 1.5  # also beyond the calibrated range: saturation
        with torch.no_grad():
            got, want = model(x), manual_forward(model, handle, x)
        assert torch.equal(got, want), f"max |diff| {float((got - want).abs().max())}"


def test_mixed_precision_recipe() -> None:
    model = make_model()
    recipe = Recipe.from_dict(
        {"*": {"weight": W4, "input": A4}, "fc": {"weight": W8, "input": A8}, "dw": None, nn.ReLU6: {"output": U4}}
    )
    handle = attach(model, recipe)
    bits = {(n, r): q.spec.bits for n, r, q in handle.quantizers()}
    assert bits == {
        ("conv", "weight"): 4, ("conv", "input"): 4, ("act", "output"): 4,
        ("conv1d", "weight"): 4, ("conv1d", "input"): 4, ("fc", "weight"): 8, ("fc", "input"): 8,
    }  # fmt: skip
    assert not parametrize.is_parametrized(model.dw) and not hasattr(model.dw, INPUT_QUANTIZER)
    assert plist(model.fc)[0] is handle.quantizer("fc", "weight")
    assert model.fc.input_quantizer is handle.quantizer("fc", "input")
    assert list(handle.modules) == ["conv", "act", "conv1d", "fc"]
    assert handle.modules["fc"] is model.fc
    assert handle.configs["fc"]["weight"] == QuantizerConfig(W8)
    text = repr(handle)
    assert "'fc' (Linear): weight=int8 sym per-channel(0) half_even; input=uint8 asym per-tensor half_even" in text
    assert "'act' (ReLU6): output=uint4 sym per-tensor half_even" in text
    model_text = repr(model)
    assert f"({INPUT_QUANTIZER}): Quantizer(" in model_text and f"({OUTPUT_QUANTIZER}): Quantizer(" in model_text
    assert "(parametrizations): ModuleDict(" in model_text


# ------------------------------------------------------------------ errors


def test_errors_leave_the_model_untouched() -> None:
    model = make_model()
    state, hooks = snapshot(model), hook_counts(model)
    with pytest.raises(ValueError, match=r"'block\*' applies to no module"):
        attach(model, {"block*": {"weight": W4}})
    with pytest.raises(ValueError, match=r"module 'bn' of type BatchNorm2d cannot take role weight"):
        attach(model, {"*": {"weight": W4}, "bn": {"weight": W4}})
    with pytest.raises(ValueError, match=r"mode='exact' is not one of 'fast'"):
        attach(model, RECIPE, mode="exact")
    with pytest.raises(ValueError, match=r"module 'conv'.*group_size=4 does not divide dimension 1 of size 3"):
        attach(model, {"*": {"weight": QuantSpec(granularity="group", axis=1, group_size=4)}})
    # the quantizer itself rejects the last config: what was wired before is taken off again
    bad = QuantizerConfig(QuantSpec(bits=4, signed=False, narrow=True), learn="pact")
    with pytest.raises(ValueError, match="pact"):
        attach(model, {"*": {"weight": W4}, "fc": {"input": bad}})
    assert_state_equal(state, model)
    assert hook_counts(model) == hooks
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def test_attach_twice_names_the_module() -> None:
    model = make_model()
    first = attach(model, {"conv*": {"weight": W4}})
    with pytest.raises(ValueError, match=r"module 'conv' already has weight quantizer\(s\) from another handle"):
        attach(model, {"conv": {"output": A8}})
    second = attach(model, {"fc": {"input": A8}})  # disjoint modules: fine
    with pytest.raises(ValueError, match=r"module 'fc' already has input"):
        attach(model, {nn.Linear: {"weight": W4}})
    first.remove()
    second.remove()
    attach(model, RECIPE).remove()


def test_name_clash_with_existing_attribute() -> None:
    model = make_model()
    model.fc.output_quantizer = nn.Identity()
    with pytest.raises(ValueError, match=r"module 'fc' already has an attribute 'output_quantizer'"):
        attach(model, {"fc": {"output": A8}})


def test_mode_registry() -> None:
    assert "fast" in MODES
    with pytest.raises(ValueError, match="already registered"):
        register_mode(MODES["fast"])


def test_input_quantizer_needs_a_positional_tensor() -> None:
    lin = nn.Linear(3, 2)
    handle = attach(lin, {"": {"input": A8}})
    with pytest.raises(TypeError, match="without a positional tensor argument"):
        lin(input=torch.randn(2, 3))
    handle.remove()


# ------------------------------------------------------------------ gradients


def test_ste_gradient_reaches_the_float_weight() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    handle = attach(lin, {"": {"weight": W4}})
    x, g = torch.randn(5, 6), torch.randn(5, 4)
    (lin(x) * g).sum().backward()
    q = handle.quantizer("", "weight")
    wq = fq(original(lin).detach(), q).requires_grad_()
    torch.autograd.backward((F.linear(x, wq, lin.bias.detach()) * g).sum())
    # symmetric min-max: every weight lies inside the clipping range, the STE mask is all ones
    got, want = original(lin).grad, wq.grad
    assert got is not None and want is not None and torch.equal(got, want)


def test_lsq_scales_learn_through_the_hooks() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    recipe = {"*": {"weight": QuantizerConfig(W4, learn="lsq"), "input": QuantizerConfig(S6, learn="lsq")}}
    handle = attach(model, recipe)
    x = torch.randn(16, 6)
    with torch.no_grad(), handle.calibrate():
        model(x)
    scales = {(n, r): q.scale for n, r, q in handle.quantizers()}
    assert all(isinstance(s, nn.Parameter) for s in scales.values())
    own = {id(p) for p in model.parameters()}
    assert all(id(s) in own for s in scales.values())
    g = torch.randn(16, 3)
    (model(x) * g).sum().backward()
    assert all(s.grad is not None and bool(s.grad.abs().sum() > 0) for s in scales.values())

    # the last layer's weight-scale gradient, recomputed without the hooks
    q_in, q_w = handle.quantizer("2", "input"), handle.quantizer("2", "weight")
    with torch.no_grad():
        first: Any = model[0]
        q0_in, q0_w = handle.quantizer("0", "input"), handle.quantizer("0", "weight")
        h = F.relu(F.linear(q0_in(x), q0_w(original(first)), first.bias))
    s_w = q_w.scale.detach().clone().requires_grad_()
    w_orig = original(model[2]).detach()
    wq = lsq_fake_quantize(w_orig, s_w, q_w.zero_point, W4, lsq_grad_scale(w_orig.numel() // s_w.numel(), W4.qmax))
    xq = lsq_fake_quantize(h, q_in.scale.detach(), q_in.zero_point, S6, 1.0)
    last: Any = model[2]
    torch.autograd.backward((F.linear(xq, wq, last.bias.detach()) * g).sum())
    assert s_w.grad is not None
    torch.testing.assert_close(q_w.scale.grad, s_w.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ states


def test_state_transitions() -> None:
    model = make_model()
    x = inputs(5)
    with torch.no_grad():
        y_float = model(x)
    handle = attach(model, RECIPE)
    qs = [q for _, _, q in handle.quantizers()]
    assert all(q.enabled and q.observing and q.quantizing and not q.calibrated for q in qs)
    assert handle.enabled
    with torch.no_grad(), handle.calibrate():
        assert all(q.observing and not q.quantizing for q in qs)
        assert torch.equal(model(x), y_float)  # calibration pass-through
    assert all(q.calibrated and q.quantizing and not q.observing for q in qs)
    with torch.no_grad():
        y_quant = model(x)
    assert not torch.equal(y_quant, y_float)

    handle.disable()
    assert not handle.enabled
    with torch.no_grad():
        assert torch.equal(model(x), y_float)
    handle.enable()
    with torch.no_grad():
        assert torch.equal(model(x), y_quant)

    # an exception inside calibrate() puts every quantizer back as it was
    before = [copy.deepcopy(q.state_dict()) for q in qs]
    with pytest.raises(KeyError), torch.no_grad(), handle.calibrate():
        model(x * 10)
        raise KeyError("interrupted")
    for q, state in zip(qs, before):
        assert not q.observing and q.quantizing and q.calibrated
        now = q.state_dict()
        assert list(now) == list(state)
        assert all(torch.equal(now[k], v) if isinstance(v, torch.Tensor) else now[k] == v for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(x), y_quant)

    handle.freeze()
    assert all(not q.observing for q in qs)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(x), y_float)


def test_calibrate_names_quantizers_that_saw_no_data() -> None:
    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(3, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.used(x)
            return out

    model = WithUnused()
    handle = attach(model, {"*": {"input": A8}})
    with pytest.raises(RuntimeError, match=r"no quantization parameters for 'unused' input"):
        with torch.no_grad(), handle.calibrate():
            model(torch.randn(4, 3))
    assert handle.quantizer("used", "input").calibrated
    unused = handle.quantizer("unused", "input")
    assert not unused.calibrated and unused.observing and unused.quantizing  # as it was
    unused.enabled = False  # a disabled quantizer is left out of calibration
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(4, 3))
    assert not unused.calibrated and not unused.enabled


def test_handle_views() -> None:
    model = make_model()
    handle = attach(model, RECIPE)
    with pytest.raises(KeyError, match=r"no 'output' quantizer on module 'fc'"):
        handle.quantizer("fc", "output")
    with pytest.raises(TypeError):
        handle.modules["x"] = model  # type: ignore[index]
    handle.remove()


# ------------------------------------------------------------------ copies and state dicts


def test_deepcopy_of_an_attached_model() -> None:
    model = make_model()
    handle = calibrated(model)
    x = inputs(9)
    with torch.no_grad():
        y = model(x)
    alone = copy.deepcopy(model)
    model2, handle2 = copy.deepcopy((model, handle))
    with torch.no_grad():
        assert torch.equal(alone(x), y) and torch.equal(model2(x), y)
    assert handle2.model is model2 and handle2.modules["fc"] is model2.fc
    assert handle2.quantizer("fc", "input") is model2.fc.input_quantizer
    handle2.disable()  # acts on the copy only
    with torch.no_grad():
        assert torch.equal(model(x), y)
    handle2.remove()
    assert not any(isinstance(m, Quantizer) for m in model2.modules())
    with torch.no_grad():  # the copy shares parametrize's injected classes: the original must still work
        assert torch.equal(model(x), y)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model2(x), model(x))
    # and the other way round: removing from the original leaves the copy working
    handle = calibrated(model)
    model3, handle3 = copy.deepcopy((model, handle))
    with torch.no_grad():
        y = model(x)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model3(x), y)
    handle3.remove()


def test_state_dict_loads_into_a_freshly_attached_model() -> None:
    model = make_model()
    calibrated(model)
    x = inputs(4)
    with torch.no_grad():
        y = model(x)
    fresh = make_model(seed=3)
    attach(fresh, RECIPE)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), y)


def test_existing_parametrization_is_kept() -> None:
    class Doubled(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    parametrize.register_parametrization(lin, "weight", Doubled())
    handle = attach(lin, {"": {"weight": W8}})
    q = handle.quantizer("", "weight")
    with torch.no_grad():
        torch.testing.assert_close(lin.weight, fq(2 * original(lin), q), rtol=0, atol=0)
    handle.remove()
    assert len(plist(lin)) == 1 and isinstance(plist(lin)[0], Doubled)
    with torch.no_grad():
        assert torch.equal(lin.weight, 2 * original(lin))
