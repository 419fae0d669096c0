"""One weight width per layer, minimising the summed sensitivity under a budget: an exact 0/1 integer program.

For the layers ``l`` of a :class:`~quant.mixed.sensitivity.Sensitivity` and candidate widths ``b``, with a
binary ``x[l, b]`` (layer ``l`` takes width ``b``)::

    minimise    sum_{l,b} s[l, b] x[l, b]
    subject to  sum_b x[l, b] = 1                       for every layer l   (one width each)
                sum_{l,b} c[l, b] x[l, b] <= budget                         (the budget)

solved by ``scipy.optimize.milp`` (HiGHS branch and bound, ``mip_rel_gap=0``: optimal, not approximately).

* ``objective="sqnr"``: ``s[l, b] = 10^(-SQNR[l, b] / 10)``, the relative output noise power of layer ``l`` at
  ``b`` bits alone (additive when the layers' errors are independent; ``-10 log10`` of the sum predicts the
  output SQNR of the whole allocation); ``objective="hessian"``: HAWQ-v2's ``tr(H_l)/n_l ||Q_b(W_l) - W_l||^2``;
* ``metric="bops"``: ``c[l, b] = MACs_l x b x a`` with ``a`` the width of ``base``'s input scheme (32 without
  one), for one sample; ``metric="size"``: ``c[l, b] = ceil(n_l b / 8)``, the layer's packed weight bytes.

Both sums run over the measured layers only: layers the sensitivity did not measure are not in the budget
and not in the recipe. The costs are integers; the budget constraint is checked again on the integer costs
of the solver's choice.

The result's :class:`~quant.sim.recipe.Recipe` has one exact-name rule per layer, in the sensitivity's order:
its weight scheme is ``weight`` at the chosen width, its other roles those of ``base`` (e.g. the input's).

>>> from quant.mixed.sensitivity import LayerSensitivity, Sensitivity
>>> a = LayerSensitivity("a", "Linear", 100, 100, 1.0, {2: 10.0, 8: 40.0}, {2: 1.0, 8: 0.01})
>>> b = LayerSensitivity("b", "Linear", 100, 100, 1.0, {2: 20.0, 8: 50.0}, {2: 1.0, 8: 0.01})
>>> s = Sensitivity((2, 8), (a, b), samples=1, hessian_samples=1, seed=0)
>>> choice = allocate_bits(s, budget=125, metric="size")  # 25 + 100 bytes: only one layer can have 8 bits
>>> dict(choice.widths), choice.weight_bytes, round(choice.objective_value, 6)
({'a': 8, 'b': 2}, 125, 0.0101)
>>> allocate_bits(s, budget=40, metric="size")
Traceback (most recent call last):
...
ValueError: allocate_bits: budget=40 size is below the smallest feasible budget 50 (every layer at 2 bits)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

import numpy as np

from quant.contract.spec import QuantSpec
from quant.mixed.cost import FLOAT_BITS, packed_bytes
from quant.mixed.sensitivity import LayerSensitivity, Sensitivity, check_widths
from quant.sim.recipe import ROLES, QuantizerConfig, Recipe, Rule

__all__ = ["Allocation", "DEFAULT_WEIGHT", "METRICS", "OBJECTIVES", "allocate_bits", "allocation_cost"]

METRICS = ("bops", "size")
OBJECTIVES = ("sqnr", "hessian")
#: The weight scheme whose width the allocation sets: per-output-channel symmetric signed.
DEFAULT_WEIGHT = QuantSpec(bits=8, signed=True, symmetric=True, granularity="channel", axis=0)

SchemeLike = Union[QuantSpec, QuantizerConfig]


@dataclass(frozen=True)
class Allocation:
    """The chosen widths, their recipe, what they cost and the minimised objective."""

    recipe: Recipe
    #: Layer name -> weight width, in the sensitivity's layer order.
    widths: Mapping[str, int]
    metric: str
    budget: float
    objective: str
    #: ``sum_l s[l, width_l]`` (module docstring).
    objective_value: float
    #: Bit operations of one sample and packed weight bytes of the measured layers at the chosen widths.
    bops: int
    weight_bytes: int

    @property
    def cost(self) -> int:
        """The cost in the budget's metric."""
        return self.bops if self.metric == "bops" else self.weight_bytes

    @property
    def predicted_sqnr_db(self) -> float:
        """``-10 log10(objective_value)`` for ``objective="sqnr"``: the output SQNR the additive noise model
        predicts (``inf`` for no noise); NaN for the Hessian objective."""
        if self.objective != "sqnr":
            return math.nan
        return math.inf if self.objective_value <= 0 else -10.0 * math.log10(self.objective_value)


def allocation_cost(sensitivity: Sensitivity, widths: Mapping[str, int], *, input_bits: int = FLOAT_BITS) -> tuple[int, int]:
    """``(BOPs, packed weight bytes)`` of the measured layers at ``widths`` (every layer named), inputs at
    ``input_bits``: ``sum MACs x b x input_bits`` and ``sum ceil(n b / 8)``.

    >>> from quant.mixed.sensitivity import LayerSensitivity, Sensitivity
    >>> s = Sensitivity((4,), (LayerSensitivity("fc", "Linear", 30, 30, 1.0, {4: 20.0}, {4: 0.1}),), 1, 1, 0)
    >>> allocation_cost(s, {"fc": 3}, input_bits=8)   # 30 * 3 * 8, ceil(30 * 3 / 8)
    (720, 12)
    """
    missing = [layer.name for layer in sensitivity.layers if layer.name not in widths]
    if missing:
        raise ValueError(f"allocation_cost: no width for the layers {missing}")
    bops = sum(_cost(layer, widths[layer.name], "bops", input_bits) for layer in sensitivity.layers)
    size = sum(_cost(layer, widths[layer.name], "size", input_bits) for layer in sensitivity.layers)
    return bops, size


def _cost(layer: LayerSensitivity, bits: int, metric: str, input_bits: int) -> int:
    return layer.macs * bits * input_bits if metric == "bops" else packed_bytes(layer.weight_elements, bits)


def _value(layer: LayerSensitivity, bits: int, objective: str) -> float:
    return layer.noise(bits) if objective == "sqnr" else layer.hessian(bits)


def allocate_bits(sensitivity: Sensitivity, *, budget: float, metric: str = "bops", objective: str = "sqnr",
                  weight: SchemeLike = DEFAULT_WEIGHT, base: Optional[Mapping[str, SchemeLike]] = None,
                  candidates: Optional[Iterable[int]] = None) -> Allocation:  # fmt: skip
    """The widths minimising the summed sensitivity with total cost ``<= budget`` (module docstring).

    ``weight``: the weight scheme (a ``QuantSpec`` or ``QuantizerConfig``) whose ``bits`` each layer's choice
    replaces; ``base``: the layers' other roles (``{"input": QuantSpec(bits=8, ...)}``), whose input width also
    prices the BOPs; ``candidates``: choose among these of the sensitivity's widths (default: all of them).

    ``ValueError`` before any work for an unknown ``metric`` or ``objective``, no candidates, a width outside
    1..8, not measured, or that ``weight``'s scheme rejects, a ``base`` role that is unknown or ``weight``, a
    non-finite sensitivity, a budget that is not a positive number, and a budget below the smallest feasible
    one (every layer at the narrowest candidate), which the message gives.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    if metric not in METRICS:
        raise ValueError(f"allocate_bits: metric={metric!r} is not one of {', '.join(map(repr, METRICS))}")
    if objective not in OBJECTIVES:
        raise ValueError(f"allocate_bits: objective={objective!r} is not one of {', '.join(map(repr, OBJECTIVES))}")
    if not isinstance(sensitivity, Sensitivity):
        raise TypeError(f"allocate_bits: sensitivity must be a Sensitivity, got {type(sensitivity).__name__}")
    if not sensitivity.layers:
        raise ValueError("allocate_bits: the sensitivity measured no layer")
    widths = check_widths(sensitivity.candidates if candidates is None else candidates, "allocate_bits: candidates")
    unmeasured = [b for b in widths if b not in sensitivity.candidates]
    if unmeasured:
        raise ValueError(f"allocate_bits: candidates {unmeasured} were not measured; the sensitivity has "
                         f"{list(sensitivity.candidates)}")  # fmt: skip
    weight_config = _config(weight, "weight")
    specs: dict[int, QuantSpec] = {}
    for b in widths:
        try:
            specs[b] = weight_config.spec.with_(bits=b)
        except ValueError as err:
            raise ValueError(f"allocate_bits: the weight scheme cannot take width {b}: {err}") from None
    base_roles = {role: _config(v, f"base[{role!r}]") for role, v in (base or {}).items()}
    for role in base_roles:
        if role not in ROLES or role == "weight":
            raise ValueError(f"allocate_bits: base role {role!r} must be one of {', '.join(repr(r) for r in ROLES if r != 'weight')}"
                             " (the allocation sets the weight)")  # fmt: skip
    input_bits = base_roles["input"].spec.bits if "input" in base_roles else FLOAT_BITS
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"allocate_bits: budget={budget!r} must be a positive finite number ({metric})")

    layers = sensitivity.layers
    values = np.array([[_value(layer, b, objective) for b in widths] for layer in layers], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = [(layers[i].name, widths[j]) for i, j in zip(*np.nonzero(~np.isfinite(values)))]
        raise ValueError(f"allocate_bits: non-finite {objective} sensitivity at (layer, width) {bad}")
    costs = np.array([[_cost(layer, b, metric, input_bits) for b in widths] for layer in layers], dtype=np.int64)
    smallest = int(costs.min(axis=1).sum())
    if budget < smallest:
        raise ValueError(f"allocate_bits: budget={budget:g} {metric} is below the smallest feasible budget {smallest} "
                         f"(every layer at {widths[0]} bits)")  # fmt: skip

    n_layers, n_widths = values.shape
    scale = float(np.abs(values).max()) or 1.0
    one_hot = np.kron(np.eye(n_layers), np.ones(n_widths))
    limit = math.floor(budget)
    chosen: Optional[np.ndarray] = None
    while limit >= smallest:  # the solver's tolerance may let a choice exceed the budget by a hair: tighten and retry
        result = milp(values.reshape(-1) / scale, integrality=np.ones(values.size), bounds=Bounds(0, 1),
                      constraints=[LinearConstraint(one_hot, 1, 1),
                                   LinearConstraint(costs.reshape(1, -1).astype(np.float64), -np.inf, limit)],
                      options={"mip_rel_gap": 0.0})  # fmt: skip
        if result.x is None:
            raise RuntimeError(f"allocate_bits: scipy.optimize.milp found no allocation: {result.message}")
        pick = np.asarray(result.x).reshape(n_layers, n_widths).argmax(axis=1)
        excess = int(costs[np.arange(n_layers), pick].sum()) - math.floor(budget)
        if excess <= 0:
            chosen = pick
            break
        limit -= excess
    if chosen is None:  # unreachable: the all-narrowest choice meets every limit >= smallest
        raise RuntimeError("allocate_bits: the solver's choices exceed the budget")
    picked = {layer.name: widths[int(j)] for layer, j in zip(layers, chosen)}
    bops, size = allocation_cost(sensitivity, picked, input_bits=input_bits)
    rules = tuple(
        Rule(name, weight=QuantizerConfig(specs[b], weight_config.observer, weight_config.learn,
                                          weight_config.observer_kwargs), **base_roles)  # type: ignore[arg-type]
        for name, b in picked.items()
    )  # fmt: skip
    total = float(sum(_value(layer, picked[layer.name], objective) for layer in layers))
    return Allocation(Recipe(rules), picked, metric, float(budget), objective, total, bops, size)


def _config(value: object, where: str) -> QuantizerConfig:
    if isinstance(value, QuantizerConfig):
        return value
    if isinstance(value, QuantSpec):
        return QuantizerConfig(value)
    raise ValueError(f"allocate_bits: {where} must be a QuantSpec or a QuantizerConfig, got {type(value).__name__}")
