"""Observation of every tensor a model's forward materializes, for the integer program.

A quantized module's ``input`` quantizer fixes the codes its input is quantized to, but an
integer program also materializes tensors no quantizer sees: the output of a conv that feeds
``F.relu``, of ``x + y``, of a concatenation, a pooling or an elementwise function. During a
handle's ``calibrate()`` an :class:`EdgeRecorder` observes them all, without rewriting the
model:

* every *leaf* module (:class:`quant.sim.tracing.ModelTracer`'s: a module of ``torch.nn`` other
  than a container and PyTorch's transformer encoder, which is traced through) gets forward
  hooks; its outputs are observed as site ``module:<name>#<call>`` (``#0`` for the first call in
  a forward, ``#1`` for the second, ...; ``.<i>`` for the elements of a tuple it returns);
* a ``TorchFunctionMode`` is active during the root module's forward; every floating tensor a
  torch function or tensor method returns *outside* leaf modules is observed as site
  ``call:<k>``, the ``k``-th such result of the forward (``x + y``, ``F.relu``, ``torch.cat``,
  ``x.view``, ...);
* the root's floating tensor arguments are sites ``input:<i>``.

A function result holding infinities or NaN (an additive attention mask, ``-inf`` where a key is masked)
counts as a site but is not observed: it has no codes, and lowering a model that needs its statistics says
so by name.

The order of the sites is the order in which ``torch.fx`` records the same ops when it traces
the model, which is how :mod:`quant.lowering` finds the statistics of each graph node. Each site
has an observer of the handle's activation scheme. Nothing is attached to the model outside
``calibrate()``; ``handle.remove()`` has nothing of this to undo.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.fx
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from quant.contract.spec import QuantSpec
from quant.sim.observers import Observer, make_observer
from quant.sim.qparams import qparams_from_range
from quant.sim.recipe import QuantizerConfig
from quant.sim.tracing import is_leaf_module

__all__ = ["EdgeRecorder", "is_leaf_module", "input_site", "module_site", "call_site"]


def input_site(index: int) -> str:
    """The site of the root's ``index``-th floating tensor argument."""
    return f"input:{index}"


def module_site(name: str, call: int) -> str:
    """The site of the output of leaf module ``name`` at its ``call``-th call in one forward."""
    return f"module:{name}#{call}"


def call_site(index: int) -> str:
    """The site of the ``index``-th floating tensor a function returns outside leaf modules."""
    return f"call:{index}"


def _floating(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


class _FunctionRecorder(TorchFunctionMode):
    def __init__(self, recorder: "EdgeRecorder") -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: Optional[dict[str, Any]] = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        rec = self.recorder
        if rec.depth == 0 and not rec.busy and _floating(out):
            if bool(torch.isfinite(out).all()):
                rec.observe(call_site(rec.calls), out, getattr(func, "__name__", str(func)))
            # else an additive mask (-inf) or the like: a site without statistics, which no program can hold
            rec.calls += 1
        return out


class EdgeRecorder:
    """Observers of every materialized tensor of ``model``'s forward (see the module docstring).

    ``config`` is the activation scheme of the observers (spec and observer kind);
    ``install()`` attaches the hooks, ``remove()`` takes them off, and the observers stay.
    ``sites`` lists the site keys of the last forward in order, with the function or module
    that produced each.
    """

    def __init__(self, model: nn.Module, config: QuantizerConfig) -> None:
        self.model = model
        self.config = config
        self.observers: dict[str, Observer] = {}
        self.sites: list[tuple[str, str]] = []
        self.depth = 0
        self.calls = 0
        self.busy = False
        self._module_calls: dict[str, int] = {}
        self._hooks: list[RemovableHandle] = []
        self._mode: Optional[_FunctionRecorder] = None

    # ------------------------------------------------------------------ observation
    @torch.no_grad()
    def observe(self, site: str, t: torch.Tensor, label: str) -> None:
        """Update the observer of ``site`` with ``t`` (created on first use)."""
        self.busy = True
        try:
            obs = self.observers.get(site)
            if obs is None:
                obs = make_observer(self.config.observer, self.config.spec, **dict(self.config.observer_kwargs))
                obs.to(t.device)
                self.observers[site] = obs
            obs.update(t.detach().to(torch.float32))
            self.sites.append((site, label))
        finally:
            self.busy = False

    def has(self, site: str) -> bool:
        """Whether ``site`` was observed."""
        obs = self.observers.get(site)
        return obs is not None and obs.has_data

    def qparams(self, site: str, spec: Optional[QuantSpec] = None) -> tuple[float, int]:
        """``(scale, zero_point)`` of ``site`` from its statistics (for ``spec``, by default the activation
        scheme's, from the observer's range); ``KeyError`` if it saw no data."""
        if not self.has(site):
            raise KeyError(site)
        obs = self.observers[site]
        if spec is None:
            s, z = obs.qparams()
        else:
            s, z = qparams_from_range(obs.min_val, obs.max_val, spec)
        return float(s.reshape(-1)[0]), int(z.reshape(-1)[0])

    # ------------------------------------------------------------------ hooks
    def _root_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._exit_mode()
        self.depth, self.calls, self.sites = 0, 0, []
        self._module_calls = {}
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        for i, a in enumerate(inputs):
            if _floating(a):
                self.observe(input_site(i), a, "input")
        self._mode = _FunctionRecorder(self)
        self._mode.__enter__()  # type: ignore[no-untyped-call]

    def _root_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._exit_mode()

    def _exit_mode(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)  # type: ignore[no-untyped-call]

    def _leaf_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.depth += 1

    def _leaf_post(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self.depth == 1 and self._mode is not None:
                call = self._module_calls.get(name, 0)
                self._module_calls[name] = call + 1
                outputs = output if isinstance(output, (tuple, list)) else (output,)
                for i, out in enumerate(outputs):
                    if _floating(out):
                        suffix = "" if len(outputs) == 1 else f".{i}"
                        self.observe(module_site(name, call) + suffix, out, type(module).__name__)
            self.depth = max(0, self.depth - 1)

        return hook

    def install(self) -> None:
        """Attach the root and leaf-module hooks (idempotent)."""
        if self._hooks:
            return
        self._hooks.append(self.model.register_forward_pre_hook(self._root_pre, prepend=True))
        self._hooks.append(self.model.register_forward_hook(self._root_post, always_call=True))
        leaves: list[str] = []
        for name, module in self.model.named_modules():
            inside_leaf = any(name.startswith(leaf + ".") for leaf in leaves)
            if module is self.model or inside_leaf or not is_leaf_module(module, name):
                continue
            leaves.append(name)
            self._hooks.append(module.register_forward_pre_hook(self._leaf_pre, prepend=True))
            self._hooks.append(module.register_forward_hook(self._leaf_post(name), always_call=True))

    def remove(self) -> None:
        """Take every hook off (the observers and their statistics stay)."""
        self._exit_mode()
        for h in self._hooks:
            h.remove()
        self._hooks = []
