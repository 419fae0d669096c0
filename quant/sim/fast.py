"""``fast`` mode: float fake quantization wired into a module by a parametrization and hooks.

For every module the recipe resolves, ``fast`` builds one ``Quantizer`` per role and wires
it in without touching the module's code:

* ``weight``: a ``torch.nn.utils.parametrize`` parametrization, so ``module.weight``
  reads ``Q(original)`` (straight-through or learned gradients reach the original
  Parameter, which stays the same object under ``module.parametrizations.weight.original``);
* ``input``: a forward pre-hook that replaces the first positional tensor argument
  ``x`` by ``Q(x)``; the quantizer is registered as the submodule ``input_quantizer``;
* ``output``: a forward hook that replaces the returned tensor ``y`` by ``Q(y)``; the
  quantizer is the submodule ``output_quantizer``;
* a Linear, Conv or LayerNorm whose weight quantizer gets bias factors or a bias shift (set by a
  post-training algorithm, or loaded) also gets a forward hook, before the output's, that applies them
  (:mod:`quant.sim.rescaling`).

So a Conv/Linear computes ``op(Q_in(x), Q_w(W), b)`` and then ``Q_out`` of that, all in
float with the quantizers' rounding and clamping. The hooks find their quantizer through
the module, so ``copy.deepcopy`` of a quantized model keeps working.
:meth:`FastAttachment.remove` undoes exactly this wiring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from quant.sim.attention import ATTENTION_QUANTIZERS, attach_attention, check_attention
from quant.sim.recurrent import RECURRENT_MODULES, RECURRENT_QUANTIZERS, attach_recurrent, check_recurrent
from quant.sim.modes import ModuleAttachment, register_mode
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import ROLES, QuantizerConfig
from quant.sim.rescaling import SHIFTABLE, install_bias_hook_after_load, remove_bias_hooks

__all__ = [
    "original_parameter",
    "INPUT_QUANTIZER",
    "OUTPUT_QUANTIZER",
    "FAST",
    "FastAttachment",
    "FastMode",
    "existing_quantizers",
    "remove_tensor_quantizer",
    "restore_parameter_order",
    "build_quantizer",
]


# --------------------------------------------------------------------------- hooks
# Module-level functions (not closures) that look their quantizer up on the module:
# a deepcopy of the model then carries hooks bound to the copy's own quantizers.

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


def remove_tensor_quantizer(module: nn.Module, quantizer: Quantizer, tensor: str = "weight") -> None:
    """Undo ``register_parametrization(module, tensor, quantizer)``.

    When ours is the module's only parametrization, the module gets its original class
    and Parameter back without ``parametrize.remove_parametrizations``, which deletes
    the ``weight`` property from the injected class: ``copy.deepcopy`` shares that
    class between a module and its copies, so deleting from it would break the copies.
    """
    if not parametrize.is_parametrized(module, tensor):
        return
    plists = module.parametrizations
    assert isinstance(plists, nn.ModuleDict)
    plist = plists[tensor]
    assert isinstance(plist, nn.ModuleList)
    if not any(p is quantizer for p in plist):
        return
    if len(plist) > 1:  # other parametrizations (e.g. weight norm) share the list: drop only ours
        for i in reversed(range(len(plist))):
            if plist[i] is quantizer:
                del plist[i]
        return
    if len(plists) > 1:  # other tensors stay parametrized: the class must keep their properties
        parametrize.remove_parametrizations(module, tensor, leave_parametrized=False)
        return
    original = plist.original
    assert isinstance(original, torch.Tensor)
    original_class = parametrize.type_before_parametrizations(module)
    del module.parametrizations
    module.__class__ = original_class
    if isinstance(original, nn.Parameter):
        module.register_parameter(tensor, original)
    else:
        module.register_buffer(tensor, original)


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




@dataclass
class FastAttachment(ModuleAttachment):
    """The fast-mode wiring of one module; ``parameter_order`` is the order of ``_parameters`` before."""

    parameter_order: tuple[str, ...] = field(default=())

    def remove(self) -> None:
        """Take the parametrization, the hooks and the quantizer submodules off; restore the parameter order."""
        module = self.module
        weight_q = self.quantizers.get("weight")
        if weight_q is not None:
            remove_tensor_quantizer(module, weight_q)
            remove_bias_hooks(module)
        if "input" in self.quantizers:
            _remove_hook(module, _quantize_input)
            if module._modules.get(INPUT_QUANTIZER) is self.quantizers["input"]:
                del module._modules[INPUT_QUANTIZER]
        if "output" in self.quantizers:
            _remove_hook(module, _quantize_output)
            if module._modules.get(OUTPUT_QUANTIZER) is self.quantizers["output"]:
                del module._modules[OUTPUT_QUANTIZER]
        restore_parameter_order(module, self.parameter_order)


def original_parameter(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The float tensor ``name`` of ``module``, detached: the original under a quantizer's parametrization, or the
    parameter itself."""
    if parametrize.is_parametrized(module, name):
        value = getattr(module.parametrizations, name).original
    else:
        value = getattr(module, name)
    assert isinstance(value, torch.Tensor)
    return value.detach()


def restore_parameter_order(module: nn.Module, order: tuple[str, ...]) -> None:
    """Put ``module._parameters`` back in ``order`` (re-registering a parameter appends it at the end)."""
    params = module._parameters
    ordered = {k: params[k] for k in order if k in params}
    ordered.update({k: v for k, v in params.items() if k not in ordered})
    params.clear()
    params.update(ordered)



def build_quantizer(config: QuantizerConfig) -> Quantizer:
    """The quantizer of ``config`` (spec, observer, learning mode)."""
    return Quantizer(
        config.spec,
        observer=config.observer,
        learn=config.learn,
        observer_kwargs=dict(config.observer_kwargs),
        accumulator=config.accumulator,
    )


def _attach(
    name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig], device: Optional[torch.device]
) -> FastAttachment:
    """Float fake quantization: parametrized weight, input pre-hook, output hook.

    Builds every quantizer first, so a config the ``Quantizer`` rejects raises before
    the module is touched.
    """
    quantizers = {role: build_quantizer(configs[role]) for role in ROLES if role in configs}
    for q in quantizers.values():
        q.train(module.training)
        if device is not None:
            q.to(device)
    attachment = FastAttachment(
        name, module, {r: configs[r] for r in quantizers}, quantizers, tuple(module._parameters)
    )
    try:
        if "weight" in quantizers:
            # unsafe=True: skip parametrize's trial call, which would feed the weight to
            # the observer at attach time; the quantizer keeps shape and dtype by contract.
            parametrize.register_parametrization(module, "weight", quantizers["weight"], unsafe=True)
            if isinstance(module, SHIFTABLE):  # a saved bias shift or bias factors bring their hook along
                module.register_load_state_dict_post_hook(install_bias_hook_after_load)  # type: ignore[no-untyped-call]
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


class FastMode:
    """The ``fast`` simulation mode (see the module docstring)."""

    name = "fast"

    def check(self, name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig]) -> None:
        """Refuse a module that already carries quantizers, has a child named like ours, or (attention) a
        scheme one of its sites cannot take."""
        taken = existing_quantizers(module)
        if isinstance(module, (nn.MultiheadAttention, *RECURRENT_MODULES)) and (
            ATTENTION_QUANTIZERS in module._modules or RECURRENT_QUANTIZERS in module._modules
            or parametrize.is_parametrized(module)
        ):
            taken = taken or ["its"]
        if taken:
            raise ValueError(
                f"attach: module {name!r} already has {', '.join(taken)} quantizer(s) from another handle; "
                "remove() that handle first"
            )
        if isinstance(module, nn.MultiheadAttention):
            check_attention(name, module, configs)
            return
        if isinstance(module, RECURRENT_MODULES):
            check_recurrent(name, module, configs)
            return
        for role in configs:
            sub = _SUBMODULE_NAMES.get(role)
            if sub is not None and (sub in module._modules or hasattr(module, sub)):
                raise ValueError(f"attach: module {name!r} already has an attribute {sub!r}")

    def attach(
        self, name: str, module: nn.Module, configs: Mapping[str, QuantizerConfig], device: Optional[torch.device]
    ) -> ModuleAttachment:
        """Wire ``configs`` into ``module`` (see :func:`_attach`; attention: :mod:`quant.sim.attention`)."""
        def build(config: QuantizerConfig) -> Quantizer:
            q = build_quantizer(config)
            q.train(module.training)
            return q.to(device) if device is not None else q

        if isinstance(module, nn.MultiheadAttention):
            return attach_attention(name, module, configs, build)
        if isinstance(module, RECURRENT_MODULES):
            return attach_recurrent(name, module, configs, build)
        return _attach(name, module, configs, device)


#: The registered ``fast`` mode.
FAST = register_mode(FastMode())
