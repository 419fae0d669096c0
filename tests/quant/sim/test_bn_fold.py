"""BN folding: the folded copy computes what the unfused eval-mode model computes.

Tolerance: ``rtol=1e-5`` and ``atol=1e-6 * max|reference output|`` (float32 rounding
of the unfused conv-then-BN; the fold itself runs in float64).
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from quant.sim.bn_fold import fold_bn, foldable_pairs

M = TypeVar("M", bound=nn.Module)


def randomize_bn(model: M, generator: torch.Generator) -> M:
    """Random running statistics, affine parameters and eps on every BatchNorm."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) * 3 + 0.05)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=generator))
                    m.bias.copy_(torch.randn(m.num_features, generator=generator))
                m.eps = float(torch.rand((), generator=generator)) * 1e-3 + 1e-6
    return model


def assert_folded_equal(folded: nn.Module, model: nn.Module, *inputs: torch.Tensor) -> None:
    """The folded float32 model is as accurate as the original float32 model: both against the original
    computed in float64, the folded error at most 8x the original's (or a few float32 ulps of the output)."""
    model.eval()
    folded.eval()
    with torch.no_grad():
        ref = model(*inputs)
        out = folded(*inputs)
        exact = copy.deepcopy(model).double()(*(x.double() for x in inputs))
    scale = float(ref.abs().max())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * scale)
    base = float((ref.double() - exact).abs().max())
    err = float((out.double() - exact).abs().max())
    assert err <= 8 * base + 4 * 2.0**-23 * scale, f"folding error {err} vs the float32 model's own {base}"


def n_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class Mixed(nn.Module):
    """Not a Sequential: the fx path finds conv->bn edges in forward code."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dw_bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 6, 1, groups=2)
        self.grouped_bn = nn.BatchNorm2d(6, affine=False)
        self.conv1d = nn.Conv1d(6, 5, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc = nn.Linear(5, 7)
        self.fc_bn = nn.BatchNorm1d(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu6(self.dw_bn(self.dw(x)))
        x = self.grouped_bn(self.grouped(x))
        x = x.flatten(2)
        x = self.bn1d(self.conv1d(x)).mean(-1)
        out: torch.Tensor = self.fc_bn(self.fc(x))
        return out


def test_fx_path_folds_every_kind_and_leaves_input_untouched() -> None:
    g = torch.Generator().manual_seed(0)
    model = randomize_bn(Mixed(), g).eval()
    before = snapshot(model)
    assert foldable_pairs(model) == [
        ("conv", "bn"),
        ("dw", "dw_bn"),
        ("grouped", "grouped_bn"),
        ("conv1d", "bn1d"),
        ("fc", "fc_bn"),
    ]
    folded = fold_bn(model)
    assert n_batchnorms(folded) == 0 and n_batchnorms(model) == 5
    assert all(isinstance(getattr(folded, n), nn.Identity) for n in ("bn", "dw_bn", "grouped_bn", "bn1d", "fc_bn"))
    assert folded.conv.bias is not None and model.conv.bias is None
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert_folded_equal(folded, model, torch.randn(4, 3, 6, 6, generator=g))


def test_train_mode_model_folds_with_running_statistics() -> None:
    g = torch.Generator().manual_seed(1)
    model = randomize_bn(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)), g).train()
    folded = fold_bn(model)
    assert folded.training and model.training
    assert_folded_equal(folded, model, torch.randn(3, 2, 5, 5, generator=g))


@settings(max_examples=25)
@given(
    in_groups=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    groups=st.integers(1, 4),
    kernel=st.integers(1, 3),
    bias=st.booleans(),
    affine=st.booleans(),
    depthwise=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(in_groups=1, out_per_group=1, groups=1, kernel=3, bias=False, affine=True, depthwise=False, seed=173)
def test_conv2d_groups_property(
    in_groups: int, out_per_group: int, groups: int, kernel: int, bias: bool, affine: bool, depthwise: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    cin = groups if depthwise else in_groups * groups
    cout = groups * out_per_group
    model = nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(cout, affine=affine),
        nn.ReLU(),
    )
    with torch.no_grad():
        conv: Any = model[0]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    randomize_bn(model, g)
    folded = fold_bn(model)
    assert n_batchnorms(folded) == 0
    assert_folded_equal(folded, model, torch.randn(2, cin, 5, 5, generator=g))


@settings(max_examples=15)
@given(cin=st.integers(1, 6), cout=st.integers(1, 6), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv1d_and_linear_property(cin: int, cout: int, bias: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    conv = randomize_bn(nn.Sequential(nn.Conv1d(cin, cout, 3, bias=bias), nn.BatchNorm1d(cout)), g)
    assert_folded_equal(fold_bn(conv), conv, torch.randn(3, cin, 7, generator=g))
    lin = randomize_bn(nn.Sequential(nn.Linear(cin, cout, bias=bias), nn.BatchNorm1d(cout)), g)
    assert foldable_pairs(lin) == [("0", "1")]
    assert_folded_equal(fold_bn(lin), lin, torch.randn(5, cin, generator=g))


class Untraceable(nn.Module):
    """Data-dependent control flow: fx cannot trace it; Sequential folding still applies."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        if y.sum() > 0:
            out: torch.Tensor = self.bn(self.conv(y))
            return out
        return -y


def test_untraceable_model_gets_sequential_folding_only() -> None:
    g = torch.Generator().manual_seed(2)
    model = randomize_bn(Untraceable(), g).eval()
    x = torch.rand(2, 3, 6, 6, generator=g)
    assert foldable_pairs(model, x) == [("body.0", "body.1")]
    folded = fold_bn(model, x)
    assert isinstance(folded.body[1], nn.Identity) and isinstance(folded.bn, nn.BatchNorm2d)
    assert_folded_equal(folded, model, x)
    with pytest.warns(UserWarning, match="nothing is folded .*pass example_input"):
        assert foldable_pairs(model) == []  # without an input nothing says how often a module runs


class UntraceableSharedConv(nn.Module):
    """The Sequential's conv is also called on its own (behind data-dependent control flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x)
        if y.sum() > -1e9:
            y = y + self.body[0](x)
        return y


def test_the_fallback_skips_a_conv_called_elsewhere() -> None:
    """The non-fx fallback used to fold this pair, changing the second use of the conv."""
    g = torch.Generator().manual_seed(3)
    model = randomize_bn(UntraceableSharedConv(), g).eval()
    x = torch.rand(2, 3, 5, 5, generator=g)
    assert foldable_pairs(model, x) == []
    folded = fold_bn(model, x)
    torch.testing.assert_close(folded(x), model(x))


class Residual(nn.Module):
    """The conv output has a second user: folding would change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        out: torch.Tensor = self.bn(y) + y
        return out


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x)) + self.conv(x)
        return out


def _shared_bn() -> nn.Module:
    bn = nn.BatchNorm2d(4)
    return nn.Sequential(nn.Conv2d(4, 4, 1), bn, nn.Conv2d(4, 4, 1), bn)


@pytest.mark.parametrize(
    "make",
    [
        Residual,
        CalledTwice,
        _shared_bn,
        lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),
        lambda: nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)),
        lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),
    ],
    ids=["residual", "called-twice", "shared-bn", "no-running-stats", "bn-first", "relu-between"],
)
def test_unfoldable_models_are_left_alone(make: object) -> None:
    g = torch.Generator().manual_seed(3)
    model = randomize_bn(make(), g).eval()  # type: ignore[operator]
    assert foldable_pairs(model) == []
    folded = fold_bn(model)
    assert n_batchnorms(folded) == n_batchnorms(model)
    before, after = model.state_dict(), folded.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 4, 5, 5, generator=g)
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))


def test_hooks_block_folding() -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    model[1].register_forward_hook(lambda m, a, o: None)
    assert foldable_pairs(model) == []


def test_parametrized_weight_raises() -> None:
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    parametrize.register_parametrization(model[0], "weight", Double())
    with pytest.raises(ValueError, match="fold batch norms before attach"):
        fold_bn(model)


def test_bad_argument() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        fold_bn(torch.zeros(3))  # type: ignore[type-var]


def test_fold_keeps_parameters_trainable_and_independent() -> None:
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2)).eval()
    folded = fold_bn(model)
    lin: Any = folded[0]
    assert isinstance(lin.bias, nn.Parameter) and lin.bias.requires_grad
    assert lin.weight.data_ptr() != model[0].weight.data_ptr()  # type: ignore[operator]
    copy.deepcopy(folded)(torch.randn(2, 3)).sum().backward()
