"""Quantization error metrics, per tensor and per layer.

For a reference tensor ``r`` (float) and a test tensor ``t`` (quantized) of the same
shape, all sums in float64 over every element:

* ``sqnr_db(r, t) = 10 * log10(sum(r^2) / sum((r - t)^2))``: ``+inf`` when ``t == r``
  exactly (including both all-zero), ``-inf`` when ``r`` is all zero and ``t`` is not;
* ``max_abs_error(r, t) = max |r - t|`` (0 for empty tensors);
* ``mean_abs_error(r, t) = mean |r - t|``.

Non-finite values: NaN anywhere (also ``inf - inf``) gives NaN for all three; an
infinite error with a finite reference gives ``sqnr_db = -inf`` and an infinite
``max_abs_error``. Shapes must match exactly (no broadcasting).

:func:`collect_layer_errors` measures every quantized layer of a model with one model
and its :class:`~quant.sim.attach.QuantHandle`: it hooks the quantized modules, runs the
inputs once with the handle disabled (float) and once enabled, and compares each
layer's output (after its output quantizer, if any).

>>> import torch
>>> r = torch.tensor([1.0, -2.0, 3.0, 4.0])
>>> round(sqnr_db(r, r + torch.tensor([0.1, 0.0, -0.1, 0.0])), 4)
31.7609
>>> sqnr_db(r, r), max_abs_error(r, r + 0.5), mean_abs_error(r, torch.zeros(4))
(inf, 0.5, 2.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from quant.sim.attach import QuantHandle

__all__ = ["LayerError", "sqnr_db", "max_abs_error", "mean_abs_error", "collect_layer_errors"]


def _check_pair(reference: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("reference", reference), ("test", test)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.is_complex():
            raise TypeError(f"{name} must be real, got {t.dtype}")
    if reference.shape != test.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} != test shape {tuple(test.shape)}")
    return reference.detach().double(), test.detach().double()


@dataclass
class _Sums:
    """Float64 running sums that make the three metrics over several batches."""

    signal: float = 0.0
    noise: float = 0.0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    count: int = 0

    def add(self, reference: torch.Tensor, test: torch.Tensor) -> None:
        r, t = _check_pair(reference, test)
        err = r - t
        self.signal += float(torch.sum(r * r))
        self.noise += float(torch.sum(err * err))
        abs_err = err.abs()
        self.abs_sum += float(abs_err.sum())
        if abs_err.numel():
            batch_max = float(abs_err.max())
            if math.isnan(batch_max) or math.isnan(self.abs_max):
                self.abs_max = math.nan
            else:
                self.abs_max = max(self.abs_max, batch_max)
        self.count += abs_err.numel()

    def sqnr_db(self) -> float:
        if math.isnan(self.signal) or math.isnan(self.noise):
            return math.nan
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        if math.isinf(self.noise):
            return math.nan if math.isinf(self.signal) else -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    def mean(self) -> float:
        return self.abs_sum / self.count if self.count else 0.0


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB, ``10*log10(sum r^2 / sum (r-t)^2)``."""
    sums = _Sums()
    sums.add(reference, test)
    return sums.sqnr_db()


def max_abs_error(reference: torch.Tensor, test: torch.Tensor) -> float:
    """``max |reference - test|`` in float64 (0.0 for empty tensors)."""
    sums = _Sums()
    sums.add(reference, test)
    return sums.abs_max


def mean_abs_error(reference: torch.Tensor, test: torch.Tensor) -> float:
    """``mean |reference - test|`` in float64 (0.0 for empty tensors)."""
    sums = _Sums()
    sums.add(reference, test)
    return sums.mean()


@dataclass(frozen=True)
class LayerError:
    """Error of one layer's output, pooled over every call and every batch."""

    sqnr_db: float
    max_abs_error: float
    mean_abs_error: float
    calls: int = 1


Batch = Union[torch.Tensor, Sequence[torch.Tensor]]


def _batches(inputs: Union[Batch, Iterable[Batch]]) -> list[tuple[Any, ...]]:
    """Normalize to a list of positional-argument tuples."""
    if isinstance(inputs, torch.Tensor):
        return [(inputs,)]
    if isinstance(inputs, tuple):
        return [inputs]
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise TypeError(
            "inputs must be a tensor, a tuple of forward arguments, or an iterable (e.g. a list) of those, "
            f"got {type(inputs).__name__}"
        )
    out = []
    for item in inputs:
        if isinstance(item, torch.Tensor):
            out.append((item,))
        elif isinstance(item, tuple):
            out.append(item)
        else:
            raise TypeError(f"each batch must be a tensor or a tuple of forward arguments, got {type(item).__name__}")
    if not out:
        raise ValueError("inputs is empty")
    return out


def collect_layer_errors(
    model: nn.Module,
    handle: "QuantHandle",
    inputs: Union[Batch, Iterable[Batch]],
    *,
    isolate: bool = False,
) -> dict[str, LayerError]:
    """Per quantized layer, the error of its quantized output against its float output.

    ``model`` is the model ``handle`` was attached to; ``inputs`` is one batch (a
    tensor, or a tuple of positional forward arguments) or a list of batches. Forward
    hooks on the modules in ``handle.modules`` capture each layer's output (after its
    output quantizer, if any); everything runs under ``torch.no_grad()``.

    * ``isolate=False``: each batch runs twice, with the handle disabled (float
      reference) and enabled (quantized). A layer's reference is the float model's
      output at that layer, so the error accumulates over the layers before it, as in
      deployment. The k-th call of a module in the float run pairs with its k-th call
      in the quantized run.
    * ``isolate=True``: each batch runs once, quantized; at every call of a quantized
      layer the layer runs a second time on the same (unquantized) input with its own
      quantizers disabled. The error is then that layer's alone. Other forward hooks
      on that layer run twice.

    Errors pool over all calls and batches. The run changes nothing: quantizers observe
    nothing (``observing`` is off during the runs and restored after, so every quantizer
    must already have parameters: calibrate first), ``enabled`` flags are restored and
    the capture hooks removed, even when a forward raises. BatchNorm statistics follow
    ``model``'s train/eval mode, so call ``model.eval()`` first. Returns
    ``{module name: LayerError}`` in the handle's module order; layers never called
    are absent.
    """
    if handle.removed:
        raise RuntimeError("collect_layer_errors: the handle was removed")
    if handle.model is not model:
        raise ValueError("collect_layer_errors: handle was not attached to this model")
    batches = _batches(inputs)
    entries = list(handle.quantizers())
    uncalibrated = [f"{n!r} {r}" for n, r, q in entries if not q.calibrated and not q.optional]
    if uncalibrated:
        raise ValueError(
            f"collect_layer_errors: quantizers without parameters ({', '.join(uncalibrated)}); calibrate first"
        )
    flags = [(q.enabled, q.observing) for _, _, q in entries]
    by_module: dict[str, list[Any]] = {}
    for name, _, q in entries:
        by_module.setdefault(name, []).append(q)
    sums: dict[str, _Sums] = {}
    calls: dict[str, int] = {}
    captured: dict[str, list[torch.Tensor]] = {}
    raw_args: dict[str, tuple[Any, ...]] = {}
    busy: set[str] = set()

    def record(name: str, reference: torch.Tensor, test: torch.Tensor) -> None:
        sums.setdefault(name, _Sums()).add(reference, test)
        calls[name] = calls.get(name, 0) + 1

    def keep_input(name: str) -> Any:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if name not in busy:
                raw_args[name] = args

        return pre_hook

    def capture(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if name in busy or not isinstance(output, torch.Tensor):
                return
            if not isolate:
                captured.setdefault(name, []).append(output.detach())
                return
            busy.add(name)
            saved = [q.enabled for q in by_module[name]]
            try:
                for q in by_module[name]:
                    q.enabled = False
                reference = module(*raw_args.pop(name))
            finally:
                for q, enabled in zip(by_module[name], saved):
                    q.enabled = enabled
                busy.discard(name)
            record(name, reference, output)

        return hook

    removables = [m.register_forward_hook(capture(name)) for name, m in handle.modules.items()]
    if isolate:
        removables += [
            m.register_forward_pre_hook(keep_input(name), prepend=True) for name, m in handle.modules.items()
        ]
    def as_the_user_set() -> None:  # the quantized pass: the quantizers the user disabled stay disabled
        for (_, _, q), (enabled, _) in zip(entries, flags):
            q.enabled = enabled

    try:
        for _, _, q in entries:
            q.observing = False
        for batch in batches:
            with torch.no_grad():
                if isolate:
                    as_the_user_set()
                    model(*batch)
                    continue
                captured.clear()
                handle.disable()
                model(*batch)
                reference = {k: list(v) for k, v in captured.items()}
                captured.clear()
                as_the_user_set()
                model(*batch)
            for name, outs in captured.items():
                refs = reference.get(name, [])
                if len(refs) != len(outs):
                    raise RuntimeError(
                        f"collect_layer_errors: module {name!r} ran {len(refs)} time(s) in float and "
                        f"{len(outs)} time(s) quantized; cannot pair its outputs"
                    )
                for r, t in zip(refs, outs):
                    record(name, r, t)
    finally:
        for h in removables:
            h.remove()
        for (_, _, q), (enabled, observing) in zip(entries, flags):
            q.enabled, q.observing = enabled, observing
    return {
        name: LayerError(sums[name].sqnr_db(), sums[name].abs_max, sums[name].mean(), calls[name])
        for name in handle.modules
        if name in sums
    }
