"""quant.mixed.allocation.allocate_bits: the integer program's choice against brute-force enumeration of every
allocation, the bad-input errors (the infeasible budget names the smallest feasible one), and the recipe it
returns attaching with the chosen widths."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import quant
from quant.contract.spec import QuantSpec
from quant.mixed.allocation import allocate_bits, allocation_cost
from quant.mixed.cost import cost
from quant.mixed.sensitivity import LayerSensitivity, Sensitivity

A8 = QuantSpec(bits=8, signed=False, symmetric=False)


def synthetic(layers: list[tuple[int, int, list[float], list[float]]], widths: tuple[int, ...]) -> Sensitivity:
    """``(weight elements, MACs, SQNR dB per width, perturbation per width)`` per layer, named l0, l1, ..."""
    return Sensitivity(widths, tuple(
        LayerSensitivity(f"l{i}", "Linear", n, macs, 1.0 + i, dict(zip(widths, sq)), dict(zip(widths, pert)))
        for i, (n, macs, sq, pert) in enumerate(layers)
    ), samples=1, hessian_samples=1, seed=0)  # fmt: skip


def brute_force(s: Sensitivity, budget: float, metric: str, objective: str, input_bits: int) -> float:
    """The smallest objective over every feasible allocation."""
    best = math.inf
    for choice in itertools.product(s.candidates, repeat=len(s.layers)):
        widths = {layer.name: b for layer, b in zip(s.layers, choice)}
        bops, size = allocation_cost(s, widths, input_bits=input_bits)
        if (bops if metric == "bops" else size) <= budget:
            value = sum(layer.noise(b) if objective == "sqnr" else layer.hessian(b) for layer, b in zip(s.layers, choice))
            best = min(best, value)
    return best


@st.composite
def instances(draw: st.DrawFn) -> tuple[Sensitivity, float, str, str]:
    widths = tuple(sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=4))))
    n_layers = draw(st.integers(1, 4))
    layers = []
    for _ in range(n_layers):
        n = draw(st.integers(1, 5000))
        macs = draw(st.integers(1, 10**6))
        sq = [draw(st.floats(-10.0, 60.0)) for _ in widths]
        pert = [draw(st.floats(0.0, 100.0)) for _ in widths]
        layers.append((n, macs, sq, pert))
    s = synthetic(layers, widths)
    metric = draw(st.sampled_from(["bops", "size"]))
    objective = draw(st.sampled_from(["sqnr", "hessian"]))
    bits = {layer.name: widths[0] for layer in s.layers}
    lo = allocation_cost(s, bits, input_bits=8)[0 if metric == "bops" else 1]
    hi = allocation_cost(s, {k: widths[-1] for k in bits}, input_bits=8)[0 if metric == "bops" else 1]
    budget = lo + draw(st.floats(0.0, 1.2)) * (hi - lo)
    return s, budget, metric, objective


@settings(max_examples=25, deadline=None)
@given(instances())
def test_the_integer_program_finds_the_brute_force_optimum(case: tuple[Sensitivity, float, str, str]) -> None:
    s, budget, metric, objective = case
    a = allocate_bits(s, budget=budget, metric=metric, objective=objective, base={"input": A8})
    best = brute_force(s, budget, metric, objective, 8)
    scale = max(max(layer.noise(b) if objective == "sqnr" else layer.hessian(b) for b in s.candidates) for layer in s.layers)
    assert a.objective_value == pytest.approx(best, rel=1e-6, abs=1e-6 * scale)
    assert a.cost <= budget and (a.bops, a.weight_bytes) == allocation_cost(s, dict(a.widths), input_bits=8)


def test_an_infeasible_budget_names_the_smallest_feasible_one() -> None:
    s = synthetic([(100, 10, [5.0, 20.0], [1.0, 0.1]), (30, 7, [5.0, 20.0], [1.0, 0.1])], (3, 8))
    smallest_size = math.ceil(100 * 3 / 8) + math.ceil(30 * 3 / 8)
    with pytest.raises(ValueError, match=f"below the smallest feasible budget {smallest_size} \\(every layer at 3 bits\\)"):
        allocate_bits(s, budget=smallest_size - 1, metric="size")
    assert allocate_bits(s, budget=smallest_size, metric="size").widths == {"l0": 3, "l1": 3}
    smallest_bops = (10 + 7) * 3 * 8
    with pytest.raises(ValueError, match=f"smallest feasible budget {smallest_bops} "):
        allocate_bits(s, budget=smallest_bops - 1, base={"input": A8})
    with pytest.raises(ValueError, match=f"smallest feasible budget {(10 + 7) * 3 * 32} "):  # float inputs: 32 bits
        allocate_bits(s, budget=smallest_bops)


def test_bad_arguments_fail_before_any_work() -> None:
    s = synthetic([(100, 10, [5.0, 20.0], [1.0, 0.1])], (1, 8))
    cases: list[tuple[dict[str, object], str]] = [
        ({"metric": "latency"}, "metric='latency' is not one of 'bops', 'size'"),
        ({"objective": "loss"}, "objective='loss' is not one of 'sqnr', 'hessian'"),
        ({"candidates": []}, "no candidate widths"),
        ({"candidates": [0]}, "width 0 must be an integer in 1..8"),
        ({"candidates": [4]}, "candidates \\[4\\] were not measured"),
        ({"weight": QuantSpec(bits=8, signed=False, symmetric=False, narrow=True)}, "cannot take width 1"),
        ({"base": {"weight": A8}}, "base role 'weight'"),
        ({"budget": -1}, "budget=-1 must be a positive finite number"),
        ({"budget": math.inf}, "budget=inf"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            allocate_bits(s, **{"budget": 1e9, **kwargs})  # type: ignore[arg-type]


def test_the_recipe_attaches_with_the_chosen_widths_and_costs_what_it_says() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    example = torch.randn(2, 1, 8, 8)
    float_cost = cost(model, None, example)
    s = Sensitivity((2, 4, 8), tuple(
        LayerSensitivity(c.name, c.kind, c.weight_elements, c.macs, 1.0, sq, {2: 1.0, 4: 0.1, 8: 0.01})
        for c, sq in zip(float_cost.layers, ({2: 30.0, 4: 40.0, 8: 50.0}, {2: 2.0, 4: 15.0, 8: 40.0}))
    ), samples=2, hessian_samples=1, seed=0)  # fmt: skip
    budget = math.ceil(36 * 2 / 8) + math.ceil(1440 * 4 / 8)  # room for the sensitive linear at 4 bits only
    a = allocate_bits(s, budget=budget, metric="size", base={"input": A8})
    assert dict(a.widths) == {"0": 2, "3": 4} and a.weight_bytes == budget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, a.recipe)
    assert {n: (r["weight"].spec.bits, r["input"].spec.bits) for n, r in handle.configs.items()} == {"0": (2, 8), "3": (4, 8)}
    assert handle.configs["0"]["weight"].spec.granularity == "channel"
    attached = cost(model, handle, example)
    assert (attached.weight_bytes, attached.bops) == (a.weight_bytes, a.bops)
    assert a.predicted_sqnr_db == pytest.approx(-10 * math.log10(10**-3 + 10**-1.5))
