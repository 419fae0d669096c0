"""Quantization of functional ops called anywhere in a model's forward: ``torch.matmul``, ``torch.bmm``, softmax.

Attention written as a user (or Hugging Face) writes it, ``nn.Linear`` projections then
``torch.matmul(q, k.transpose(-1, -2))``, ``softmax`` and ``torch.matmul(p, v)``, has its matmul operands
outside any module, so no module role reaches them. A recipe rule keyed by the function quantizes them:

    {"*": {"weight": w8, "input": a8}, torch.matmul: {"input": a8}, F.softmax: {"output": a8}}

``input`` quantizes every floating tensor operand of each call, ``output`` its result. Each call site,
the ``k``-th call of that function in one forward of the model, gets quantizers of its own: the scale of
``Q K^T``'s operands is not the one of ``P V``'s. The sites are found by one forward of
``attach(..., example_input=...)``, before any quantizer exists, so the quantizers are there from the start
(calibration, the optimizer, ``state_dict``); a forward that makes a call the example did not make
raises ``RuntimeError`` naming the function and the call. ``x @ y`` and ``Tensor.matmul`` are
``torch.matmul``; ``torch.softmax`` and ``Tensor.softmax`` are ``F.softmax``. Calls inside a quantized
``nn.MultiheadAttention`` belong to it (:mod:`quant.sim.attention`) and are left alone here.

The quantizers live in the model's submodule ``function_quantizers``; a ``TorchFunctionMode`` is active
during each forward of the model (forward hooks on the model, removed with the handle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from quant.sim import attention
from quant.sim.modes import ModuleAttachment
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig

__all__ = ["FUNCTION_QUANTIZERS", "FUNCTIONS", "FunctionAttachment", "attach_functions", "function_name"]

FUNCTION_QUANTIZERS = "function_quantizers"
#: Canonical name -> the callables ``__torch_function__`` reports for it.
FUNCTIONS: dict[str, tuple[Any, ...]] = {
    "matmul": (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__),
    "bmm": (torch.bmm, torch.Tensor.bmm),
    "softmax": (F.softmax, torch.softmax, torch.Tensor.softmax),
}
_NAME_OF: dict[Any, str] = {f: name for name, fs in FUNCTIONS.items() for f in fs}


def function_name(pattern: object) -> Optional[str]:
    """The canonical name of a recipe key that is one of :data:`FUNCTIONS`, else None."""
    try:
        return _NAME_OF.get(pattern)
    except TypeError:  # unhashable keys are not functions
        return None


class SiteQuantizers(nn.ModuleDict):
    """The quantizers of the call sites, and ``sites``: function name -> calls per forward (the example's)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, int] = {}


def _floating(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


class _Sites(TorchFunctionMode):
    """Finds the call sites (``discover``) or quantizes their operands and results (module doc)."""

    def __init__(self, quantizers: SiteQuantizers, configs: Optional[Mapping[str, Mapping[str, QuantizerConfig]]] = None,
                 build: Optional[Callable[[QuantizerConfig], Quantizer]] = None) -> None:  # fmt: skip
        super().__init__()
        self.quantizers = quantizers
        self.configs = configs  # set while discovering
        self.build = build
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        name = _NAME_OF.get(func)
        if name is None or attention._ACTIVE:
            return func(*args, **kwargs)
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        operands = [i for i, a in enumerate(args) if _floating(a)]
        if self.configs is not None:
            self._discover(name, k, len(operands))
        elif k >= self.quantizers.sites.get(name, 0):
            raise RuntimeError(
                f"{name} call #{k} in this forward was not made by the example forward of attach(..., "
                f"example_input=...), which found {self.quantizers.sites.get(name, 0)}: no quantizers for it "
                "(attach with an example that makes every call)"
            )
        qs = self.quantizers._modules
        new_args = list(args)
        for n, i in enumerate(operands):
            q = qs.get(f"{name}{k}_input{n}")
            if q is not None:
                new_args[i] = q(new_args[i])
        out = func(*new_args, **kwargs)
        q = qs.get(f"{name}{k}_output")
        return q(out) if q is not None and _floating(out) else out

    def _discover(self, name: str, k: int, operands: int) -> None:
        assert self.configs is not None and self.build is not None
        configs = self.configs.get(name, {})
        for n in range(operands):
            if "input" in configs:
                self.quantizers[f"{name}{k}_input{n}"] = self.build(configs["input"])
        if "output" in configs:
            self.quantizers[f"{name}{k}_output"] = self.build(configs["output"])
        self.quantizers.sites[name] = k + 1


_RUNNING: list[_Sites] = []


def _begin(model: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of the model: the function sites are quantized during its forward."""
    quantizers = model._modules[FUNCTION_QUANTIZERS]
    assert isinstance(quantizers, SiteQuantizers)
    mode = _Sites(quantizers)
    mode.__enter__()  # type: ignore[no-untyped-call]
    _RUNNING.append(mode)


def _end(model: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    """Forward hook of the model (always called): the mode of its forward ends."""
    if _RUNNING:
        _RUNNING.pop().__exit__(None, None, None)  # type: ignore[no-untyped-call]


@dataclass
class FunctionAttachment(ModuleAttachment):
    """The function sites of one model: ``quantizers`` keyed ``<function><call>_input<n>`` / ``_output``."""

    def remove(self) -> None:
        model = self.module
        for hooks, fn in ((model._forward_pre_hooks, _begin), (model._forward_hooks, _end)):
            for key in [k for k, v in hooks.items() if v is fn]:
                del hooks[key]
                model._forward_hooks_always_called.pop(key, None)
        model._modules.pop(FUNCTION_QUANTIZERS, None)


def attach_functions(
    model: nn.Module,
    configs: Mapping[str, Mapping[str, QuantizerConfig]],
    example: tuple[Any, ...],
    build: Callable[[QuantizerConfig], Quantizer],
) -> FunctionAttachment:
    """Find the call sites of ``configs``' functions by one forward on ``example`` and wire their quantizers."""
    if FUNCTION_QUANTIZERS in model._modules or hasattr(model, FUNCTION_QUANTIZERS):
        raise ValueError(f"attach: the model already has an attribute {FUNCTION_QUANTIZERS!r}")
    for name, role_configs in configs.items():
        for role, config in role_configs.items():
            if config.spec.granularity != "tensor":
                raise ValueError(f"attach: the {name} rule's {role} scheme must be per-tensor (a call's operands have no "
                                 f"fixed channel axis), got {config.spec.describe()}")  # fmt: skip
    quantizers = SiteQuantizers()
    discover = _Sites(quantizers, configs, build)
    with torch.no_grad(), discover:
        model(*example)
    missing = [name for name in configs if not quantizers.sites.get(name)]
    if missing:
        raise ValueError(f"attach: the example forward makes no call of {', '.join(missing)}; its recipe rule applies "
                         "to nothing")  # fmt: skip
    model.add_module(FUNCTION_QUANTIZERS, quantizers)
    model.register_forward_pre_hook(_begin)
    model.register_forward_hook(_end, always_call=True)
    flat = {key: q for key, q in quantizers.items() if isinstance(q, Quantizer)}
    described = {f"{name} x{quantizers.sites[name]} {role}": config
                 for name, role_configs in configs.items() for role, config in role_configs.items()}  # fmt: skip
    return FunctionAttachment("<functions>", model, described, flat)
