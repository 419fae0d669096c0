"""``attach(model, recipe)``: quantize an unmodified model through hooks, reversibly.

``attach`` resolves the recipe (see :mod:`quant.sim.recipe`), lets the chosen simulation
mode (:mod:`quant.sim.modes`; ``fast`` by default, :mod:`quant.sim.fast`) check every module
and then wire its quantizers, and returns a :class:`QuantHandle`. ``repr(model)`` shows each
quantizer beside its module; ``copy.deepcopy`` of ``(model, handle)`` together gives a working
handle for the copy. :meth:`QuantHandle.remove` takes everything off again: forward outputs
and ``state_dict`` (keys, order and values) are then bit-identical to the float model's
before ``attach``, and every Parameter is still the object an optimizer built before
``attach`` holds.

>>> import torch, torch.nn as nn
>>> from quant.contract.spec import QuantSpec
>>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
>>> handle = attach(model, {"0": {"weight": QuantSpec(bits=4), "input": QuantSpec(bits=8)}})
>>> handle
QuantHandle(mode='fast', 1 module:
  '0' (Linear): weight=int4 sym per-tensor half_even; input=int8 sym per-tensor half_even)
>>> with torch.no_grad(), handle.calibrate():
...     _ = model(torch.randn(16, 4))
>>> [(name, role) for name, role, _ in handle.quantizers()]
[('0', 'weight'), ('0', 'input')]
>>> handle.remove()
>>> type(model[0]).__name__, list(model.state_dict())
('Linear', ['0.weight', '0.bias'])
"""

from __future__ import annotations

import contextlib
import copy
from types import MappingProxyType
import warnings
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

import quant.sim.fast  # noqa: F401  (registers the built-in "fast" mode)
from quant.contract.datapath import Datapath
from quant.sim.edges import EdgeRecorder
from quant.sim.fast import build_quantizer
from quant.sim.functions import FunctionAttachment, attach_functions
from quant.sim.exact import ExactSimulation
from quant.sim.modes import MODES, ModuleAttachment
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig, Recipe, RecipeLike, SkippedModule, skipped_modules

__all__ = ["QuantHandle", "attach"]


def _device_of(module: nn.Module, model: nn.Module) -> Optional[torch.device]:
    for t in module.parameters(recurse=False):
        return t.device
    for t in model.parameters():
        return t.device
    return None



# --------------------------------------------------------------------------- one tensor per forward
# Module-level hooks on the quantized model (not closures), so that a deepcopy of the model carries hooks
# that act on the copy's own quantizers.


#: The model attribute listing its once-per-forward quantizers (a plain list: a deepcopy of the model maps it
#: to the copy's own quantizers), so the hooks do not walk every module on every forward.
_GUARDED = "_quant_once_per_forward"


def _guarded(model: nn.Module) -> list[Quantizer]:
    found: list[Quantizer] = model.__dict__.get(_GUARDED, [])
    return found


def _begin_forward(model: nn.Module, args: tuple[object, ...]) -> None:
    """Forward pre-hook of the model: every input/output quantizer starts counting its tensors."""
    for q in _guarded(model):
        q._calls, q._counting = 0, True


def _end_forward(model: nn.Module, args: tuple[object, ...], output: object) -> None:
    """Forward hook of the model (always called, on an exception too): counting stops."""
    for q in _guarded(model):
        q._counting = False


def _install_call_guard(model: nn.Module, attachments: Mapping[str, ModuleAttachment]) -> list[Quantizer]:
    """Give each once-per-forward quantizer its site and, if there is any, hook the model's forward; the
    quantizers guarded (none: nothing was hooked)."""
    guarded = []
    for name, a in attachments.items():
        for key, q in a.quantizers.items():
            if not key.startswith("weight") and not q.per_step:
                q.site = (name, key)
                guarded.append(q)
    if guarded:  # weight-only recipes add no work to the forward
        model.__dict__.setdefault(_GUARDED, []).extend(guarded)
        model.register_forward_pre_hook(_begin_forward)
        model.register_forward_hook(_end_forward, always_call=True)
    return guarded


def _remove_call_guard(model: nn.Module, guarded: list[Quantizer]) -> None:
    """Take one registration of each guard hook off the model (another handle may hold its own), and the
    ``guarded`` quantizers off its list."""
    for hooks, fn in ((model._forward_pre_hooks, _begin_forward), (model._forward_hooks, _end_forward)):
        for key in [k for k, v in hooks.items() if v is fn][-1:]:
            del hooks[key]
            model._forward_hooks_always_called.pop(key, None)
    mine = {id(q) for q in guarded}
    rest = [q for q in _guarded(model) if id(q) not in mine]
    if rest:
        model.__dict__[_GUARDED] = rest
    else:
        model.__dict__.pop(_GUARDED, None)


# --------------------------------------------------------------------------- the handle


def _snapshot(module: nn.Module) -> dict[str, object]:
    """A detached copy of ``module.state_dict()`` (tensors cloned)."""
    return {
        k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in module.state_dict().items()
    }


class QuantHandle:
    """The quantizers ``attach`` added to one model, with their common state machine.

    Each quantizer has three flags (see ``Quantizer``): ``enabled`` (off: identity),
    ``observing`` (update the observer in forward) and ``quantizing`` (off: pass the
    float value through). Right after ``attach`` all three are on (QAT-style: observe,
    then fake-quantize with the updated parameters). Handle methods set them on every
    quantizer at once:

    ===============  ===========================================================
    ``calibrate()``  inside: observing, not quantizing (float pass-through); on a
                     normal exit ``compute_qparams()`` then observing off,
                     quantizing on. If the body raises, every quantizer is put
                     back exactly as it was on entry.
    ``freeze()``     ``Quantizer.freeze()``: stop observing; parameters fixed.
    ``enable()``     ``enabled = True``;  ``disable()``: ``enabled = False``.
    ``remove()``     take everything off; the handle is then spent (a second
                     ``remove()`` does nothing, any other method raises).
    ===============  ===========================================================
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        attachments: Mapping[str, ModuleAttachment],
        skipped: Sequence[SkippedModule] = (),
        guarded: Sequence[Quantizer] = (),
        functions: Optional[FunctionAttachment] = None,
    ) -> None:
        self.model = model
        self.mode = mode
        self._attachments = dict(attachments)
        #: Modules with weights that a glob or type rule matched but left float, and why (attach warns once).
        self.skipped: tuple[SkippedModule, ...] = tuple(skipped)
        self._guarded = list(guarded)  # what it hooked the model's forward to guard (one tensor per forward)
        #: The functional-op call sites (:mod:`quant.sim.functions`), their quantizers named "<functions>".
        self.functions = functions
        self._removed = False
        #: What ``calibrate()`` observed of every tensor the forward materializes (:mod:`quant.sim.edges`);
        #: None before the first calibration or when the recipe has no activation scheme.
        self.edges: Optional[EdgeRecorder] = None
        self._exact: Optional[ExactSimulation] = None

    @property
    def activation_config(self) -> Optional[QuantizerConfig]:
        """The scheme of materialized tensors no quantizer covers: the first ``input`` scheme of the recipe."""
        for a in self._attachments.values():
            if "input" in a.configs:
                return a.configs["input"]
        return None

    # ----------------------------------------------------------------- views
    @property
    def removed(self) -> bool:
        """True after :meth:`remove`."""
        return self._removed

    @property
    def modules(self) -> Mapping[str, nn.Module]:
        """Quantized modules by qualified name, in ``named_modules()`` order."""
        return MappingProxyType({name: a.module for name, a in self._attachments.items()})

    @property
    def configs(self) -> Mapping[str, Mapping[str, QuantizerConfig]]:
        """Module name -> {role: QuantizerConfig} as resolved from the recipe."""
        return MappingProxyType({name: MappingProxyType(a.configs) for name, a in self._attachments.items()})

    def quantizers(self) -> Iterator[tuple[str, str, Quantizer]]:
        """``(module name, role, quantizer)`` for every quantizer, modules in order, roles weight/input/output."""
        self._check_live()
        for name, a in self._attachments.items():
            for role, q in a.quantizers.items():
                yield name, role, q
        if self.functions is not None:
            for site, q in self.functions.quantizers.items():
                yield self.functions.name, site, q

    def quantizer(self, name: str, role: str) -> Quantizer:
        """The quantizer of ``role`` on module ``name``; ``KeyError`` naming what exists otherwise."""
        self._check_live()
        a = self._attachments.get(name)
        if a is None and self.functions is not None and name == self.functions.name:
            a = self.functions
        if a is None or role not in a.quantizers:
            have = {n: list(x.quantizers) for n, x in self._attachments.items()}
            raise KeyError(f"no {role!r} quantizer on module {name!r}; quantized roles: {have}")
        return a.quantizers[role]

    @property
    def enabled(self) -> bool:
        """True when every quantizer is enabled."""
        return all(q.enabled for _, _, q in self.quantizers())

    # ----------------------------------------------------------------- state
    @contextlib.contextmanager
    def calibrate(self) -> Iterator["QuantHandle"]:
        """Observe without quantizing inside the ``with`` body, then fix the parameters.

        If the body raises, every quantizer is put back as it was on entry (its
        ``state_dict``: flags, observer statistics, parameters) and the exception
        propagates. On a normal exit, a quantizer that saw no data (e.g. on a module
        the calibration forward never called) is put back the same way and
        ``RuntimeError`` names it; the others keep their new parameters. Quantizers
        with ``enabled=False`` (set by hand; ``disable()`` sets all) are left alone.

        Inside the body, every tensor the forward materializes is observed too, with the
        recipe's first input scheme (:mod:`quant.sim.edges`; kept in :attr:`edges`, restored
        on an exception like the quantizers), which is what :func:`quant.lower` needs.
        """
        self._check_live()
        entries = [(n, r, q) for n, r, q in self.quantizers() if q.enabled]
        saved = [_snapshot(q) for _, _, q in entries]
        for _, _, q in entries:
            q.observing, q.quantizing = True, False
        config = self.activation_config
        edges = self.edges
        if edges is None and config is not None:
            edges = EdgeRecorder(self.model, config)
        saved_edges = copy.deepcopy(edges.observers) if edges is not None else {}
        if edges is not None:
            edges.install()
        try:
            yield self
        except BaseException:
            for (_, _, q), state in zip(entries, saved):
                q.load_state_dict(state)
            if edges is not None:
                edges.remove()
                edges.observers = saved_edges
            raise
        if edges is not None:
            edges.remove()
            self.edges = edges
        failed: list[str] = []
        errors: list[BaseException] = []
        for (name, role, q), state in zip(entries, saved):
            if q.optional and not q.observer.has_data:  # a site this model's forwards never reach
                q.load_state_dict(state)
                continue
            try:
                q.compute_qparams()
            except (RuntimeError, ValueError) as exc:
                failed.append(f"{name!r} {role}")
                errors.append(exc)
                q.load_state_dict(state)
                continue
            q.observing, q.quantizing = False, True
        if failed:
            raise RuntimeError(
                f"calibrate(): no quantization parameters for {', '.join(failed)}: {errors[0]}"
            ) from errors[0]

    def freeze(self) -> None:
        """Stop observing everywhere; quantization parameters stay as they are."""
        for _, _, q in self.quantizers():
            q.freeze()

    def enable(self) -> None:
        """Turn every quantizer on (``enabled = True``)."""
        for _, _, q in self.quantizers():
            q.enabled = True

    def disable(self) -> None:
        """Turn every quantizer off: the model computes in float, hooks stay in place."""
        for _, _, q in self.quantizers():
            q.enabled = False

    def set_mode(self, mode: str, datapath: Optional[Datapath] = None) -> None:
        """``"exact"``: the model's forward returns what ``datapath`` computes (:mod:`quant.sim.exact`;
        after ``calibrate()``); ``"fast"``: float fake quantization again."""
        self._check_live()
        if mode not in ("fast", "exact"):
            raise ValueError(f"set_mode: mode={mode!r} is not one of 'fast', 'exact'")
        if self._exact is not None:
            self._exact.remove()
            self._exact = None
        if mode == "exact":
            if datapath is None:
                raise ValueError("set_mode('exact') needs the datapath to simulate")
            self._exact = ExactSimulation(self, datapath)
            self._exact.install()
        self.mode = mode

    @property
    def exact(self) -> Optional[ExactSimulation]:
        """The exact simulation in force (``set_mode("exact", ...)``), or None."""
        return self._exact

    def remove(self) -> None:
        """Take every quantizer and hook off; idempotent."""
        if self._removed:
            return
        if self._exact is not None:
            self._exact.remove()
            self._exact = None
        if self._guarded:
            _remove_call_guard(self.model, self._guarded)
        for a in reversed(list(self._attachments.values())):
            a.remove()
        if self.functions is not None:
            self.functions.remove()
        self._removed = True

    def _check_live(self) -> None:
        if self._removed:
            raise RuntimeError("this QuantHandle was removed; attach the recipe again to quantize")

    # ----------------------------------------------------------------- display
    def __repr__(self) -> str:
        n = len(self._attachments)
        head = f"QuantHandle(mode={self.mode!r}, {n} module{'' if n == 1 else 's'}"
        if self._removed:
            return head + ", removed)"
        lines = []
        for name, a in self._attachments.items():
            kind = parametrize.type_before_parametrizations(a.module).__name__
            roles = "; ".join(f"{role}={cfg.describe()}" for role, cfg in a.configs.items())
            lines.append(f"  {name!r} ({kind}): {roles}")
        if self.functions is not None:
            lines.extend(f"  {self.functions.name} {site}={cfg.describe()}" for site, cfg in self.functions.configs.items())
        lines.extend(f"  {s.name!r} ({s.kind}): float, {s.reason}" for s in self.skipped)
        return head + ":\n" + "\n".join(lines) + ")"


def _grouped(skipped: Sequence[SkippedModule], shown: int = 4) -> str:
    """The skipped modules by kind and reason, a few names each: one line however many BatchNorms a ResNet has."""
    groups: dict[tuple[str, str], list[str]] = {}
    for s in skipped:
        groups.setdefault((s.kind, s.reason), []).append(s.name)
    parts = []
    for (kind, reason), names in groups.items():
        labels = [repr(n) if n else "the model" for n in names[:shown]]
        listed = ", ".join(labels) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        parts.append(f"{listed} ({kind}): {reason}")
    return "; ".join(parts)


def attach(
    model: nn.Module, recipe: RecipeLike, *, mode: str = "fast", example_input: Union[torch.Tensor, Sequence[Any], None] = None
) -> QuantHandle:
    """Quantize ``model`` in place per ``recipe`` (a :class:`Recipe` or its dict form).

    Every check happens before the first hook goes in: an unknown ``mode`` (the
    registered ones are listed), the recipe's own errors (see :meth:`Recipe.resolve`),
    and a module that already carries quantizers from another handle, or has a child
    named ``input_quantizer``/``output_quantizer``, all raise ``ValueError``. If wiring
    fails half-way, what was attached is removed again before the error propagates.

    A module whose input or output is quantized must see one tensor per forward of the model:
    a second call in the same forward (torchvision's BasicBlock calls its ``relu`` twice) would
    give one scale to two different tensors, so it raises ``RuntimeError`` naming the module,
    the role and the user's line of the second call. Give each call a module of its own, or
    exclude the module from activation quantization. Calling submodules directly, outside the
    model's forward, is not counted.

    Functional ops (``torch.matmul``, ``torch.bmm``, softmax) are quantized where the forward calls them when
    the recipe has a rule keyed by the function (:mod:`quant.sim.functions`); ``example_input`` (a tensor
    or a tuple of arguments) is then required: one forward of it finds their call sites.

    Nothing stays float silently: a module with weights of its own that a glob or type rule
    matched but could not quantize (a BatchNorm not folded, a type without quantization
    support, or one that cannot take every role the rule sets) is listed in
    :attr:`QuantHandle.skipped` with the reason, in the handle's repr, and in one warning.
    """
    if mode not in MODES:
        raise ValueError(f"attach: mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach: model must be an nn.Module, got {type(model).__name__}")
    rules = Recipe.of(recipe)
    if rules.functions and example_input is None:
        raise ValueError(f"attach: the recipe quantizes functional ops ({', '.join(rules.functions)}); pass "
                         "example_input=... so that one forward finds their call sites")  # fmt: skip
    resolved = rules.resolve(model)
    skipped = skipped_modules(model, rules, resolved)
    named = dict(model.named_modules())
    sim_mode = MODES[mode]
    for name, configs in resolved.items():
        sim_mode.check(name, named[name], configs)
    attachments: dict[str, ModuleAttachment] = {}
    functions: Optional[FunctionAttachment] = None
    try:
        if rules.functions:  # first: the example forward runs on the float model
            example = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input or ())
            device = _device_of(model, model)

            def build(config: QuantizerConfig) -> Quantizer:
                q = build_quantizer(config)
                q.train(model.training)
                return q.to(device) if device is not None else q

            functions = attach_functions(model, rules.functions, example, build)
        for name, configs in resolved.items():
            module = named[name]
            attachments[name] = sim_mode.attach(name, module, configs, _device_of(module, model))
    except BaseException:
        for a in reversed(list(attachments.values())):
            a.remove()
        if functions is not None:
            functions.remove()
        raise
    guarded = _install_call_guard(model, attachments)
    if skipped:
        warnings.warn(f"attach: {len(skipped)} module(s) with weights stay float: {_grouped(skipped)} (see "
                      "handle.skipped)", stacklevel=2)  # fmt: skip
    return QuantHandle(model, mode, attachments, skipped, guarded, functions)
