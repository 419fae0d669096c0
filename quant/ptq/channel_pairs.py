"""Producer/consumer layer pairs across which a per-channel factor moves without changing the float model, for
cross-layer equalization (:mod:`quant.ptq.equalize`) and SmoothQuant (:mod:`quant.ptq.smooth`).

A pair is a producer (a Linear, Conv1d/2d of any groups, or a LayerNorm over one axis with a gain) and every
layer its output reaches, each a Linear or Conv1d/2d consumer, through ops that commute with a positive factor
per channel. Scaling the producer's output channel ``c`` by ``1 / f_c`` (its weight rows and bias) and every
consumer's input channel ``c`` by ``f_c`` then computes the same function. The ops allowed in between: dropout,
identity, ``contiguous``, ReLU and LeakyReLU (``relu(x / f) = relu(x) / f`` for ``f > 0``), max and average
pooling, a mean over axes other than the batch's and the channels', and a flatten from the channel axis in
front of a Linear (channel ``c`` of a ``(N, C, *S)`` tensor is then the Linear's inputs ``c prod(S)`` to
``(c + 1) prod(S) - 1``).

A producer whose output goes anywhere else too (a residual add, the model's output, a concatenation, a
nonlinearity such as ReLU6 or GELU) forms no pair: the factor would change what that use sees.

The factors become quantizer state (:mod:`quant.sim.rescaling`): the producer's weight quantizer gets row
factors ``1 / f`` on its prescale and on its bias factors, each consumer's weight quantizer column factors
``f``, multiplying what they held (a layer may be a consumer of one pair and the producer of the next).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from quant.ptq.calibration import Layer, call_model, eval_mode
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter
from quant.sim.rescaling import bias_shape
from quant.sim.tracing import ModelTracer

__all__ = ["Consumer", "ChannelPair", "find_pairs", "check_pairs", "input_ranges", "apply_factors", "recalibrate"]

_CONSUMERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm)
#: Ops that commute with a positive factor per channel (module doc).
_THROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.ReLU, nn.LeakyReLU, nn.MaxPool1d,
                    nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)  # fmt: skip
_THROUGH_CALLS = {F.dropout, "contiguous", F.relu, torch.relu, "relu", F.leaky_relu, F.max_pool1d, F.max_pool2d,
                  F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d}  # fmt: skip


@dataclass(frozen=True)
class Consumer:
    """A consumer of a pair: its layer, and how many of its input elements one producer channel is (more than one
    behind a flatten)."""

    layer: Layer
    repeat: int = 1


@dataclass(frozen=True)
class ChannelPair:
    """A producer, its consumers and its number of channels (see the module doc)."""

    producer: Layer
    consumers: tuple[Consumer, ...]
    channels: int

    @property
    def names(self) -> str:
        return f"{self.producer.name} -> {', '.join(c.layer.name for c in self.consumers)}"


def _layer(handle: QuantHandle, name: str, module: nn.Module) -> Optional[Layer]:
    if "weight" not in handle.configs.get(name, {}):
        return None
    return Layer(name, module, handle.quantizer(name, "weight"))


def _is_flatten(node: torch.fx.Node, model: nn.Module) -> bool:
    """``nn.Flatten()``, ``torch.flatten(x, 1)`` or ``x.flatten(1)`` over everything after the batch."""
    if node.op == "call_module":
        m = model.get_submodule(str(node.target))
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.target in (torch.flatten, "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return bool(start == 1 and end == -1)
    return False


def _passes(node: torch.fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` (one tensor argument, its producer's) keeps channel ``c`` a positive multiple of itself."""
    if node.op == "call_module":
        m = model.get_submodule(str(node.target))
        return isinstance(m, _THROUGH_MODULES) and not (isinstance(m, nn.LeakyReLU) and m.negative_slope < 0)
    if node.op in ("call_function", "call_method"):
        return node.target in _THROUGH_CALLS
    return False


def _inputs(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.in_features
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    return m.in_channels


def _output_ranks(model: nn.Module, handle: QuantHandle, example: object) -> dict[str, int]:
    """The number of dimensions of every quantized module's output on ``example`` (the float model's forward)."""
    from quant.ptq.calibration import float_reference

    ranks: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_: nn.Module, __: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                ranks[name] = out.dim()

        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in handle.modules.items()]
    try:
        with torch.no_grad(), eval_mode(model), float_reference(handle):
            call_model(model, example)
    finally:
        for h in hooks:
            h.remove()
    return ranks


def find_pairs(model: nn.Module, handle: QuantHandle, algorithm: str, example: object,
               producers: Sequence[type[nn.Module]] = _PRODUCERS) -> tuple[list[ChannelPair], list[str]]:  # fmt: skip
    """The model's pairs (traced with :class:`quant.sim.tracing.ModelTracer`; ``example``, a calibration batch,
    gives the ranks of the tensors), producers in graph order, and why each producer-like layer formed none
    (``"name: reason"``). Producers and consumers need a weight quantizer in the handle; a LayerNorm producer
    a gain over one axis."""
    try:
        graph = ModelTracer().trace(model)
    except Exception as err:  # torch.fx raises many kinds on untraceable code
        raise ValueError(f"{algorithm}: the model does not trace with torch.fx ({type(err).__name__}: {err}); "
                         "the pairs of layers are found on its graph") from None  # fmt: skip
    modules = dict(handle.modules)
    ranks = _output_ranks(model, handle, example)
    pairs: list[ChannelPair] = []
    skipped: list[str] = []
    for node in graph.nodes:
        if node.op != "call_module" or str(node.target) not in modules:
            continue
        name = str(node.target)
        m = modules[name]
        if not isinstance(m, tuple(producers)):
            continue
        kind = parametrize.type_before_parametrizations(m).__name__
        producer = _layer(handle, name, m)
        if producer is None:
            skipped.append(f"{name}: its {kind} has no weight quantizer to hold the factors")
            continue
        if isinstance(m, nn.LayerNorm) and (m.weight is None or len(m.normalized_shape) != 1):
            skipped.append(f"{name}: a LayerNorm needs a gain over one axis")
            continue
        if name not in ranks:
            skipped.append(f"{name}: the calibration batch does not reach it")
            continue
        channels = bias_shape(m)[0]
        where = _LAST if isinstance(m, (nn.Linear, nn.LayerNorm)) else _AXIS1
        found, why = _consumers(node, model, handle, modules, channels, _Place(where, ranks[name], 1))
        if found is None:
            skipped.append(f"{name}: {why}")
            continue
        pairs.append(ChannelPair(producer, tuple(found), channels))
    return pairs, skipped


_LAST, _AXIS1 = "last", "axis 1"


@dataclass(frozen=True)
class _Place:
    """Where a producer's channels are in a tensor of its chain: the last axis or axis 1, the tensor's rank, and
    the elements per channel along that axis (0: behind a flatten, told by the consumer's width)."""

    where: str
    rank: int
    repeat: int


def _after_mean(user: torch.fx.Node, place: _Place) -> Optional[_Place]:
    """The place after ``x.mean(dims)`` / ``torch.mean(x, dims)`` over axes other than the batch and the channels;
    None for any other reduction."""
    dims = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
    keepdim = user.args[2] if len(user.args) > 2 else user.kwargs.get("keepdim", False)
    if dims is None or not isinstance(keepdim, bool):
        return None
    listed = [dims] if isinstance(dims, int) else list(dims) if isinstance(dims, (tuple, list)) else None
    if listed is None or not all(isinstance(d, int) for d in listed):
        return None
    axes = {d % place.rank for d in listed}
    channel = 1 if place.where == _AXIS1 else place.rank - 1
    if channel in axes or 0 in axes:
        return None
    return _Place(place.where, place.rank if keepdim else place.rank - len(axes), place.repeat)


def _consumers(start: torch.fx.Node, model: nn.Module, handle: QuantHandle, modules: dict[str, nn.Module],
               channels: int, place: _Place) -> tuple[Optional[list[Consumer]], str]:  # fmt: skip
    """Every consumer ``start``'s output reaches (see :func:`find_pairs`), or None and the reason there are none."""
    found: list[Consumer] = []
    frontier: list[tuple[torch.fx.Node, _Place]] = [(start, place)]
    while frontier:
        node, at = frontier.pop()
        if not node.users:
            return None, "its output is not used"
        for user in node.users:
            tensor_args = [a for a in (*user.args, *user.kwargs.values()) if isinstance(a, torch.fx.Node)]
            if tensor_args[:1] != [node] or len(tensor_args) != 1:
                return None, f"its output reaches {user.name} ({_describe(user, model)}) with other operands"
            target = str(user.target)
            if user.op == "call_module" and target in modules and isinstance(modules[target], _CONSUMERS):
                c = modules[target]
                layer = _layer(handle, target, c)
                if layer is None:
                    return None, f"consumer {target} has no weight quantizer"
                per_channel = at.repeat if at.repeat else _inputs(c) // channels
                if isinstance(c, nn.Linear) != (at.where == _LAST) or _inputs(c) != channels * per_channel:
                    return None, f"consumer {target} does not take its channels one to one"
                found.append(Consumer(layer, per_channel))
                continue
            if _is_flatten(user, model) and at.where == _AXIS1:
                frontier.append((user, _Place(_LAST, 2, 0)))
                continue
            if user.target in ("mean", torch.mean):
                after = _after_mean(user, at)
                if after is not None:
                    frontier.append((user, after))
                    continue
            if _passes(user, model):
                frontier.append((user, at))
                continue
            return None, (f"its output reaches {user.name} ({_describe(user, model)}), which does not commute with a "
                          "per-channel factor")  # fmt: skip
    return (found, "") if found else (None, "no consumer")


def _describe(node: torch.fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return type(model.get_submodule(str(node.target))).__name__
    if node.op == "output":
        return "the model's output"
    return getattr(node.target, "__name__", str(node.target))


def check_pairs(pairs: Sequence[ChannelPair], skipped: Sequence[str], handle: QuantHandle, algorithm: str) -> list[Layer]:
    """The layers of ``pairs`` (each once, in order) after checking there is a pair, the handle is calibrated and
    no layer holds chosen codes; ``ValueError`` naming the cause otherwise."""
    if not pairs:
        why = "; ".join(skipped) if skipped else "no Linear/Conv/LayerNorm producer with a weight quantizer"
        raise ValueError(f"{algorithm}: the model has no pair of layers to rescale ({why})")
    layers: dict[str, Layer] = {}
    for pair in pairs:
        for layer in (pair.producer, *(c.layer for c in pair.consumers)):
            layers.setdefault(layer.name, layer)
    for layer in layers.values():
        if layer.quantizer.has_code_offsets:
            raise ValueError(f"{algorithm}: module {layer.name!r} holds chosen codes (AdaRound/GPTQ) for its current "
                             f"weight: run {algorithm} before the algorithms that choose codes")  # fmt: skip
    uncalibrated = [f"{n!r} {r}" for n, r, q in handle.quantizers() if q.enabled and not q.calibrated and not q.optional]
    if uncalibrated:
        raise ValueError(f"{algorithm}: calibrate the handle first (handle.calibrate()); no qparams for "
                         f"{', '.join(uncalibrated[:4])}")  # fmt: skip
    return list(layers.values())


def input_ranges(pair: ChannelPair) -> torch.Tensor:
    """``max |W[:, c, ...]|`` over every consumer's (rescaled) weight, per producer channel ``c``."""
    out = torch.zeros(pair.channels)
    for c in pair.consumers:
        w = c.layer.weight.abs()
        if isinstance(c.layer.module, nn.Linear):
            per = w.reshape(w.shape[0], pair.channels, c.repeat).amax(dim=(0, 2))
        else:
            m = c.layer.module
            assert isinstance(m, (nn.Conv1d, nn.Conv2d))
            cols = w.reshape(w.shape[0], w.shape[1], -1).amax(dim=2)  # (C_out, C_in / groups)
            per = cols.reshape(m.groups, w.shape[0] // m.groups, w.shape[1]).amax(dim=1).reshape(-1)
        out = torch.maximum(out, per)
    return out


def apply_factors(pair: ChannelPair, f: torch.Tensor) -> None:
    """Scale the producer's output channels by ``1 / f`` and the consumers' input channels by ``f`` (float32,
    positive, one per channel), multiplying the factors the quantizers already hold."""
    f = f.to(torch.float32)
    p = pair.producer
    w = original_parameter(p.module)
    rows = (1.0 / f).reshape(-1, *([1] * (w.dim() - 1))).expand(w.shape)
    p.quantizer.set_prescale(_held(p.quantizer.prescale, w) * rows)
    held_b = p.quantizer.bias_prescale if p.quantizer.bias_prescale.numel() else torch.ones(pair.channels)
    p.quantizer.set_bias_prescale(held_b * (1.0 / f), p.module)
    for c in pair.consumers:
        m, q = c.layer.module, c.layer.quantizer
        wc = original_parameter(m)
        cols = f.repeat_interleave(c.repeat)
        if isinstance(m, nn.Linear):
            factors = cols.reshape(1, -1).expand(wc.shape)
        else:
            assert isinstance(m, (nn.Conv1d, nn.Conv2d))
            per_group_in, per_group_out = wc.shape[1], wc.shape[0] // m.groups
            group = torch.arange(wc.shape[0]) // per_group_out
            index = group.reshape(-1, 1) * per_group_in + torch.arange(per_group_in).reshape(1, -1)
            factors = cols[index].reshape(*index.shape, *([1] * (wc.dim() - 2))).expand(wc.shape)
        q.set_prescale(_held(q.prescale, wc) * factors)


def _held(factors: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return factors if factors.numel() else torch.ones_like(w, dtype=torch.float32)


@torch.no_grad()
def recalibrate(model: nn.Module, handle: QuantHandle, batches: Sequence[object]) -> None:
    """Every enabled quantizer's observations and qparams forgotten and calibrated again on ``batches``, with
    the tensor statistics the lowering uses (``handle.edges``): the rescaled model's ranges."""
    for _, _, q in handle.quantizers():
        if q.enabled:
            q.reset()
    handle.edges = None
    with eval_mode(model), handle.calibrate():
        for batch in batches:
            call_model(model, batch)
