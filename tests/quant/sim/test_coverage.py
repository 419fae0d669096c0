"""Layer coverage of attach: the newer weight modules quantize exactly like their float twin on fake-quantized
operands; nothing with weights stays float without being reported; a module called twice per forward is
refused by name; roles that can never see data are refused at attach."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.spec import QuantSpec
from quant.sim.recipe import roles_in_model

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=False, symmetric=False)


def _fq(x: Any, q: Any) -> torch.Tensor:
    scale, zero_point = q.effective_qparams()
    out: torch.Tensor = quant.fake_quantize(x, scale, zero_point, q.spec)
    return out


def _original_weight(module: nn.Module) -> torch.Tensor:
    """The float weight behind a weight parametrization."""
    original: Any = getattr(module, "parametrizations").weight.original
    assert isinstance(original, torch.Tensor)
    return original


# (module factory, input factory, weight spec): each module's own forward on fake-quantized weight and input
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], QuantSpec]] = {
    "conv3d": (lambda: nn.Conv3d(3, 4, 2, padding=1), lambda: torch.randn(2, 3, 4, 4, 4), W4),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), lambda: torch.randn(2, 3, 7), W4.with_(axis=1)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), lambda: torch.randn(2, 4, 5, 5),
                         W4.with_(axis=1)),  # fmt: skip
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(2, 3, 2), lambda: torch.randn(1, 2, 3, 3, 3), W4),
    "layer_norm": (lambda: nn.LayerNorm(6), lambda: torch.randn(3, 5, 6), QuantSpec(bits=8)),
    "group_norm": (lambda: nn.GroupNorm(2, 4), lambda: torch.randn(2, 4, 3, 3), QuantSpec(bits=8, granularity="channel",
                                                                                         axis=0)),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_weight_module_computes_its_float_forward_on_fake_quantized_operands(case: str) -> None:
    make, data, spec = CASES[case]
    torch.manual_seed(0)
    module = make()
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        with torch.no_grad():  # non-trivial affine parameters
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
    float_twin = copy.deepcopy(module)
    x = data()
    model = nn.Sequential(module)
    handle = quant.attach(model, {"0": {"weight": spec, "input": A8}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    got = model(x)
    with torch.no_grad():
        weight: Any = float_twin.weight
        weight.copy_(_fq(weight, handle.quantizer("0", "weight")))
        expected = float_twin(_fq(x, handle.quantizer("0", "input")))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.equal(got, make_float(float_twin, module, x))  # the quantization changed something
    handle.remove()


def make_float(twin: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module``'s forward with its original float weight (after remove, on ``x``)."""
    fresh = copy.deepcopy(twin)
    with torch.no_grad():
        weight: Any = fresh.weight
        weight.copy_(_original_weight(module))
    out: torch.Tensor = fresh(x)
    return out


def test_a_transposed_conv_per_output_channel_has_one_scale_per_output_channel() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 2, groups=2))  # weight (4, 3, 2, 2)
    handle = quant.attach(model, {"0": {"weight": W4.with_(axis=1)}})
    model(torch.randn(1, 4, 3, 3))
    assert handle.quantizer("0", "weight").effective_qparams()[0].shape == (3,)


@pytest.mark.parametrize("kind", [nn.Embedding, nn.EmbeddingBag])
def test_embeddings_take_a_weight_scheme_per_row_or_per_group(kind: type[nn.Module]) -> None:
    torch.manual_seed(0)
    emb = kind(12, 8)
    idx = torch.randint(0, 12, (3, 5))
    twin = copy.deepcopy(emb)
    model = nn.Sequential(emb)
    for spec, scales in ((W4, (12,)), (QuantSpec(bits=4, granularity="group", axis=1, group_size=4), (12, 2))):
        handle = quant.attach(model, {kind: {"weight": spec}})
        got = model(idx)
        q = handle.quantizer("0", "weight")
        assert q.effective_qparams()[0].shape == scales
        with torch.no_grad():
            weight: Any = twin.weight
            weight.copy_(_fq(_original_weight(emb), q))
        torch.testing.assert_close(got, twin(idx), rtol=0, atol=0)
        handle.remove()
    with pytest.raises(ValueError, match=r"module '0' of type .*Embedding.* cannot take role input \(it can take: "
                                         r"weight\)"):  # fmt: skip
        quant.attach(model, {"0": {"input": A8}})


def test_a_layer_norm_without_affine_parameters_takes_activation_schemes_only() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False))
    assert roles_in_model(model)["1"] == frozenset({"input", "output"})
    handle = quant.attach(model, {"*": {"output": A8}})
    assert list(handle.modules) == ["0", "1"]


def _mixed() -> nn.Module:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.bn = nn.BatchNorm1d(8)
            self.rnn = nn.LSTM(8, 8, batch_first=True)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.InstanceNorm1d(8, affine=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            x = self.emb(idx)
            x = self.bn(x.transpose(1, 2)).transpose(1, 2)
            x, _ = self.rnn(x)
            x, _ = self.attn(x, x, x)
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
            out: torch.Tensor = self.fc(x.mean(1))
            return out

    return Mixed()


def test_modules_a_glob_leaves_float_are_reported_with_the_reason() -> None:
    model = _mixed()
    with pytest.warns(UserWarning, match=r"attach: 3 module\(s\) with weights stay float: 'emb' \(Embedding\)"):
        handle = quant.attach(model, {"*": {"weight": W4, "input": A8}})
    reasons = {s.name: s.reason for s in handle.skipped}
    assert list(reasons) == ["emb", "bn", "norm"]
    assert "takes only the roles weight, and the rule sets weight, input" in reasons["emb"]
    assert "quant.fold_bn" in reasons["bn"]
    assert "InstanceNorm1d is a normalization" in reasons["norm"]
    assert "'norm' (InstanceNorm1d): float, InstanceNorm1d is a normalization" in repr(handle)
    # the attention's out-projection takes the attention's weight scheme (its weight role only)
    assert list(handle.modules) == ["rnn", "attn", "attn.out_proj", "fc"]
    assert list(handle.configs["attn.out_proj"]) == ["weight"] and handle.configs["attn.out_proj"]["weight"].spec == W4


def test_an_excluded_out_projection_stays_float_without_a_report() -> None:
    model = _mixed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": W4, "input": A8}, "attn.out_proj": None})
    assert "attn.out_proj" not in handle.modules and "attn.out_proj" not in {s.name for s in handle.skipped}


def test_what_the_recipe_names_or_excludes_is_not_reported() -> None:
    model = _mixed()
    recipe: dict[Any, Any] = {"*": {"weight": W4, "input": A8}, nn.Embedding: {"weight": W4}, "attn.out_proj": {"weight": W4},
                              "bn": None, "norm": None}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = quant.attach(model, recipe)
    assert handle.skipped == () and list(handle.modules) == ["emb", "rnn", "attn", "attn.out_proj", "fc"]
    handle.remove()
    with warnings.catch_warnings():  # an activation-only glob does not ask for weights
        warnings.simplefilter("error")
        quant.attach(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), {"*": {"output": A8}})


def test_a_role_that_can_never_see_data_is_refused_at_attach() -> None:
    model = _mixed()
    with pytest.raises(ValueError, match=r"module 'attn.out_proj' .* cannot take role input \(it can take: weight; "
                                         r"the MultiheadAttention that owns it reads its weight directly"):  # fmt: skip
        quant.attach(model, {"attn.out_proj": {"input": A8}})


class _Block(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv1(x))
        out: torch.Tensor = self.relu(self.conv2(y) + x)  # the second call
        return out


def test_a_module_called_twice_in_one_forward_is_refused_naming_it_and_the_line() -> None:
    model = _Block()
    handle = quant.attach(model, {"*": {"output": A8}})
    with pytest.raises(RuntimeError, match=r"module 'relu' is called more than once in one forward of the model "
                                           r"\(the second call at .*test_coverage.py:\d+\): its output quantizer"):  # fmt: skip
        with torch.no_grad(), handle.calibrate():
            model(torch.randn(1, 3, 4, 4))
    model.relu(torch.randn(3))  # direct calls outside the model's forward are not counted
    model.relu(torch.randn(3))
    handle.remove()
    assert not model._forward_pre_hooks and not model._forward_hooks and "_quant_once_per_forward" not in model.__dict__
    handle = quant.attach(model, {"*": {"output": A8}, "relu": None})  # keeping it float works
    with torch.no_grad(), handle.calibrate():
        for _ in range(2):
            model(torch.randn(1, 3, 4, 4))


def test_weight_roles_and_separate_modules_are_not_counted() -> None:
    model = _Block()
    handle = quant.attach(model, {"*": {"weight": W4}})
    model(torch.randn(1, 3, 4, 4))
    model(torch.randn(1, 3, 4, 4))
    handle.remove()
    model.relu2 = nn.ReLU()
    copy_model, copy_handle = copy.deepcopy((model, quant.attach(model, {"conv1": {"output": A8}})))
    for m in (model, copy_model):
        for _ in range(3):
            m(torch.randn(1, 3, 4, 4))
    assert copy_handle.quantizer("conv1", "output").calibrated


def test_a_copy_of_the_model_guards_its_own_quantizers() -> None:
    model = _Block()
    handle = quant.attach(model, {"relu": {"output": A8}})
    clone, clone_handle = copy.deepcopy((model, handle))
    for m in (model, clone):
        with pytest.raises(RuntimeError, match="module 'relu' is called more than once"):
            m(torch.randn(1, 3, 4, 4))
    clone_handle.remove()
    with pytest.raises(RuntimeError, match="module 'relu' is called more than once"):  # the original keeps its guard
        model(torch.randn(1, 3, 4, 4))
