"""Recipes: which module of a model gets which quantization scheme.

A :class:`Recipe` is an ordered list of :class:`Rule` objects. Each rule names a set of
modules by a *pattern* and sets the schemes (a :class:`QuantizerConfig`) of some of the
three *roles* a module can have:

* ``weight``: the module's ``weight`` parameter, quantized before the module uses it;
* ``input``: the first positional tensor argument of the module's forward;
* ``output``: the tensor the module returns;
* ``query``, ``key``, ``scores``, ``attention``, ``value``, ``context``: the operands of an
  ``nn.MultiheadAttention``'s two matmuls, the softmax input and the input of its out-projection
  (:mod:`quant.sim.attention`; they default to its input scheme);
* ``gates``, ``cell``, ``hidden``: an ``nn.LSTM``'s or ``nn.GRU``'s gate pre-activations, cell
  state and hidden state, per time step (:mod:`quant.sim.recurrent`).

Patterns are either a glob over qualified module names as ``model.named_modules()``
spells them (``fnmatch`` syntax, case-sensitive: ``"*"``, ``"layer1.*"``,
``"features.[0-3]"``), an exact module name (a pattern without ``*?[``), or a module
type (``nn.Linear``, matched with ``isinstance``). Rules apply in order and a later
rule overrides an earlier one *per role*, so mixed precision is a recipe::

    {"*": {"weight": w4, "input": a4}, "fc": {"weight": w8, "input": a8}}

quantizes every Conv/Linear with 4 bits except ``fc``, which gets 8. A rule may also
*exclude* modules (``None`` as the value in :meth:`Recipe.from_dict`): it removes every
role assigned so far to the modules it matches, so ``{"*": w4a4, "conv1": None}`` keeps
the first layer in float.

Which module can take which role (``isinstance``, so subclasses count):

* :data:`WEIGHT_MODULES` (Conv1d/2d/3d and ConvTranspose1d/2d/3d with any ``groups``,
  Linear, and LayerNorm/GroupNorm with affine parameters): weight, input and output. Under a
  glob or type rule a LayerNorm's or GroupNorm's gain takes the rule's weight scheme at 8 bits
  when it is narrower (a few sensitive values; the integer LayerNorm holds int8 gains); a rule
  naming the module gives it exactly what it says. A
  transposed convolution's weight is ``(C_in, C_out/groups, k...)``: per-output-channel
  schemes are ``axis=1`` there, and a glob or type rule's per-channel ``axis=0`` scheme is
  taken on ``axis=1`` for it (per input channel is valid but no datapath sums it: a rule
  naming the module can still ask for it). The
  out-projection of an ``nn.MultiheadAttention`` takes the weight role only (the attention
  reads its weight directly); when a rule gives the attention a weight scheme and no rule
  names or excludes the out-projection, it takes the attention's weight scheme;
* :data:`WEIGHT_ONLY_MODULES` (Embedding, EmbeddingBag: their input is indices): weight
  only, per row with ``granularity="channel", axis=0`` or per group along ``axis=1``;
* :data:`ACTIVATION_MODULES` (ReLU, ReLU6, LeakyReLU, Hardswish, Hardsigmoid, GELU,
  SiLU, Sigmoid, Tanh): input and output. ``nn.Identity`` is deliberately absent: it
  stands in for removed layers (e.g. a folded BatchNorm), and quantizing it would
  quantize the previous layer's output twice;
* everything else (BatchNorm, pooling, containers, ...): none.

A glob or type pattern applies to the modules it matches that can take *all* the roles
its rule sets and silently skips the others, so ``"*"`` with weight and input schemes
quantizes every Conv/Linear and leaves BatchNorm and containers alone, while ``"*"``
with only an output scheme also catches the activations. Mind the cost of a ``"*"`` rule with
only an input scheme: it catches the activation modules too, so each ReLU's or Hardswish's input is
quantized besides the next layer's, one more pass over every activation (on a MobileNetV2-style
net a training step of 1.58x float against 1.28x with weight and input schemes together); give
such a rule a weight scheme too, or name the types (``nn.Conv2d``, ``nn.Linear``). :meth:`Recipe.resolve`
raises ``ValueError`` before anything is attached when a pattern applies to no module,
when an exact module name exists but cannot take its roles, and when a weight scheme's
``axis`` or ``group_size`` does not fit that module's weight.

>>> import torch.nn as nn
>>> from quant.contract.spec import QuantSpec
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
>>> w4 = QuantSpec(bits=4, granularity="channel", axis=0)
>>> recipe = Recipe.from_dict({"*": {"weight": w4}, nn.Linear: {"weight": QuantSpec(bits=8)}})
>>> {name: {role: cfg.spec.bits for role, cfg in roles.items()} for name, roles in recipe.resolve(model).items()}
{'0': {'weight': 4}, '4': {'weight': 8}}
>>> Recipe.from_dict({"*": {"bias": w4}})
Traceback (most recent call last):
...
ValueError: recipe rule '*': unknown role 'bias'; allowed roles are 'weight', 'input', 'output', 'query', 'key', 'scores', 'attention', 'value', 'context', 'gates', 'cell', 'hidden'
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from quant.sim.observers import OBSERVERS, make_observer
from quant.sim.a2q import check_a2q_spec
from quant.sim.quantizer import LEARN_MODES
from quant.contract.accumulator import AccumulatorTarget
from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec

__all__ = [
    "datapath_recipe",
    "ROLES",
    "BASE_ROLES",
    "ATTENTION_ROLES",
    "RECURRENT_ROLES",
    "WEIGHT_MODULES",
    "ACTIVATION_MODULES",
    "WEIGHT_ONLY_MODULES",
    "QuantizerConfig",
    "Rule",
    "Recipe",
    "RecipeLike",
    "ResolvedRecipe",
    "module_roles",
    "roles_in_model",
    "SkippedModule",
    "skipped_modules",
]

#: The roles of every quantizable module: its weight, its (first) input, its output.
BASE_ROLES: tuple[str, ...] = ("weight", "input", "output")
#: The further roles of an ``nn.MultiheadAttention``: the operands of its two matmuls and the input of its
#: out-projection (:mod:`quant.sim.attention`).
ATTENTION_ROLES: tuple[str, ...] = ("query", "key", "scores", "attention", "value", "context")
#: The further roles of an ``nn.LSTM``/``nn.GRU`` (:mod:`quant.sim.recurrent`; a GRU has no cell).
RECURRENT_ROLES: tuple[str, ...] = ("gates", "cell", "hidden")
ROLES: tuple[str, ...] = BASE_ROLES + ATTENTION_ROLES + RECURRENT_ROLES

WEIGHT_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.LayerNorm,
    nn.GroupNorm,
)
#: Modules whose input is not a real-valued tensor (indices): the weight is their only role.
WEIGHT_ONLY_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
)

_ALL_ROLES = frozenset(BASE_ROLES)
_ATTENTION_ROLES = frozenset(BASE_ROLES + ATTENTION_ROLES)
_LSTM_ROLES = frozenset(BASE_ROLES + RECURRENT_ROLES)
_GRU_ROLES = _LSTM_ROLES - {"cell"}
_ACTIVATION_ROLES = frozenset(("input", "output"))
_WEIGHT_ROLE = frozenset(("weight",))
_NO_ROLES: frozenset[str] = frozenset()

Pattern = Union[str, type]


def module_roles(module: nn.Module) -> frozenset[str]:
    """The roles ``module`` can take: all three, input/output, the weight alone, or none.

    >>> sorted(module_roles(nn.Linear(2, 2))), sorted(module_roles(nn.ReLU())), sorted(module_roles(nn.BatchNorm1d(2)))
    (['input', 'output', 'weight'], ['input', 'output'], [])
    >>> sorted(module_roles(nn.Embedding(10, 4))), sorted(module_roles(nn.LayerNorm(4, elementwise_affine=False)))
    (['weight'], ['input', 'output'])
    """
    if isinstance(module, nn.MultiheadAttention):
        return _ATTENTION_ROLES
    if isinstance(module, nn.LSTM):
        return _LSTM_ROLES if module.proj_size == 0 else _NO_ROLES
    if isinstance(module, nn.GRU):
        return _GRU_ROLES
    if isinstance(module, nn.LSTMCell):
        return _LSTM_ROLES - {"output"}
    if isinstance(module, nn.GRUCell):
        return _GRU_ROLES - {"output"}
    has_weight = isinstance(getattr(module, "weight", None), torch.Tensor)
    if isinstance(module, WEIGHT_MODULES):
        return _ALL_ROLES if has_weight else _ACTIVATION_ROLES  # a LayerNorm without affine parameters
    if isinstance(module, WEIGHT_ONLY_MODULES):
        return _WEIGHT_ROLE
    if isinstance(module, ACTIVATION_MODULES):
        return _ACTIVATION_ROLES
    return _NO_ROLES


def roles_in_model(model: nn.Module) -> dict[str, frozenset[str]]:
    """:func:`module_roles` of every module of ``model`` by name, less the roles its parent makes unreachable:
    ``nn.MultiheadAttention`` reads its ``out_proj``'s weight but never calls its forward, so that
    Linear takes the weight role only (an input or output quantizer there would never see data)."""
    roles = {name: module_roles(module) for name, module in model.named_modules()}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            child = f"{name}.out_proj" if name else "out_proj"
            if child in roles:
                roles[child] = roles[child] & _WEIGHT_ROLE
    return roles


def _freeze_kwargs(value: object) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = []
        for pair in value:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(
                    f"QuantizerConfig.observer_kwargs must be a mapping or a sequence of (name, value) pairs, got {value!r}"
                )
            items.append((pair[0], pair[1]))
    else:
        raise ValueError(
            f"QuantizerConfig.observer_kwargs must be a mapping or a sequence of (name, value) pairs, got {value!r}"
        )
    for key, _ in items:
        if not isinstance(key, str):
            raise ValueError(f"QuantizerConfig.observer_kwargs keys must be strings, got {key!r}")
    if len({k for k, _ in items}) != len(items):
        raise ValueError(f"QuantizerConfig.observer_kwargs has a repeated key in {value!r}")
    return tuple(sorted(items, key=lambda kv: kv[0]))


@dataclass(frozen=True)
class QuantizerConfig:
    """Everything needed to build one ``Quantizer``: scheme, observer and learning mode.

    ``observer`` is a name registered in :data:`quant.sim.observers.OBSERVERS`; ``learn`` is
    one of :data:`quant.sim.quantizer.LEARN_MODES` (``"pact"`` is for activations only and ``"a2q"`` for
    weights only, which :class:`Rule` checks). ``accumulator`` is the target of ``learn="a2q"``
    (:mod:`quant.sim.a2q`: the accumulator width and the input codes it must hold every product sum of;
    ``AccumulatorTarget.of(datapath)`` takes them from a datapath) and is required by it and refused by the
    other modes. ``observer_kwargs`` may be given as a mapping; it is stored as
    a tuple of ``(name, value)`` pairs sorted by name so the config stays immutable and
    hashable, and is checked by building the observer once.

    >>> cfg = QuantizerConfig(QuantSpec(bits=4), observer="percentile", observer_kwargs={"percentile": 99.9})
    >>> cfg.observer_kwargs
    (('percentile', 99.9),)
    >>> cfg.describe()
    'int4 sym per-tensor half_even, observer=percentile(percentile=99.9)'
    >>> QuantizerConfig(QuantSpec(), learn="adaround")
    Traceback (most recent call last):
    ...
    ValueError: QuantizerConfig.learn='adaround' is not one of 'none', 'lsq', 'pact', 'a2q'
    >>> a2q = QuantizerConfig(QuantSpec(bits=4, granularity="channel", axis=0), learn="a2q",
    ...                       accumulator=AccumulatorTarget(acc_bits=12, input_bits=4, input_signed=False))
    >>> a2q.describe()
    'int4 sym per-channel(0) half_even, learn=a2q(acc12 for uint4 inputs with a zero point (||q||_1 <= 136))'
    >>> QuantizerConfig(QuantSpec(bits=4, granularity="channel", axis=0), learn="a2q")
    Traceback (most recent call last):
    ...
    ValueError: QuantizerConfig.learn='a2q' needs accumulator=AccumulatorTarget(acc_bits=..., input_bits=..., input_signed=...), the accumulator whose overflow it rules out
    """

    spec: QuantSpec
    observer: str = "minmax"
    learn: str = "none"
    observer_kwargs: tuple[tuple[str, Any], ...] = field(default=())
    accumulator: Optional[AccumulatorTarget] = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, QuantSpec):
            raise ValueError(f"QuantizerConfig.spec must be a QuantSpec, got {type(self.spec).__name__}")
        if self.observer not in OBSERVERS:
            raise ValueError(
                f"QuantizerConfig.observer={self.observer!r} is not one of {', '.join(map(repr, OBSERVERS))}"
            )
        if self.learn not in LEARN_MODES:
            raise ValueError(
                f"QuantizerConfig.learn={self.learn!r} is not one of {', '.join(map(repr, LEARN_MODES))}"
            )
        if self.learn == "a2q" and self.accumulator is None:
            raise ValueError("QuantizerConfig.learn='a2q' needs accumulator=AccumulatorTarget(acc_bits=..., "
                             "input_bits=..., input_signed=...), the accumulator whose overflow it rules out")  # fmt: skip
        if self.accumulator is not None and not isinstance(self.accumulator, AccumulatorTarget):
            raise ValueError(f"QuantizerConfig.accumulator={self.accumulator!r} must be an AccumulatorTarget or None")
        if self.accumulator is not None and self.learn != "a2q":
            raise ValueError(f"QuantizerConfig.accumulator is only for learn='a2q', not learn={self.learn!r}")
        if self.learn == "a2q":
            check_a2q_spec(self.spec, "QuantizerConfig.spec")
        object.__setattr__(self, "observer_kwargs", _freeze_kwargs(self.observer_kwargs))
        if self.observer_kwargs:
            try:
                make_observer(self.observer, self.spec, **dict(self.observer_kwargs))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"QuantizerConfig.observer_kwargs={dict(self.observer_kwargs)!r} for observer {self.observer!r}: {exc}"
                ) from None

    @classmethod
    def of(cls, value: "QuantSpec | QuantizerConfig") -> "QuantizerConfig":
        """``value`` itself if it is a config, else a default config around the spec."""
        if isinstance(value, QuantizerConfig):
            return value
        if isinstance(value, QuantSpec):
            return cls(value)
        raise TypeError(f"expected a QuantSpec or a QuantizerConfig, got {type(value).__name__}")

    def describe(self) -> str:
        """The spec's description, plus the observer and learning mode when not the defaults."""
        parts = [self.spec.describe()]
        if self.observer != "minmax" or self.observer_kwargs:
            kw = ", ".join(f"{k}={v!r}" for k, v in self.observer_kwargs)
            parts.append(f"observer={self.observer}" + (f"({kw})" if kw else ""))
        if self.accumulator is not None:
            parts.append(f"learn=a2q({self.accumulator.describe()})")
        elif self.learn != "none":
            parts.append(f"learn={self.learn}")
        return ", ".join(parts)


def _describe_pattern(pattern: Pattern) -> str:
    return pattern.__name__ if isinstance(pattern, type) else repr(pattern)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass(frozen=True)
class Rule:
    """One recipe entry: a pattern and the schemes it sets (or ``exclude=True``).

    ``pattern`` is a glob or exact name over ``named_modules()`` names, or an
    ``nn.Module`` subclass. Each role is a :class:`QuantizerConfig`, a bare
    :class:`QuantSpec` (wrapped with the default observer), or ``None`` (not set by this
    rule). A rule sets at least one role, or has ``exclude=True`` and none.

    >>> Rule("fc", weight=QuantSpec(bits=8)).roles["weight"].spec.bits
    8
    >>> Rule("*")
    Traceback (most recent call last):
    ...
    ValueError: Rule('*') sets no role: give weight, input or output, or exclude=True
    """

    pattern: Pattern
    weight: Optional[QuantizerConfig] = None
    input: Optional[QuantizerConfig] = None
    output: Optional[QuantizerConfig] = None
    query: Optional[QuantizerConfig] = None
    key: Optional[QuantizerConfig] = None
    scores: Optional[QuantizerConfig] = None
    attention: Optional[QuantizerConfig] = None
    value: Optional[QuantizerConfig] = None
    context: Optional[QuantizerConfig] = None
    gates: Optional[QuantizerConfig] = None
    cell: Optional[QuantizerConfig] = None
    hidden: Optional[QuantizerConfig] = None
    exclude: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) and not (isinstance(self.pattern, type) and issubclass(self.pattern, nn.Module)):
            raise ValueError(
                f"Rule.pattern={self.pattern!r} must be a module-name pattern (str) or an nn.Module subclass"
            )
        for role in ROLES:
            value = getattr(self, role)
            if value is not None:
                try:
                    object.__setattr__(self, role, QuantizerConfig.of(value))
                except TypeError as exc:
                    raise ValueError(f"Rule.{role} for {_describe_pattern(self.pattern)}: {exc}") from None
        if not isinstance(self.exclude, bool):
            raise ValueError(f"Rule.exclude={self.exclude!r} must be a bool")
        if self.exclude and self.roles:
            raise ValueError(f"Rule({_describe_pattern(self.pattern)}) has exclude=True and also sets roles")
        if not self.exclude and not self.roles:
            raise ValueError(
                f"Rule({_describe_pattern(self.pattern)}) sets no role: give weight, input or output, or exclude=True"
            )
        if self.weight is not None and self.weight.learn == "pact":
            raise ValueError(
                f"Rule.weight.learn='pact' for {_describe_pattern(self.pattern)}: PACT clips activations; "
                "use learn='none' or 'lsq' for weights"
            )
        for role in ROLES:
            config = getattr(self, role)
            if role != "weight" and config is not None and config.learn == "a2q":
                raise ValueError(f"Rule.{role}.learn='a2q' for {_describe_pattern(self.pattern)}: A2Q bounds weight "
                                 "codes; give it to the weight role only")  # fmt: skip

    @property
    def roles(self) -> dict[str, QuantizerConfig]:
        """The roles this rule sets, in :data:`ROLES` order."""
        out: dict[str, QuantizerConfig] = {}
        for role in ROLES:
            value = getattr(self, role)
            if value is not None:
                out[role] = value
        return out

    def matches(self, name: str, module: nn.Module) -> bool:
        """Whether the pattern names this module (ignoring which roles it can take)."""
        if isinstance(self.pattern, str):
            return fnmatch.fnmatchcase(name, self.pattern)
        return isinstance(module, self.pattern)

    @property
    def is_exact_name(self) -> bool:
        """True for a string pattern without glob characters."""
        return isinstance(self.pattern, str) and not _is_glob(self.pattern)


ResolvedRecipe = dict[str, dict[str, QuantizerConfig]]
"""Module name -> {role: QuantizerConfig}, in ``named_modules()`` order, roles in ROLES order."""


def _module_label(name: str) -> str:
    return repr(name) if name else "'' (the root module)"


def _weight_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape of the weight a weight scheme quantizes (an attention's in-projection, or query projection)."""
    name = "weight"
    if isinstance(module, nn.MultiheadAttention):
        name = "in_proj_weight" if module._qkv_same_embed_dim else "q_proj_weight"
    elif isinstance(module, (nn.LSTM, nn.GRU)):
        name = "weight_ih_l0"
    elif isinstance(module, (nn.LSTMCell, nn.GRUCell)):
        name = "weight_ih"
    if parametrize.is_parametrized(module, name):
        weight = getattr(module.parametrizations, name).original
    else:
        weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"module of type {type(module).__name__} has no weight")
    return tuple(weight.shape)


def _check_weight_fits(name: str, module: nn.Module, spec: QuantSpec, pattern: Pattern) -> None:
    if spec.granularity == "tensor":
        return
    shape = _weight_shape(module)
    nd = len(shape)
    where = (
        f"recipe rule {_describe_pattern(pattern)}: module {_module_label(name)} "
        f"({parametrize.type_before_parametrizations(module).__name__}, weight shape {shape})"
    )
    assert spec.axis is not None
    if not -nd <= spec.axis < nd:
        raise ValueError(f"{where}: weight QuantSpec.axis={spec.axis} is out of range for {nd} dimensions")
    if spec.granularity == "group":
        assert spec.group_size is not None
        size = shape[spec.axis % nd]
        if size % spec.group_size != 0:
            raise ValueError(
                f"{where}: weight QuantSpec.group_size={spec.group_size} does not divide "
                f"dimension {spec.axis % nd} of size {size}"
            )


@dataclass(frozen=True)
class Recipe:
    """An ordered tuple of :class:`Rule`; later rules override earlier ones per role."""

    rules: tuple[Rule, ...]
    #: Functional ops quantized wherever the forward calls them (:mod:`quant.sim.functions`): canonical name
    #: ("matmul", "bmm", "softmax") -> {role ("input" or "output"): config}.
    functions: Mapping[str, Mapping[str, QuantizerConfig]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rules = tuple(self.rules) if isinstance(self.rules, (list, tuple)) else None
        if rules is None:
            raise ValueError(f"Recipe.rules must be a tuple of Rule, got {type(self.rules).__name__}")
        for rule in rules:
            if not isinstance(rule, Rule):
                raise ValueError(f"Recipe.rules must contain Rule objects, got {type(rule).__name__}")
        if not rules and not self.functions:
            raise ValueError("Recipe.rules is empty: a recipe needs at least one rule")
        object.__setattr__(self, "rules", rules)

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any]) -> "Recipe":
        """Build a recipe from ``{pattern: {role: QuantSpec | QuantizerConfig}}`` in dict order.

        A value of ``None`` instead of a role dict makes an exclusion rule. Unknown role
        keys raise ``ValueError`` naming the key and the allowed roles.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Recipe.from_dict expects a mapping, got {type(d).__name__}")
        from quant.sim.functions import function_name

        rules = []
        functions: dict[str, dict[str, QuantizerConfig]] = {}
        for pattern, roles in d.items():
            fname = function_name(pattern)
            label = repr(fname) if fname else _describe_pattern(pattern)
            if fname is not None:  # a functional op (torch.matmul, torch.bmm, F.softmax)
                if not isinstance(roles, Mapping) or not roles or set(roles) - {"input", "output"}:
                    raise ValueError(f"recipe rule {label}: a function rule takes a dict of the roles 'input' "
                                     f"(its floating operands) and 'output', got {roles!r}")  # fmt: skip
                functions.setdefault(fname, {}).update(
                    {role: QuantizerConfig.of(v) for role, v in roles.items() if v is not None}
                )
                continue
            if roles is None:
                rules.append(Rule(pattern, exclude=True))
                continue
            if not isinstance(roles, Mapping):
                raise TypeError(
                    f"recipe rule {label}: expected a dict of roles ({', '.join(map(repr, ROLES))}) or None, "
                    f"got {type(roles).__name__}"
                )
            for key in roles:
                if key not in ROLES:
                    raise ValueError(
                        f"recipe rule {label}: unknown role {key!r}; allowed roles are {', '.join(map(repr, ROLES))}"
                    )
            rules.append(Rule(pattern, **{k: v for k, v in roles.items() if v is not None}))
        return cls(tuple(rules), functions)

    @classmethod
    def of(cls, recipe: "RecipeLike") -> "Recipe":
        """``recipe`` itself, or :meth:`from_dict` of it."""
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, Mapping):
            return cls.from_dict(recipe)
        raise TypeError(f"recipe must be a Recipe or a dict, got {type(recipe).__name__}")

    def resolve(self, model: nn.Module) -> ResolvedRecipe:
        """Assign configs to modules; raise ``ValueError`` for rules that cannot apply.

        Returns an ordered mapping module name -> {role: QuantizerConfig}, in
        ``model.named_modules()`` order. A module reachable under several names (one
        module object registered twice) is listed once, under its first name; a rule that
        matches any of its names applies to it. Modules left with no role are absent.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        modules = list(model.named_modules())
        first_name = {id(m): n for n, m in modules}
        every_name = list(model.named_modules(remove_duplicate=False))
        capable = roles_in_model(model)
        assigned: dict[str, dict[str, QuantizerConfig]] = {}
        excluded: set[str] = set()  # by an exclusion rule, last
        exact_named: set[str] = set()  # named by a rule of their own
        for rule in self.rules:
            label = _describe_pattern(rule.pattern)
            wanted = frozenset(rule.roles)
            matched_names = {first_name[id(m)] for n, m in every_name if rule.matches(n, m)}
            matched = [(n, m) for n, m in modules if n in matched_names]
            if rule.exclude:  # a module with roles, or with weights of its own (kept float knowingly: not reported)
                applicable = [(n, m) for n, m in matched if capable[n] or _has_own_parameters(m)]
                needs = "any role"
            else:
                applicable = [(n, m) for n, m in matched if wanted <= capable[n]]
                needs = "role" + ("s " if len(wanted) > 1 else " ") + ", ".join(r for r in ROLES if r in wanted)
            if not applicable:
                raise ValueError(self._no_module_message(rule, label, matched, modules, needs, capable))
            for name, module in applicable:
                if rule.is_exact_name:
                    exact_named.add(name)
                if rule.exclude:
                    assigned.pop(name, None)
                    excluded.add(name)
                    continue
                excluded.discard(name)
                if rule.weight is not None:
                    _check_weight_fits(name, module, rule.weight.spec, rule.pattern)
                roles = dict(rule.roles)
                weight = roles.get("weight")
                if (weight is not None and not rule.is_exact_name and isinstance(module, _AFFINE_NORMALIZATIONS)
                        and weight.spec.bits < NORM_WEIGHT_BITS):  # fmt: skip
                    roles["weight"] = replace(weight, spec=weight.spec.with_(bits=NORM_WEIGHT_BITS))
                if (weight is not None and not rule.is_exact_name and isinstance(module, nn.modules.conv._ConvTransposeNd)
                        and weight.spec.granularity == "channel" and weight.spec.axis == 0):  # fmt: skip
                    roles["weight"] = replace(weight, spec=weight.spec.with_(axis=1))  # per output channel
                assigned.setdefault(name, {}).update(roles)
        named = dict(modules)
        for name, module in modules:  # an attention's out-projection under a glob: the attention's weight scheme
            out = f"{name}.out_proj" if name else "out_proj"
            if (isinstance(module, nn.MultiheadAttention) and "weight" in assigned.get(name, {})
                    and "weight" not in assigned.get(out, {}) and out in named and out not in excluded
                    and out not in exact_named):  # fmt: skip
                assigned.setdefault(out, {})["weight"] = assigned[name]["weight"]
        return {
            name: {role: assigned[name][role] for role in ROLES if role in assigned[name]}
            for name, _ in modules
            if assigned.get(name)
        }

    @staticmethod
    def _no_module_message(
        rule: Rule,
        label: str,
        matched: list[tuple[str, nn.Module]],
        modules: list[tuple[str, nn.Module]],
        needs: str,
        capable: Mapping[str, frozenset[str]],
    ) -> str:
        if rule.is_exact_name and matched:
            name, module = matched[0]
            kind = parametrize.type_before_parametrizations(module).__name__
            can = sorted(capable[name], key=ROLES.index)
            why = ""
            if capable[name] != module_roles(module):
                why = "; the MultiheadAttention that owns it reads its weight directly and never calls its forward"
            return (
                f"recipe rule {label}: module {_module_label(name)} of type {kind} cannot take {needs} "
                f"(it can take: {', '.join(can) if can else 'no role'}{why})"
            )
        names = [n for n, _ in modules if n]
        if isinstance(rule.pattern, str):
            close = difflib.get_close_matches(rule.pattern, names, n=5, cutoff=0.5) or names[:5]
        else:
            close = names[:5]
        hint = f"; some module names: {', '.join(map(repr, close))}" if close else ""
        if matched:
            kinds = sorted({parametrize.type_before_parametrizations(m).__name__ for _, m in matched})
            return (
                f"recipe rule {label} applies to no module: it matches {len(matched)} module(s) "
                f"({', '.join(kinds)}) but none can take {needs}{hint}"
            )
        return f"recipe rule {label} applies to no module: no module name or type matches it{hint}"


@dataclass(frozen=True)
class SkippedModule:
    """A module with weights of its own that a glob or type rule matched but left in float, and why."""

    name: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{repr(self.name) if self.name else 'the model'} ({self.kind}): {self.reason}"


#: Normalizations whose affine weight a glob or type rule quantizes at :data:`NORM_WEIGHT_BITS` at least.
_AFFINE_NORMALIZATIONS = (nn.LayerNorm, nn.GroupNorm)
#: The narrowest weight scheme a glob or type rule gives a LayerNorm's or GroupNorm's gain.
NORM_WEIGHT_BITS = 8
_NORMALIZATIONS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def _why_float(module: nn.Module, can: frozenset[str], wanted: frozenset[str]) -> str:
    kind = parametrize.type_before_parametrizations(module).__name__
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "a BatchNorm: fold it into the conv or linear before it (quant.fold_bn) to quantize it with that layer"
    if can != module_roles(module):
        return ("the MultiheadAttention that owns it reads its weight directly and never calls its forward, so it "
                "takes the weight role only: give it a rule with only a weight scheme")  # fmt: skip
    if can:
        have = ", ".join(r for r in ROLES if r in can)
        want = ", ".join(r for r in ROLES if r in wanted)
        return f"{kind} takes only the roles {have}, and the rule sets {want}: give it a rule of its own"
    if isinstance(module, _NORMALIZATIONS):
        return f"{kind} is a normalization the simulation does not quantize yet"
    if not type(module).__module__.startswith("torch."):
        own = ", ".join(n for n, p in module._parameters.items() if p is not None)
        return (f"its own parameters ({own}) are read by its forward directly, which fast simulation leaves float "
                "(the integer program quantizes a parameter added to a tensor as constant codes)")  # fmt: skip
    return f"{kind} has no quantization support yet: its weights stay float"


def skipped_modules(model: nn.Module, recipe: "Recipe", resolved: ResolvedRecipe) -> list[SkippedModule]:
    """The modules with parameters of their own that a glob or type rule of ``recipe`` matched but that
    ``resolved`` leaves without a weight quantizer (an exclusion rule's modules excepted), in
    ``named_modules()`` order: what ``attach`` reports rather than leave float silently."""
    excluded: set[str] = set()
    matched: dict[str, frozenset[str]] = {}
    for name, module in model.named_modules():
        if not _has_own_parameters(module) or _is_machinery(name):
            continue
        for rule in recipe.rules:
            if not rule.matches(name, module):
                continue
            if rule.exclude:
                excluded.add(name)
            elif not rule.is_exact_name:
                matched[name] = matched.get(name, frozenset()) | frozenset(rule.roles)
    named = dict(model.named_modules())
    capable = roles_in_model(model)
    return [
        SkippedModule(name, parametrize.type_before_parametrizations(named[name]).__name__,
                      _why_float(named[name], capable[name], roles))  # fmt: skip
        for name, roles in matched.items()
        if name not in excluded and "weight" not in resolved.get(name, {})
        and ("weight" in roles or not resolved.get(name))
    ]


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _is_machinery(name: str) -> bool:
    """Parametrization and quantizer submodules, which hold the quantized modules' own tensors."""
    parts = name.split(".")
    return "parametrizations" in parts or any(p in ("input_quantizer", "output_quantizer") for p in parts)


RecipeLike = Union[Recipe, Mapping[Any, Any]]
"""A :class:`Recipe`, or the dict :meth:`Recipe.from_dict` takes: ``{pattern: {role:
QuantSpec | QuantizerConfig} | None}`` (typed loosely so that any ``dict[str, ...]`` fits)."""


def datapath_recipe(datapath: Datapath) -> dict[str, dict[str, QuantSpec]]:
    """The natural recipe that fits ``datapath``: every Conv/Linear with per-output-channel symmetric
    weights and per-tensor activations of the datapath's widths and signedness (asymmetric where it has
    activation zero points), power-of-two scales on a ``pow2`` datapath.

    >>> r = datapath_recipe(Datapath.preset("w4a4_acc16_sat"))["*"]
    >>> r["weight"].describe(), r["input"].describe()
    ('int4 sym per-channel(0) half_even', 'uint4 asym per-tensor half_even')
    """
    scale = "pow2" if datapath.requant == "pow2" else "float"
    weight = QuantSpec(bits=datapath.w_bits, signed=datapath.w_signed, symmetric=True, granularity="channel", axis=0,
                       scale=scale)  # fmt: skip
    activation = QuantSpec(bits=datapath.a_bits, signed=datapath.a_signed, symmetric=not datapath.a_zero_point,
                           scale=scale)  # fmt: skip
    return {"*": {"weight": weight, "input": activation}}
