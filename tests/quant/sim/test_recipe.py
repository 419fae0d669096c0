"""Recipes: pattern matching, per-role override, capability filtering and early errors."""

from __future__ import annotations

import pytest
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from quant.sim.recipe import (
    ACTIVATION_MODULES,
    BASE_ROLES,
    WEIGHT_MODULES,
    WEIGHT_ONLY_MODULES,
    QuantizerConfig,
    Recipe,
    Rule,
    module_roles,
)
from quant.contract.spec import QuantSpec

W4 = QuantSpec(bits=4, granularity="channel", axis=0)
W8 = QuantSpec(bits=8, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)
A8 = QuantSpec(bits=8, signed=False, symmetric=False)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Hardswish(), nn.Conv1d(8, 4, 1))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(4, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.act(self.bn(self.stem(x)))
        x = self.layer1[1](self.layer1[0](x)).flatten(2)
        x = self.pool(self.layer1[2](x)).flatten(1)
        return self.head(F.relu(self.fc(x)))


def bits(resolved: dict[str, dict[str, QuantizerConfig]]) -> dict[str, dict[str, int]]:
    return {name: {role: cfg.spec.bits for role, cfg in roles.items()} for name, roles in resolved.items()}


def test_star_takes_every_weight_module_and_skips_the_rest() -> None:
    resolved = Recipe.from_dict({"*": {"weight": W4, "input": A4}}).resolve(Net())
    assert list(resolved) == ["stem", "layer1.0", "layer1.2", "fc", "head"]
    assert all(list(roles) == ["weight", "input"] for roles in resolved.values())
    assert all(isinstance(cfg, QuantizerConfig) and cfg.observer == "minmax" for r in resolved.values() for cfg in r.values())


def test_output_only_star_also_catches_activations() -> None:
    resolved = Recipe.from_dict({"*": {"output": A8}}).resolve(Net())
    assert list(resolved) == ["stem", "act", "layer1.0", "layer1.1", "layer1.2", "fc", "head"]


def test_later_rules_override_per_role() -> None:
    recipe = Recipe.from_dict(
        {
            "*": {"weight": W4, "input": A4},
            "fc": {"weight": W8},  # input stays 4-bit
            nn.Conv1d: {"input": A8, "output": A8},
            "layer1.*": {"weight": QuantSpec(bits=2, narrow=True)},
        }
    )
    assert bits(recipe.resolve(Net())) == {
        "stem": {"weight": 4, "input": 4},
        "layer1.0": {"weight": 2, "input": 4},
        "layer1.2": {"weight": 2, "input": 8, "output": 8},
        "fc": {"weight": 8, "input": 4},
        "head": {"weight": 4, "input": 4},
    }


def test_exclusion_rule_keeps_layers_float() -> None:
    recipe = Recipe.from_dict({"*": {"weight": W4}, "stem": None, "head": None, nn.Linear: {"input": A8}})
    assert bits(recipe.resolve(Net())) == {
        "layer1.0": {"weight": 4},
        "layer1.2": {"weight": 4},
        "fc": {"weight": 4, "input": 8},
        "head": {"input": 8},
    }


def test_type_pattern_uses_isinstance() -> None:
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(4, 4), nn.Linear(4, 4), nn.ReLU())
    assert list(Recipe.from_dict({nn.Linear: {"weight": W8}}).resolve(model)) == ["0", "1"]
    assert list(Recipe.from_dict({MyLinear: {"weight": W8}}).resolve(model)) == ["0"]


def test_bare_module_is_the_root() -> None:
    resolved = Recipe.from_dict({"*": {"weight": W8}}).resolve(nn.Linear(3, 2))
    assert list(resolved) == [""]


def test_shared_module_listed_once() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert list(Recipe.from_dict({"*": {"weight": W8}}).resolve(model)) == ["0"]


def _weight_module(t: type[nn.Module]) -> nn.Module:
    if t is nn.Linear:
        return nn.Linear(4, 4)
    if t is nn.LayerNorm:
        return nn.LayerNorm(4)
    if t is nn.GroupNorm:
        return nn.GroupNorm(2, 4)
    return t(4, 4, 1)


def test_capabilities() -> None:
    for t in WEIGHT_MODULES:
        assert module_roles(_weight_module(t)) == frozenset(BASE_ROLES), t
    for t in ACTIVATION_MODULES:
        assert module_roles(t()) == {"input", "output"}
    for t in WEIGHT_ONLY_MODULES:
        assert module_roles(t(10, 4)) == {"weight"}
    for m in (nn.BatchNorm2d(3), nn.Sequential(), nn.Identity(), nn.MaxPool2d(2), nn.LSTM(2, 2, proj_size=1), nn.InstanceNorm2d(3)):
        assert module_roles(m) == frozenset()
    assert module_roles(nn.Conv2d(4, 4, 3, groups=4)) == frozenset(BASE_ROLES)


# ------------------------------------------------------------------ errors


def test_pattern_matching_nothing_names_pattern_and_modules() -> None:
    with pytest.raises(ValueError, match=r"'layer9\.\*' applies to no module.*'layer1\.0'"):
        Recipe.from_dict({"layer9.*": {"weight": W4}}).resolve(Net())
    with pytest.raises(ValueError, match=r"rule Conv3d applies to no module"):
        Recipe.from_dict({nn.Conv3d: {"weight": W4}}).resolve(Net())
    with pytest.raises(ValueError, match=r"'fcc' applies to no module.*'fc'"):
        Recipe.from_dict({"fcc": {"weight": W4}}).resolve(Net())


def test_glob_matching_only_incapable_modules_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'bn\*' applies to no module: it matches 1 module\(s\) \(BatchNorm2d\).*weight"):
        Recipe.from_dict({"bn*": {"weight": W4}}).resolve(Net())
    with pytest.raises(ValueError, match=r"'act' .*ReLU cannot take role weight"):
        Recipe.from_dict({"act": {"weight": W4}}).resolve(Net())


def test_exact_name_that_cannot_take_its_roles() -> None:
    with pytest.raises(ValueError, match=r"module 'bn' of type BatchNorm2d cannot take roles weight, input"):
        Recipe.from_dict({"bn": {"weight": W4, "input": A4}}).resolve(Net())
    with pytest.raises(ValueError, match=r"module 'layer1' of type Sequential cannot take any role"):
        Recipe.from_dict({"layer1": None}).resolve(Net())


def test_weight_spec_that_does_not_fit() -> None:
    grouped = QuantSpec(bits=4, granularity="group", axis=1, group_size=5)
    with pytest.raises(ValueError, match=r"module 'fc' \(Linear, weight shape \(12, 4\)\).*group_size=5 does not divide dimension 1 of size 4"):
        Recipe.from_dict({"fc": {"weight": grouped}}).resolve(Net())
    with pytest.raises(ValueError, match=r"rule Linear: module 'fc'.*QuantSpec\.axis=2 is out of range for 2 dimensions"):
        Recipe.from_dict({nn.Linear: {"weight": QuantSpec(granularity="channel", axis=2)}}).resolve(Net())
    # fits: in_features 12 of head divides by 4, and fc's 4 too
    ok = Recipe.from_dict({nn.Linear: {"weight": QuantSpec(granularity="group", axis=1, group_size=4)}})
    assert list(ok.resolve(Net())) == ["fc", "head"]


def test_unknown_role_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"unknown role 'weights'; allowed roles are 'weight', 'input', 'output'"):
        Recipe.from_dict({"*": {"weights": W4}})
    with pytest.raises(TypeError, match=r"expected a dict of roles"):
        Recipe.from_dict({"*": W4})
    with pytest.raises(ValueError, match=r"Rule\.weight for '\*'"):
        Recipe.from_dict({"*": {"weight": 4}})
    with pytest.raises(ValueError, match=r"Rule\.pattern=3"):
        Rule(3, weight=W4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"PACT clips activations"):
        Rule("*", weight=QuantizerConfig(W4, learn="pact"))
    with pytest.raises(ValueError, match=r"exclude=True and also sets roles"):
        Rule("*", weight=W4, exclude=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Recipe\.rules is empty"):
        Recipe(())
    with pytest.raises(TypeError, match=r"recipe must be a Recipe or a dict"):
        Recipe.of([("*", W4)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model must be an nn.Module"):
        Recipe.from_dict({"*": {"weight": W4}}).resolve("model")  # type: ignore[arg-type]


def test_quantizer_config_validation() -> None:
    with pytest.raises(ValueError, match=r"QuantizerConfig\.observer='max' is not one of 'minmax'"):
        QuantizerConfig(W4, observer="max")
    with pytest.raises(ValueError, match=r"QuantizerConfig\.learn='ste' is not one of 'none', 'lsq', 'pact'"):
        QuantizerConfig(W4, learn="ste")
    with pytest.raises(ValueError, match=r"QuantizerConfig\.spec must be a QuantSpec"):
        QuantizerConfig(4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"observer_kwargs keys must be strings"):
        QuantizerConfig(W4, observer_kwargs={1: 2})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"observer_kwargs must be a mapping"):
        QuantizerConfig(W4, observer_kwargs=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"QuantizerConfig\.observer_kwargs=\{'bogus': 1\} for observer 'minmax'"):
        QuantizerConfig(W4, observer_kwargs={"bogus": 1})  # type: ignore[arg-type]
    a = QuantizerConfig(W4, observer="moving_average", observer_kwargs={"momentum": 0.1})  # type: ignore[arg-type]
    b = QuantizerConfig(W4, observer="moving_average", observer_kwargs=(("momentum", 0.1),))
    assert a == b and hash(a) == hash(b) and a.observer_kwargs == (("momentum", 0.1),)
    assert a.describe() == "int4 sym per-channel(0) half_even, observer=moving_average(momentum=0.1)"
    assert QuantizerConfig.of(W4) == QuantizerConfig(W4)


@given(
    order=st.permutations(["a", "b", "c"]),
    roles=st.lists(st.sampled_from(BASE_ROLES), min_size=1, max_size=3, unique=True),
)
def test_last_rule_wins_for_each_role(order: list[str], roles: list[str]) -> None:
    """Three glob rules that all match: for every role the last rule setting it wins."""
    specs = {"a": QuantSpec(bits=2), "b": QuantSpec(bits=5), "c": QuantSpec(bits=7)}
    rule_roles = {"a": list(BASE_ROLES), "b": roles, "c": roles[:1]}
    patterns = ["*", "l*", "*n"]
    recipe = Recipe.from_dict({patterns[i]: {r: specs[k] for r in rule_roles[k]} for i, k in enumerate(order)})
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(2, 2))
    got = bits(recipe.resolve(model))["lin"]
    for role in BASE_ROLES:
        last = [k for k in order if role in rule_roles[k]][-1]
        assert got[role] == specs[last].bits, (role, order, roles)
