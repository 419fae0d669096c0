"""Observers: collect statistics of a tensor and turn them into ``(scale, zero_point)``.

An observer watches the tensors a quantization point sees (``update(x)``, no
gradients) and keeps, per quantization-parameter element, a range ``[min_val, max_val]``
in float32; ``qparams()`` maps that range to ``(scale, zero_point)`` with
:func:`quant.sim.qparams.qparams_from_range` (range widened to contain 0, ``s > 0``, pow2 if
the spec says so). The statistics have the shape :func:`quant.sim.functional.qparams_shape`
gives for the observed tensor, i.e. ``update`` reduces over every dimension except the
granularity's:

* ``tensor``: over all elements, shape ``()``;
* ``channel``: over all dimensions but ``axis``, shape ``(S[axis],)``;
* ``group``: over the ``group_size`` elements of each group, shape ``S`` with
  ``S[axis]`` replaced by ``S[axis] // group_size``.

Observers differ in how a range is chosen and accumulated over batches:

===================  =============================================================
``minmax``           running minimum and maximum of everything seen
``moving_average``   ``m <- m + momentum * (batch - m)`` of the batch min and max,
                     the first batch taken as is (``torch.ao`` semantics)
``percentile``       the ``100 - p`` and ``p`` percentiles of each batch, averaged over
                     batches
``mse``              per channel/group, the clipping ratio of the batch min-max range
                     (grid ``linspace(min_ratio, 1, num_candidates)``) minimizing the
                     fake-quantization squared error, the clipped ranges averaged over
                     batches
===================  =============================================================

NaN or Inf in an observed tensor raises ``ValueError`` naming the observer; an empty
tensor is ignored. Statistics are buffers (empty until the first update), so
``state_dict`` round-trips, also into a fresh observer that has seen nothing.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> obs = make_observer("minmax", QuantSpec(bits=4, granularity="channel", axis=0))
>>> obs.update(torch.tensor([[-1.0, 0.5], [0.25, 2.0]]))
>>> obs.min_val.tolist(), obs.max_val.tolist()
([-1.0, 0.25], [0.5, 2.0])
>>> [t.tolist() for t in obs.qparams()]
[[0.1428571492433548, 0.2857142984867096], [0, 0]]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
from torch import nn

from quant.sim import fused
from quant.sim.functional import QParams, group_view, normalized_axis, fake_quantize, qparams_shape
from quant.sim.qparams import float32, range_to_qparams
from quant.contract.spec import QuantSpec

__all__ = [
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "OBSERVERS",
    "make_observer",
    "reduce_to_qparams_shape",
]


def _stat_view(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` (a view) and the dimensions whose reduction leaves ``qparams_shape(x.shape)``."""
    if spec.granularity == "tensor":
        return x, tuple(range(x.dim()))
    axis = normalized_axis(x.dim(), spec)
    if spec.granularity == "channel":
        return x, tuple(d for d in range(x.dim()) if d != axis)
    return group_view(x, spec), (axis + 1,)


def reduce_to_qparams_shape(x: torch.Tensor, spec: QuantSpec, op: str) -> torch.Tensor:
    """Reduce ``x`` with ``op`` (``"amin"``, ``"amax"``, ``"sum"`` or ``"mean"``) to the
    shape :func:`~quant.sim.functional.qparams_shape` gives for ``x`` under ``spec``.

    >>> import torch
    >>> x = torch.arange(8.0).reshape(2, 4)
    >>> reduce_to_qparams_shape(x, QuantSpec(granularity="group", axis=1, group_size=2), "amax").tolist()
    [[1.0, 3.0], [5.0, 7.0]]
    """
    qparams_shape(x.shape, spec)  # validates axis and group_size with a clear message
    view, dims = _stat_view(x, spec)
    if x.dim() > 0 and not dims:
        return view
    if op == "amin":
        return view.amin(dim=dims)
    if op == "amax":
        return view.amax(dim=dims)
    if op == "sum":
        return view.sum(dim=dims)
    if op == "mean":
        return view.mean(dim=dims)
    raise ValueError(f"reduce_to_qparams_shape: op={op!r} is not one of 'amin', 'amax', 'sum', 'mean'")


def _rows(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``x`` as a matrix with one row per quantization-parameter element (row-major
    order of ``qparams_shape``) and the elements that share it along the columns."""
    if spec.granularity == "tensor":
        return x.reshape(1, -1)
    axis = normalized_axis(x.dim(), spec)
    if spec.granularity == "channel":
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)
    assert spec.group_size is not None
    return group_view(x, spec).movedim(axis + 1, -1).reshape(-1, spec.group_size)


def resize_for_load(module: nn.Module, state_dict: Mapping[str, Any], prefix: str) -> None:
    """Give ``module``'s own buffers and parameters the shapes they have in ``state_dict``.

    Statistics and quantization parameters take their shape from the first observed
    tensor, so a fresh module holds empty placeholders; this lets ``load_state_dict``
    fill them. Parameters keep their identity (only ``.data`` changes), so an optimizer
    built before loading still sees them.
    """
    for name, buf in list(module._buffers.items()):
        key = prefix + name
        if buf is not None and key in state_dict and isinstance(state_dict[key], torch.Tensor):
            if state_dict[key].shape != buf.shape:
                module._buffers[name] = torch.empty(state_dict[key].shape, dtype=buf.dtype, device=buf.device)
    for name, param in module._parameters.items():
        key = prefix + name
        if param is not None and key in state_dict and isinstance(state_dict[key], torch.Tensor):
            if state_dict[key].shape != param.shape:
                param.data = torch.empty(state_dict[key].shape, dtype=param.dtype, device=param.device)


def _distributed() -> bool:
    """Whether a ``torch.distributed`` process group of more than one process is running."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


class Observer(nn.Module):
    """Base class: a range ``[min_val, max_val]`` per quantization-parameter element.

    In training mode under ``torch.distributed`` (QAT with DDP), the batch extremes of
    :class:`MinMaxObserver` and :class:`MovingAverageMinMaxObserver` are all-reduced (min, max)
    across the processes first, so every rank folds in the extremes of the global batch and the
    statistics (hence the scales) stay identical on every rank. In eval mode (calibration) each
    process observes alone; an observer is in eval mode until the model holding it is put in training.

    Subclasses implement ``_observe(x)`` (``x`` detached, floating, non-empty) and may add
    buffers; ``min_val``/``max_val`` are float32 buffers of the granularity's shape,
    empty (shape ``(0,)``) until data has been seen.
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"{type(self).__name__}: spec must be a QuantSpec, got {type(spec).__name__}")
        self.spec = spec
        self.register_buffer("min_val", torch.empty(0))
        self.register_buffer("max_val", torch.empty(0))
        self._host = fused.HostScalars()
        self.train(False)  # eval until the model it belongs to trains (model.train() reaches it)

    @property
    def has_data(self) -> bool:
        """True once a (non-empty) tensor has been observed."""
        return self.min_val.numel() > 0

    def update(self, x: torch.Tensor) -> None:
        """Fold the statistics of ``x`` into the observer's (no gradients, ``x`` unchanged)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__}.update expects a floating tensor, got {what}")
        qparams_shape(x.shape, self.spec)  # axis / group_size errors before any work
        self.update_checked(x)

    def update_checked(self, x: torch.Tensor) -> None:
        """:meth:`update` for a caller that checked ``x`` already (a floating tensor that fits the spec)."""
        if x.numel() == 0:
            return
        batch = self._host_batch_range(x)
        if batch is not None and self._fold_host_range(*batch):
            return
        channels = self._channel_batch_range(x)
        if channels is not None and self._fold_channel_range(x, *channels):
            return
        with torch.no_grad():
            self._observe(x.detach())

    def _observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _fold_host_range(self, lo: float, hi: float) -> bool:
        """Fold a batch's extremes given as floats the way ``_observe`` would and return True, or return False
        (the default) for an observer that needs the tensor itself."""
        return False

    def qparams(self) -> QParams:
        """``(scale, zero_point)`` for the current range: float32 and int32 tensors of the
        statistics' shape (see :func:`quant.sim.qparams.qparams_from_range`)."""
        if not self.has_data:
            raise RuntimeError(f"{type(self).__name__} has observed no data; call update(x) first")
        in_c = fused.qparams_of_ranges(self.min_val, self.max_val, self.spec) if self.spec.granularity != "tensor" else None
        return in_c if in_c is not None else range_to_qparams(self.min_val, self.max_val, self.spec)

    def reset(self) -> None:
        """Forget everything observed."""
        self.min_val = torch.empty(0, device=self.min_val.device)
        self.max_val = torch.empty(0, device=self.max_val.device)

    # ------------------------------------------------------------------ the per-tensor fast path
    def host_range(self) -> Optional[tuple[float, float]]:
        """``(min_val, max_val)`` as Python floats for a per-tensor observer with data on the CPU (read once
        per change of the buffers, :class:`~quant.sim.fused.HostScalars`), else None."""
        lo, hi = self._buffers["min_val"], self._buffers["max_val"]
        assert lo is not None and hi is not None
        if self.spec.granularity != "tensor" or lo.shape != () or hi.shape != () or lo.device.type != "cpu":
            return None
        return float(self._host.get("min_val", lo)), float(self._host.get("max_val", hi))

    def _host_batch_range(self, x: torch.Tensor) -> Optional[tuple[float, float]]:
        """The extremes of ``x`` as floats by one C pass, when the per-tensor fast path takes ``x``: a per-tensor
        observer whose statistics are CPU scalars (or empty), not under QAT with torch.distributed."""
        lo = self._buffers["min_val"]
        assert lo is not None
        if self.spec.granularity != "tensor" or lo.device.type != "cpu" or lo.shape not in ((), (0,)):
            return None
        if self.training and _distributed():
            return None
        extremes = fused.tensor_extremes(x)
        if extremes is not None and not (math.isfinite(extremes[0]) and math.isfinite(extremes[1])):
            raise ValueError(f"{type(self).__name__}: the observed tensor contains NaN or Inf")
        return extremes

    def _channel_batch_range(self, x: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The per-channel extremes of ``x`` by one C pass (``ValueError`` for NaN/Inf, as ``_batch_minmax``), for
        a per-channel observer on the CPU, not under QAT with torch.distributed; else None."""
        stats = self._buffers["min_val"]
        if self.spec.granularity != "channel" or stats is None or not stats.is_cpu:
            return None
        if self.training and _distributed():
            return None
        extremes = fused.channel_extremes(x.detach(), self.spec)
        if extremes is None:
            return None
        lo, hi, finite = extremes
        if not finite:
            raise ValueError(f"{type(self).__name__}: the observed tensor contains NaN or Inf")
        return lo, hi

    def _fold_channel_range(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        """Fold a batch's per-channel extremes the way ``_observe`` would and return True, or return False (the
        default) for an observer that needs the tensor itself."""
        return False

    def _store_host_range(self, lo: float, hi: float) -> None:
        """``min_val, max_val = lo, hi`` (float32 values), in place when they are CPU scalars already."""
        a, b = self._buffers["min_val"], self._buffers["max_val"]
        assert a is not None and b is not None
        if a.shape == () and b.shape == ():  # unchanged values (a running range that did not grow) are not written
            if not self._host.holds("min_val", a, lo):
                a.fill_(lo)
            if not self._host.holds("max_val", b, hi):
                b.fill_(hi)
        else:
            self.min_val = a = torch.tensor(lo)
            self.max_val = b = torch.tensor(hi)
        self._host.put("min_val", a, lo)
        self._host.put("max_val", b, hi)

    # ------------------------------------------------------------------ helpers
    def _batch_minmax(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element min and max of ``x`` (float32), raising on NaN/Inf."""
        if self.spec.granularity == "tensor":
            lo, hi = torch.aminmax(x)
        else:
            lo = reduce_to_qparams_shape(x, self.spec, "amin")
            hi = reduce_to_qparams_shape(x, self.spec, "amax")
        lo = lo.to(torch.float32)
        hi = hi.to(torch.float32)
        if self.training and _distributed():  # QAT under torch.distributed: the extremes of the global batch
            lo, hi = lo.contiguous(), hi.contiguous()
            torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
            torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        # amin/amax propagate NaN and +-Inf, so finite extremes mean finite data.
        if not bool((torch.isfinite(lo) & torch.isfinite(hi)).all()):
            raise ValueError(f"{type(self).__name__}: the observed tensor contains NaN or Inf")
        return lo, hi

    def _check_shape(self, new: torch.Tensor, x: torch.Tensor) -> None:
        if self.has_data and new.shape != self.min_val.shape:
            raise ValueError(
                f"{type(self).__name__}: an input of shape {tuple(x.shape)} gives statistics of shape "
                f"{tuple(new.shape)} under {self.spec.describe()}, but the observer holds statistics of shape "
                f"{tuple(self.min_val.shape)}; reset() it before observing tensors of another shape"
            )

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        resize_for_load(self, state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _extra_params(self) -> str:
        return ""

    def extra_repr(self) -> str:
        extra = self._extra_params()
        return self.spec.describe() + (f", {extra}" if extra else "")


class MinMaxObserver(Observer):
    """Running minimum and maximum: ``min_val = min(min_val, min(x))``, same for max.

    >>> import torch
    >>> obs = MinMaxObserver(QuantSpec(bits=8, signed=False, symmetric=False))
    >>> obs.update(torch.tensor([0.5, 2.0])); obs.update(torch.tensor([-1.0, 1.0]))
    >>> obs.min_val.item(), obs.max_val.item()
    (-1.0, 2.0)
    """

    def _fold_host_range(self, lo: float, hi: float) -> bool:
        running = self.host_range()  # the float32 values _observe computes, without tensor operations
        if running is not None:
            lo, hi = min(running[0], lo), max(running[1], hi)
        self._store_host_range(lo, hi)
        return True

    def _observe(self, x: torch.Tensor) -> None:
        self._fold_channel_range(x, *self._batch_minmax(x))

    def _fold_channel_range(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        self._check_shape(lo, x)
        if self.has_data:
            lo = torch.minimum(self.min_val, lo)
            hi = torch.maximum(self.max_val, hi)
        self._buffers["min_val"], self._buffers["max_val"] = lo, hi  # the buffers' new values (past __setattr__)
        return True


class MovingAverageMinMaxObserver(Observer):
    """Exponential moving average of the batch min and max.

    The first batch sets ``min_val, max_val``; each later batch updates
    ``min_val <- min_val + momentum * (min(x) - min_val)`` (float32), and the same for
    ``max_val``, as ``torch.ao.quantization.MovingAverageMinMaxObserver`` does with
    ``averaging_constant = momentum`` (default 0.01).

    >>> import torch
    >>> obs = MovingAverageMinMaxObserver(QuantSpec(), momentum=0.5)
    >>> obs.update(torch.tensor([-1.0, 1.0])); obs.update(torch.tensor([-3.0, 2.0]))
    >>> obs.min_val.item(), obs.max_val.item()
    (-2.0, 1.5)
    """

    def __init__(self, spec: QuantSpec, momentum: float = 0.01) -> None:
        super().__init__(spec)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum <= 1.0:
            raise ValueError(f"MovingAverageMinMaxObserver: momentum={momentum!r} must be a number in (0, 1]")
        self.momentum = float(momentum)

    def _fold_host_range(self, lo: float, hi: float) -> bool:
        running = self.host_range()  # _observe's float32 arithmetic on Python floats (qparams.float32)
        if running is not None:
            m = float32(self.momentum)
            lo = float32(running[0] + float32(m * float32(lo - running[0])))
            hi = float32(running[1] + float32(m * float32(hi - running[1])))
        self._store_host_range(lo, hi)
        return True

    def _observe(self, x: torch.Tensor) -> None:
        self._fold_channel_range(x, *self._batch_minmax(x))

    def _fold_channel_range(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        self._check_shape(lo, x)
        if self.has_data:
            lo = self.min_val + self.momentum * (lo - self.min_val)
            hi = self.max_val + self.momentum * (hi - self.max_val)
        self._buffers["min_val"], self._buffers["max_val"] = lo, hi  # the buffers' new values (past __setattr__)
        return True

    def _extra_params(self) -> str:
        return f"momentum={self.momentum}"


class _AveragingObserver(Observer):
    """An observer whose range is the mean over batches of a per-batch range."""

    count: torch.Tensor

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__(spec)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def _accumulate(self, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> None:
        self._check_shape(lo, x)
        if self.has_data:
            n = (self.count + 1).to(torch.float32)
            lo = self.min_val + (lo - self.min_val) / n
            hi = self.max_val + (hi - self.max_val) / n
        self.min_val, self.max_val = lo, hi
        self.count = self.count + 1

    def reset(self) -> None:
        super().reset()
        self.count = torch.zeros((), dtype=torch.int64, device=self.count.device)


class PercentileObserver(_AveragingObserver):
    """Range ``[P(100 - p), P(p)]`` of each batch, averaged over batches (default ``p = 99.99``).

    ``P(p)`` is the ``p``-th percentile with linear interpolation between order
    statistics (``numpy.percentile``'s default): with the ``n`` values of one
    channel/group sorted as ``v[0] <= ... <= v[n-1]`` and ``h = (n - 1) * p / 100``,
    ``P = v[floor(h)] + (h - floor(h)) * (v[floor(h) + 1] - v[floor(h)])``. Order
    statistics come from ``torch.kthvalue`` (selection, no full sort), vectorized over
    channels/groups. When one channel/group has more than ``max_samples`` elements, the
    percentiles are taken over ``max_samples`` positions drawn uniformly with replacement
    from a generator seeded with ``seed`` on every update (the same positions for every
    channel), so the result is deterministic. The batch ranges are averaged:
    ``min_val = mean over batches of P(100 - p)``, likewise ``max_val``.

    >>> import torch
    >>> obs = PercentileObserver(QuantSpec(), percentile=90.0)
    >>> obs.update(torch.arange(11.0))
    >>> obs.min_val.item(), obs.max_val.item()
    (1.0, 9.0)
    """

    def __init__(
        self, spec: QuantSpec, percentile: float = 99.99, max_samples: int = 1 << 20, seed: int = 0
    ) -> None:
        super().__init__(spec)
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 50.0 <= percentile <= 100.0:
            raise ValueError(f"PercentileObserver: percentile={percentile!r} must be a number in [50, 100]")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"PercentileObserver: max_samples={max_samples!r} must be an integer >= 2")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"PercentileObserver: seed={seed!r} must be an integer")
        self.percentile = float(percentile)
        self.max_samples = max_samples
        self.seed = seed

    def _observe(self, x: torch.Tensor) -> None:
        lo_all, _ = self._batch_minmax(x)  # NaN/Inf check and the statistics' shape
        rows = _rows(x, self.spec)
        n = rows.shape[1]
        if n > self.max_samples:
            gen = torch.Generator().manual_seed(self.seed)
            idx = torch.randint(n, (self.max_samples,), generator=gen).to(rows.device)
            rows = rows.index_select(1, idx)
            n = self.max_samples
        lo = _row_percentile(rows, 100.0 - self.percentile).reshape(lo_all.shape)
        hi = _row_percentile(rows, self.percentile).reshape(lo_all.shape)
        self._accumulate(lo, hi, x)

    def _extra_params(self) -> str:
        return f"percentile={self.percentile}"


def _row_percentile(rows: torch.Tensor, p: float) -> torch.Tensor:
    """Linearly interpolated ``p``-th percentile of each row (float32)."""
    n = rows.shape[1]
    h = (n - 1) * p / 100.0
    k = min(int(math.floor(h)), n - 1)
    frac = h - k
    v0 = rows.kthvalue(k + 1, dim=1).values.to(torch.float32)
    if frac == 0.0 or k + 1 >= n:
        return v0
    v1 = rows.kthvalue(k + 2, dim=1).values.to(torch.float32)
    return torch.lerp(v0, v1, frac)


class MSEObserver(_AveragingObserver):
    """Clipping range minimizing the fake-quantization squared error, per channel/group.

    For each batch, with its min-max range ``[lo, hi]`` per channel/group, the candidates
    are the ranges ``[c * lo, c * hi]`` for ``c`` in ``linspace(min_ratio, 1,
    num_candidates)`` (default 100 ratios from 0.3). Each candidate range becomes
    ``(s, z)`` by :func:`quant.sim.qparams.qparams_from_range` and is scored by
    ``sum((fake_quantize(x, s, z) - x)^2)`` over the channel/group, with the spec's
    rounding (stochastic rounding draws from a generator seeded with 0 for every
    candidate, so the search is deterministic). Every channel/group keeps its best
    ratio (ties go to the larger ratio, i.e. less clipping); the loop runs over the
    candidates, never over channels. The chosen ranges are averaged over batches.

    >>> import torch
    >>> x = torch.cat([torch.linspace(-1.0, 1.0, 999), torch.tensor([8.0])])
    >>> obs = MSEObserver(QuantSpec(bits=4))
    >>> obs.update(x)
    >>> obs.max_val.item() < 8.0
    True
    """

    def __init__(self, spec: QuantSpec, num_candidates: int = 100, min_ratio: float = 0.3) -> None:
        super().__init__(spec)
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
            raise ValueError(f"MSEObserver: num_candidates={num_candidates!r} must be an integer >= 1")
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or not 0.0 < min_ratio <= 1.0:
            raise ValueError(f"MSEObserver: min_ratio={min_ratio!r} must be a number in (0, 1]")
        self.num_candidates = num_candidates
        self.min_ratio = float(min_ratio)

    def ratios(self) -> list[float]:
        """The candidate clipping ratios, from 1.0 down to ``min_ratio``."""
        if self.num_candidates == 1:
            return [1.0]
        step = (1.0 - self.min_ratio) / (self.num_candidates - 1)
        return [1.0 - i * step for i in range(self.num_candidates)]

    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_minmax(x)
        best_err: Optional[torch.Tensor] = None
        best_ratio = torch.ones_like(lo)
        for ratio in self.ratios():
            s, z = range_to_qparams(lo * ratio, hi * ratio, self.spec)
            gen = torch.Generator(device=x.device).manual_seed(0) if self.spec.rounding == "stochastic" else None
            xq = fake_quantize(x, s.to(x.dtype), z, self.spec, generator=gen, validate=False)
            err = reduce_to_qparams_shape((xq - x).square(), self.spec, "sum").to(torch.float32)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
        self._accumulate(lo * best_ratio, hi * best_ratio, x)

    def _extra_params(self) -> str:
        return f"num_candidates={self.num_candidates}, min_ratio={self.min_ratio}"


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, spec: QuantSpec, **kwargs: Any) -> Observer:
    """The observer registered as ``name`` (one of :data:`OBSERVERS`) for ``spec``.

    Keyword arguments go to the observer's constructor; unknown ones raise ``TypeError``.

    >>> make_observer("moving_average", QuantSpec(bits=4), momentum=0.1)
    MovingAverageMinMaxObserver(int4 sym per-tensor half_even, momentum=0.1)
    >>> make_observer("histogram", QuantSpec())
    Traceback (most recent call last):
    ...
    ValueError: unknown observer 'histogram'; allowed: 'minmax', 'moving_average', 'percentile', 'mse'
    """
    try:
        cls = OBSERVERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown observer {name!r}; allowed: {', '.join(map(repr, OBSERVERS))}"
        ) from None
    return cls(spec, **kwargs)
