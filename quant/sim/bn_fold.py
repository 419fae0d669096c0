"""Batch-norm folding: merge an eval-mode BatchNorm into the Conv/Linear before it.

A BatchNorm in eval mode is the per-channel affine map (running statistics)::

    bn(y)[c] = gamma[c] * (y[c] - mean[c]) / sqrt(var[c] + eps) + beta[c]

and when it directly follows ``y = W * x + b`` (convolution or linear, ``W`` with its
output channel on axis 0) it folds into it with ``g = gamma / sqrt(var + eps)``::

    W'[c, ...] = W[c, ...] * g[c]
    b'[c]      = (b[c] - mean[c]) * g[c] + beta[c]        (b = 0 when the layer has no bias)

``gamma = 1, beta = 0`` when the BatchNorm has ``affine=False``. The arithmetic runs in
float64 and is rounded once to the layer's dtype, so the folded layer equals the eval
model's conv-then-BN up to float rounding of the *unfused* computation (the tests check
``rtol=1e-5`` and ``atol=1e-6`` times the output's largest magnitude). The folded layer
always gets a bias; the BatchNorm is replaced by ``nn.Identity`` in its parent, so the
model keeps its class, its forward code and its module names.

Folded pairs: Conv1d + BatchNorm1d, Conv2d + BatchNorm2d (any ``groups``, so depthwise
too) and Linear + BatchNorm1d. Linear + BatchNorm1d assumes the Linear output is 2-D
``(N, features)``: on a 3-D ``(N, L, features)`` output BatchNorm1d would normalize
axis 1, not the features, and folding would be wrong.

How pairs are found: the model is traced with ``torch.fx.symbolic_trace`` and a pair
is a BatchNorm call whose only argument is the output of a Conv/Linear call that has
no other user. When tracing fails (data-dependent control flow, untraceable code) the
fallback folds consecutive children of ``nn.Sequential`` containers whose modules run exactly
once in a forward of ``example_input``, counted with hooks; without an example input nothing
can say how often a module runs, so the fallback folds nothing and warns. Both paths skip
a pair, leaving it unfused, when: either module is reachable under two names or
called more than once (folding would change the other use), the BatchNorm does not
track running statistics, its ``num_features`` is not the layer's output channel
count, the BatchNorm has forward (pre-)hooks or the layer has forward hooks (they
would see different values). fx also misses pairs hidden behind functional calls
(``F.batch_norm``) and pairs joined by anything but a direct edge (a reshape, a cat).
A layer whose weight is already parametrized (e.g. quantizers attached) raises
``ValueError``: fold before ``attach``.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> _ = model[1].running_var.uniform_(0.5, 2.0)
>>> folded = fold_bn(model)
>>> foldable_pairs(model)
[('0', '1')]
>>> type(folded[1]).__name__, folded[0].bias is not None, model[0] is not folded[0]
('Identity', True, True)
>>> x = torch.randn(2, 3, 8, 8)
>>> torch.allclose(folded(x), model(x), rtol=1e-5, atol=1e-6)
True
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from typing import Optional, TypeVar

import torch
import torch.fx
import torch.nn as nn
from torch.nn.utils import parametrize

__all__ = ["FOLDABLE_PAIRS", "fold_bn", "foldable_pairs", "fold_bn_into"]

FOLDABLE_PAIRS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Linear, nn.BatchNorm1d),
)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _types_fit(layer: nn.Module, bn: nn.Module) -> bool:
    return any(isinstance(layer, lt) and isinstance(bn, bt) for lt, bt in FOLDABLE_PAIRS)


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return int(layer.out_features)
    return int(layer.out_channels)  # type: ignore[arg-type]


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    if not _types_fit(layer, bn):
        return False
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return False
    if bn.num_features != _out_channels(layer):
        return False
    if bn._forward_hooks or bn._forward_pre_hooks or layer._forward_hooks:
        return False
    return True


def _shared(model: nn.Module) -> set[int]:
    """ids of modules reachable under more than one name."""
    counts = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return {i for i, n in counts.items() if n > 1}


def _pairs_fx(model: nn.Module) -> Optional[list[tuple[str, str]]]:
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # any tracing failure means: use the Sequential fallback
        return None
    modules = dict(model.named_modules())
    calls = Counter(str(node.target) for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer_name, bn_name = str(src.target), str(node.target)
        if calls[layer_name] != 1 or calls[bn_name] != 1:
            continue
        layer, bn = modules.get(layer_name), modules.get(bn_name)
        if layer is not None and bn is not None and _types_fit(layer, bn):
            pairs.append((layer_name, bn_name))
    return pairs


def _call_counts(model: nn.Module, example_input: object) -> Counter[int]:
    """How many times each module (by id) runs in one forward of ``example_input`` (eval, no gradients)."""
    counts: Counter[int] = Counter()
    hooks = [m.register_forward_pre_hook(lambda mod, args: counts.update([id(mod)])) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return counts


def _pairs_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        prefix = f"{name}." if name else ""
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if _types_fit(a, b):
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def foldable_pairs(model: nn.Module, example_input: object = None) -> list[tuple[str, str]]:
    """``(layer name, batchnorm name)`` pairs :func:`fold_bn` folds, in graph order (``example_input``: see the
    module doc; used only when torch.fx cannot trace ``model``).

    >>> foldable_pairs(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)))
    []
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    candidates = _pairs_fx(model)
    modules = dict(model.named_modules())
    if candidates is None:
        if example_input is None:
            warnings.warn("fold_bn: torch.fx cannot trace the model, so which Conv+BatchNorm pairs run once is unknown; "
                          "nothing is folded (pass example_input=... to fold the nn.Sequential pairs that run once)",
                          stacklevel=3)  # fmt: skip
            return []
        counts = _call_counts(model, example_input)
        candidates = [(a, b) for a, b in _pairs_sequential(model)
                      if counts[id(modules[a])] == 1 and counts[id(modules[b])] == 1]  # fmt: skip
    shared = _shared(model)
    return [
        (a, b)
        for a, b in candidates
        if id(modules[a]) not in shared and id(modules[b]) not in shared and _foldable(modules[a], modules[b])
    ]


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval semantics) into ``layer``'s weight and bias, in place.

    ``layer`` is a Conv1d/Conv2d/Linear; it gets a bias Parameter if it had none.
    Raises ``ValueError`` for a pair that does not fit (types, channel count, no
    running statistics) or a parametrized weight.
    """
    if parametrize.is_parametrized(layer, "weight"):
        raise ValueError(
            f"cannot fold into a {parametrize.type_before_parametrizations(layer).__name__} whose weight is "
            "parametrized (quantizers attached?): fold batch norms before attach"
        )
    if not _foldable(layer, bn):
        raise ValueError(f"{type(bn).__name__} cannot be folded into {type(layer).__name__}")
    assert bn.running_mean is not None and bn.running_var is not None
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    g = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        g = g * bn.weight.double()
    bias = layer.bias
    b = bias.double() if isinstance(bias, torch.Tensor) else torch.zeros_like(g)
    new_b = (b - bn.running_mean.double()) * g
    if bn.affine:
        new_b = new_b + bn.bias.double()
    weight.copy_((weight.double() * g.reshape((-1,) + (1,) * (weight.dim() - 1))).to(weight.dtype))
    if isinstance(bias, torch.Tensor):
        bias.copy_(new_b.to(bias.dtype))
    else:
        layer.bias = nn.Parameter(new_b.to(weight.dtype), requires_grad=weight.requires_grad)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_bn(model: ModuleT, example_input: object = None) -> ModuleT:
    """A deep copy of ``model`` with every foldable BatchNorm folded (see the module doc).

    The input model is not modified. The copy keeps ``model``'s class and training
    flag; each folded BatchNorm becomes ``nn.Identity``. ``example_input`` (a tensor or a
    tuple of arguments) is run once only when torch.fx cannot trace the model, to count
    how often each module of an ``nn.Sequential`` runs.
    """
    pairs = foldable_pairs(model, example_input)
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    for layer_name, bn_name in pairs:
        layer, bn = modules[layer_name], modules[bn_name]
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(
                f"fold_bn: {layer_name!r} has a parametrized weight (quantizers attached?): "
                "fold batch norms before attach"
            )
        fold_bn_into(layer, bn)
        _set_submodule(folded, bn_name, nn.Identity())
    return folded
