"""``attach(model, recipe)``: quantize an unmodified model through hooks, reversibly.

For every module the recipe resolves (see :mod:`quant.recipe`), ``attach`` builds one
``Quantizer`` per role and wires it in without touching the module's code:

* ``weight``: a ``torch.nn.utils.parametrize`` parametrization, so ``module.weight``
  reads ``Q(original)`` (straight-through or learned gradients reach the original
  Parameter, which stays the same object under ``module.parametrizations.weight.original``);
* ``input``: a forward pre-hook that replaces the first positional tensor argument
  ``x`` by ``Q(x)``; the quantizer is registered as the submodule ``input_quantizer``;
* ``output``: a forward hook that replaces the returned tensor ``y`` by ``Q(y)``; the
  quantizer is the submodule ``output_quantizer``.

So in ``fast`` mode (float fake quantization, the only mode so far) a Conv/Linear
computes ``op(Q_in(x), Q_w(W), b)`` and then ``Q_out`` of that, all in float with the
quantizers' rounding and clamping; ``repr(model)`` shows each quantizer beside its
module. The hooks find their quantizer through the module, so ``copy.deepcopy`` of a
quantized model (or of ``(model, handle)`` together, which gives a working handle for
the copy) keeps working. :meth:`QuantHandle.remove` takes everything off again: forward
outputs and ``state_dict`` (keys, order and values) are then bit-identical to the float
model's before ``attach``, and every Parameter is still the object an optimizer built
before ``attach`` holds.

Modes are a registry (:data:`MODES`, :func:`register_mode`): a mode is a function
``(name, module, configs) -> ModuleAttachment``; a datapath-exact mode plugs in there.

>>> import torch, torch.nn as nn
>>> from quant.spec import QuantSpec
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
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Optional

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from quant.quantizer import Quantizer
from quant.recipe import ROLES, QuantizerConfig, Recipe, RecipeLike

__all__ = [
    "INPUT_QUANTIZER",
    "OUTPUT_QUANTIZER",
    "MODES",
    "ModuleAttachment",
    "QuantHandle",
    "attach",
    "attach_fast",
    "existing_quantizers",
    "register_mode",
]

INPUT_QUANTIZER = "input_quantizer"
OUTPUT_QUANTIZER = "output_quantizer"
_SUBMODULE_NAMES = {"input": INPUT_QUANTIZER, "output": OUTPUT_QUANTIZER}


# --------------------------------------------------------------------------- hooks
# Module-level functions (not closures) that look their quantizer up on the module:
# a deepcopy of the model then carries hooks bound to the copy's own quantizers.


def _quantize_input(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
    """Forward pre-hook: replace the first positional tensor argument by ``Q(x)``."""
    quantizer = module._modules[INPUT_QUANTIZER]
    assert quantizer is not None
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            return args[:i] + (quantizer(arg),) + args[i + 1 :]
    raise TypeError(
        f"{type(module).__name__} has an input quantizer but was called without a positional tensor argument"
    )


def _quantize_output(module: nn.Module, args: tuple[object, ...], output: object) -> torch.Tensor:
    """Forward hook: replace the returned tensor by ``Q(y)``."""
    quantizer = module._modules[OUTPUT_QUANTIZER]
    assert quantizer is not None
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"{type(module).__name__} has an output quantizer but returned {type(output).__name__}, not a tensor"
        )
    out: torch.Tensor = quantizer(output)
    return out


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks")
_EXTRA_HOOK_DICTS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _remove_hook(module: nn.Module, fn: Callable[..., object]) -> None:
    """Remove every registration of ``fn`` from ``module``'s forward (pre-)hooks."""
    for dict_name in _HOOK_DICTS:
        hooks = getattr(module, dict_name)
        for key in [k for k, v in hooks.items() if v is fn]:
            del hooks[key]
            for extra in _EXTRA_HOOK_DICTS:
                getattr(module, extra, {}).pop(key, None)


def _remove_weight_quantizer(module: nn.Module, quantizer: Quantizer) -> None:
    """Undo ``register_parametrization(module, "weight", quantizer)``.

    When ours is the module's only parametrization, the module gets its original class
    and Parameter back without ``parametrize.remove_parametrizations``, which deletes
    the ``weight`` property from the injected class: ``copy.deepcopy`` shares that
    class between a module and its copies, so deleting from it would break the copies.
    """
    if not parametrize.is_parametrized(module, "weight"):
        return
    plists = module.parametrizations
    assert isinstance(plists, nn.ModuleDict)
    plist = plists["weight"]
    assert isinstance(plist, nn.ModuleList)
    if not any(p is quantizer for p in plist):
        return
    if len(plist) > 1:  # other parametrizations (e.g. weight norm) share the list: drop only ours
        for i in reversed(range(len(plist))):
            if plist[i] is quantizer:
                del plist[i]
        return
    if len(plists) > 1:  # other tensors stay parametrized: the class must keep their properties
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        return
    original = plist.original
    assert isinstance(original, torch.Tensor)
    original_class = parametrize.type_before_parametrizations(module)
    del module.parametrizations
    module.__class__ = original_class
    if isinstance(original, nn.Parameter):
        module.register_parameter("weight", original)
    else:
        module.register_buffer("weight", original)


def _weight_quantizers(module: nn.Module) -> list[Quantizer]:
    if not parametrize.is_parametrized(module, "weight"):
        return []
    plist = module.parametrizations.weight  # type: ignore[union-attr]
    return [p for p in plist if isinstance(p, Quantizer)]  # type: ignore[union-attr]


def existing_quantizers(module: nn.Module) -> list[str]:
    """Roles of ``module`` that already carry a quantizer (from any handle)."""
    roles = ["weight"] if _weight_quantizers(module) else []
    for role, sub in _SUBMODULE_NAMES.items():
        if isinstance(module._modules.get(sub), Quantizer):
            roles.append(role)
    return roles


# --------------------------------------------------------------------------- one module


@dataclass
class ModuleAttachment:
    """The quantizers one mode attached to one module, and how to take them off.

    ``quantizers`` maps role -> Quantizer in the order weight, input, output.
    ``remove()`` must restore the module exactly as it was (parameters, their order
    in ``_parameters``, buffers, submodules, hooks, class).
    """

    name: str
    module: nn.Module
    configs: dict[str, QuantizerConfig]
    quantizers: dict[str, Quantizer]
    parameter_order: tuple[str, ...] = field(default=())

    def remove(self) -> None:
        """Take this module's quantizers off (fast mode wiring)."""
        module = self.module
        weight_q = self.quantizers.get("weight")
        if weight_q is not None:
            _remove_weight_quantizer(module, weight_q)
        if "input" in self.quantizers:
            _remove_hook(module, _quantize_input)
            if module._modules.get(INPUT_QUANTIZER) is self.quantizers["input"]:
                del module._modules[INPUT_QUANTIZER]
        if "output" in self.quantizers:
            _remove_hook(module, _quantize_output)
            if module._modules.get(OUTPUT_QUANTIZER) is self.quantizers["output"]:
                del module._modules[OUTPUT_QUANTIZER]
        if self.parameter_order:
            params = module._parameters
            ordered = {k: params[k] for k in self.parameter_order if k in params}
            ordered.update({k: v for k, v in params.items() if k not in ordered})
            params.clear()
            params.update(ordered)


def _device_of(module: nn.Module, model: nn.Module) -> Optional[torch.device]:
    for t in module.parameters(recurse=False):
        return t.device
    for t in model.parameters():
        return t.device
    return None


def _build_quantizer(config: QuantizerConfig) -> Quantizer:
    return Quantizer(
        config.spec,
        observer=config.observer,
        learn=config.learn,
        observer_kwargs=dict(config.observer_kwargs),
    )


AttachFn = Callable[[str, nn.Module, Mapping[str, QuantizerConfig], Optional[torch.device]], ModuleAttachment]

MODES: dict[str, AttachFn] = {}
"""Simulation modes by name; each wires the quantizers of one module."""


def register_mode(name: str) -> Callable[[AttachFn], AttachFn]:
    """Decorator registering an attach function for ``attach(..., mode=name)``."""

    def decorate(fn: AttachFn) -> AttachFn:
        if name in MODES:
            raise ValueError(f"simulation mode {name!r} is already registered")
        MODES[name] = fn
        return fn

    return decorate


@register_mode("fast")
def attach_fast(
    name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig], device: Optional[torch.device]
) -> ModuleAttachment:
    """Float fake quantization: parametrized weight, input pre-hook, output hook.

    Builds every quantizer first, so a config the ``Quantizer`` rejects raises before
    the module is touched.
    """
    quantizers = {role: _build_quantizer(configs[role]) for role in ROLES if role in configs}
    for q in quantizers.values():
        q.train(module.training)
        if device is not None:
            q.to(device)
    attachment = ModuleAttachment(
        name, module, {r: configs[r] for r in quantizers}, quantizers, tuple(module._parameters)
    )
    try:
        if "weight" in quantizers:
            # unsafe=True: skip parametrize's trial call, which would feed the weight to
            # the observer at attach time; the quantizer keeps shape and dtype by contract.
            parametrize.register_parametrization(module, "weight", quantizers["weight"], unsafe=True)
        if "input" in quantizers:
            module.add_module(INPUT_QUANTIZER, quantizers["input"])
            module.register_forward_pre_hook(_quantize_input)
        if "output" in quantizers:
            module.add_module(OUTPUT_QUANTIZER, quantizers["output"])
            module.register_forward_hook(_quantize_output)
    except BaseException:
        attachment.remove()
        raise
    return attachment


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

    def __init__(self, model: nn.Module, mode: str, attachments: Mapping[str, ModuleAttachment]) -> None:
        self.model = model
        self.mode = mode
        self._attachments = dict(attachments)
        self._removed = False

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

    def quantizer(self, name: str, role: str) -> Quantizer:
        """The quantizer of ``role`` on module ``name``; ``KeyError`` naming what exists otherwise."""
        self._check_live()
        a = self._attachments.get(name)
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
        """
        self._check_live()
        entries = [(n, r, q) for n, r, q in self.quantizers() if q.enabled]
        saved = [_snapshot(q) for _, _, q in entries]
        for _, _, q in entries:
            q.observing, q.quantizing = True, False
        try:
            yield self
        except BaseException:
            for (_, _, q), state in zip(entries, saved):
                q.load_state_dict(state)
            raise
        failed: list[str] = []
        errors: list[BaseException] = []
        for (name, role, q), state in zip(entries, saved):
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

    def remove(self) -> None:
        """Take every quantizer and hook off; idempotent."""
        if self._removed:
            return
        for a in reversed(list(self._attachments.values())):
            a.remove()
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
        return head + ":\n" + "\n".join(lines) + ")"


def attach(model: nn.Module, recipe: RecipeLike, *, mode: str = "fast") -> QuantHandle:
    """Quantize ``model`` in place per ``recipe`` (a :class:`Recipe` or its dict form).

    Every check happens before the first hook goes in: an unknown ``mode`` (the
    registered ones are listed), the recipe's own errors (see :meth:`Recipe.resolve`),
    and a module that already carries quantizers from another handle, or has a child
    named ``input_quantizer``/``output_quantizer``, all raise ``ValueError``. If wiring
    fails half-way, what was attached is removed again before the error propagates.
    """
    if mode not in MODES:
        raise ValueError(f"attach: mode={mode!r} is not one of {', '.join(map(repr, MODES))}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"attach: model must be an nn.Module, got {type(model).__name__}")
    resolved = Recipe.of(recipe).resolve(model)
    named = dict(model.named_modules())
    for name, configs in resolved.items():
        module = named[name]
        taken = existing_quantizers(module)
        if taken:
            raise ValueError(
                f"attach: module {name!r} already has {', '.join(taken)} quantizer(s) from another handle; "
                "remove() that handle first"
            )
        for role in configs:
            sub = _SUBMODULE_NAMES.get(role)
            if sub is not None and (sub in module._modules or hasattr(module, sub)):
                raise ValueError(f"attach: module {name!r} already has an attribute {sub!r}")
    attachments: dict[str, ModuleAttachment] = {}
    try:
        for name, configs in resolved.items():
            module = named[name]
            attachments[name] = MODES[mode](name, module, configs, _device_of(module, model))
    except BaseException:
        for a in reversed(list(attachments.values())):
            a.remove()
        raise
    return QuantHandle(model, mode, attachments)
