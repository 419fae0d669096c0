"""``ModelTracer``: the ``torch.fx`` tracer that the lowering, exact simulation and edge observation share.

It is ``torch.fx.Tracer`` (every ``torch.nn`` module a leaf, one graph node) except for PyTorch's transformer
encoder, whose parts have integer forms of their own:

* ``nn.TransformerEncoderLayer`` is traced through (its fused fast path is off while it is traced, as it is
  off whenever hooks are attached), so its attention, LayerNorms, linears, activation and residual adds are
  nodes of the graph;
* ``nn.TransformerEncoder`` becomes its layers in order, then its final ``norm``: what its forward computes
  without masks and nested tensors; masks given to it are refused (``ValueError``), as the attention's are.

>>> import torch.nn as nn
>>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
>>> model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(layer, 1, enable_nested_tensor=False))
>>> [n.target for n in ModelTracer().trace(model).nodes if n.op == "call_module"]  # doctest: +NORMALIZE_WHITESPACE
['0', '1.layers.0.self_attn', '1.layers.0.dropout1', '1.layers.0.norm1', '1.layers.0.linear1', '1.layers.0.dropout',
 '1.layers.0.linear2', '1.layers.0.dropout2', '1.layers.0.norm2']

Values no input reaches (a learned position embedding ``self.positions(self.steps)``, a parameter added to a
tensor) are the same for every sample: :func:`constant_nodes` finds them in a traced graph and
:func:`evaluate_constant` computes them in float with the model's own modules, for the lowering (which holds
them as ``constant`` codes) and exact simulation alike.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn

__all__ = ["ModelTracer", "constant_nodes", "evaluate_constant", "is_leaf_module"]

_TRACED_THROUGH = (nn.TransformerEncoderLayer, nn.TransformerEncoder)


class ModelTracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` with PyTorch's transformer encoder traced through (see the module doc)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, _TRACED_THROUGH):
            return False
        return bool(super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if isinstance(m, nn.TransformerEncoder):
            src = kwargs.get("src", args[0] if args else None)
            given = {k: v for k, v in kwargs.items() if k != "src" and v is not None and v is not False}
            if len(args) > 1 and any(a is not None for a in args[1:]) or given:
                raise ValueError(f"TransformerEncoder {self.path_of_module(m)!r}: masks and is_causal have no integer "
                                 "form here (an additive -inf has no code)")  # fmt: skip
            out = src
            for layer in m.layers:
                out = self.call_module(layer, layer.forward, (out,), {})
            if m.norm is not None:
                out = self.call_module(m.norm, m.norm.forward, (out,), {})
            return out
        if isinstance(m, nn.TransformerEncoderLayer):
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                return super().call_module(m, forward, args, kwargs)
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)
        return super().call_module(m, forward, args, kwargs)


def is_leaf_module(module: nn.Module, name: str) -> bool:
    """Whether :class:`ModelTracer` keeps ``module`` as one node when it is called (and the edge recorder
    observes its output); containers that are iterated, not called (``ModuleList``, ``ModuleDict``), are not."""
    if isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)):
        return False
    return ModelTracer().is_leaf_module(module, name)


def constant_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The nodes of ``graph`` whose value depends on no placeholder: parameter and buffer reads, and the calls
    whose every input is one (graph order, so one pass)."""
    constants: set[torch.fx.Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr":
            constants.add(node)
        elif node.op in ("call_module", "call_function", "call_method"):
            if all(i in constants for i in node.all_input_nodes):
                constants.add(node)
    return constants


def _attr(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


@torch.no_grad()
def evaluate_constant(node: torch.fx.Node, model: nn.Module, cache: dict[torch.fx.Node, Any]) -> Any:
    """The value of constant ``node`` (see :func:`constant_nodes`), computed as the model computes it."""
    if node in cache:
        return cache[node]

    def arg(a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: evaluate_constant(n, model, cache))

    args, kwargs = arg(node.args), arg(node.kwargs)
    if node.op == "get_attr":
        value = _attr(model, str(node.target))
    elif node.op == "call_module":
        value = model.get_submodule(str(node.target))(*args, **kwargs)
    elif node.op == "call_method":
        value = getattr(args[0], str(node.target))(*args[1:], **kwargs)
    else:
        value = node.target(*args, **kwargs)  # type: ignore[operator]
    if isinstance(value, torch.Tensor):
        value = value.detach()
    cache[node] = value
    return value
