"""The fused CPU path of fake quantization: one pass over the data in C (``quant/csrc/fake_quant.h``).

:func:`quant.sim.functional.fake_quantize` hands a call here when it can take it: a CPU float32 input,
a rounding mode without random draws, a non-binary spec, and a layout the loops read in place (any
contiguous input; a per-tensor scheme also takes any permutation of one, such as channels-last or a
transposed view, whose output and mask keep its strides). The C loops compute, element by element in float32, exactly the torch path's arithmetic::

    r = round(x * (1/s));  q = clamp(r, qmin - z, qmax - z);  out = q * s;  mask = (q == r)

so the values are bit-identical to the torch path (up to the sign of a zero output, where torch's own
vectorized and scalar clamps disagree); NaN stays NaN and +-Inf saturate with a 0 in the mask. The mask
is one byte per element (the torch path keeps a float32 mask), and the backward is one more pass:
``grad_in = grad_out * mask``. A pass runs on the calling thread: the loops can split a large tensor
over more (``LOWBIT_FQ_THREADS=n``), but next to torch's OpenMP workers, which spin between their own
parallel regions, two threads of ours made a 2-thread training step slower, not faster (MobileNetV2-style,
batch 16: 2.01x float with them, 1.59x without; ``benchmarks/bench_sim.py``).

Everything else (CUDA, float64, stochastic rounding, binary specs, strided layouts) takes the torch
path, which stays the reference. :func:`fused_path` switches the fused path off or forces its loops
(``"portable"``, ``"avx2"``), which is how the tests run every property on both paths.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> x = torch.tensor([-1.0, 0.26, 0.25, 9.0, float("nan")])
>>> out, mask = fake_quantize_fused(x, torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), QuantSpec(bits=4), True)
>>> out.tolist()[:4], mask.tolist()
([-1.0, 0.5, 0.0, 3.5], [1, 1, 1, 0, 0])
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from types import ModuleType
from typing import Callable, Iterator, Optional, Union

import torch

from quant.contract.spec import QuantSpec

__all__ = [
    "FUSED_ISAS",
    "StraightThrough",
    "FusedLSQ",
    "FusedPACT",
    "pact_forward",
    "lsq_parts",
    "active",
    "available",
    "fake_quantize_fused",
    "fused_path",
    "fused_applies",
    "masked_gradient",
    "HostScalars",
    "HostSite",
    "fake_quantize_per_tensor",
    "fake_quantize_per_tensor_with_mask",
    "tensor_extremes",
    "channel_extremes",
    "qparams_of_ranges",
    "dense",
    "lstm_step_applies",
    "lstm_backward_at",
    "lstm_pointwise_at",
    "check_lstm_buffer",
    "lstm_ones",
    "sigmoid",
    "tanh",
]


def _load() -> Optional[ModuleType]:
    try:
        return importlib.import_module("quant._fakequant")
    except ImportError:  # a source tree without the built extension: the torch path only
        return None


_EXT = _load()
_ROUNDING = {"half_even": 0, "half_away": 1, "half_up": 2, "floor": 3}
_GRANULARITY = {"tensor": 0, "channel": 1, "group": 2}
#: The loop sets :func:`fused_path` can force, by name.
FUSED_ISAS = {"auto": 0, "portable": 1, "avx2": 2}
_MODE = {"isa": 0, "on": _EXT is not None}


def _threads() -> int:
    """The threads a C pass may split its work over: ``LOWBIT_FQ_THREADS`` when set, else 1 (module doc)."""
    try:
        return max(1, int(os.environ.get("LOWBIT_FQ_THREADS", "1")))
    except ValueError:
        raise ValueError(f"LOWBIT_FQ_THREADS={os.environ['LOWBIT_FQ_THREADS']!r} must be a positive integer") from None


def available(isa: str = "auto") -> bool:
    """Whether the extension is built and ``isa``'s loops run on this CPU."""
    return _EXT is not None and (isa == "auto" or bool(_EXT.isa_available(FUSED_ISAS[isa])))


def active() -> bool:
    """Whether calls go to the fused path now (the extension is built and :func:`fused_path` leaves it on)."""
    return bool(_MODE["on"])


@contextlib.contextmanager
def fused_path(mode: str) -> Iterator[None]:
    """Within the block, ``"off"`` sends every call to the torch path; ``"auto"`` (the default outside) uses
    the best loops the CPU has; ``"portable"``/``"avx2"`` force those loops (``RuntimeError`` if they
    cannot run here). Not thread-safe: a process-wide setting, meant for tests and benchmarks."""
    if mode != "off" and mode not in FUSED_ISAS:
        raise ValueError(f"fused_path: mode={mode!r} is not 'off' or one of {', '.join(map(repr, FUSED_ISAS))}")
    if mode != "off" and not available(mode):
        raise RuntimeError(f"fused_path: the fused fake quantization with {mode!r} loops is not available here")
    saved = dict(_MODE)
    _MODE["on"] = mode != "off"
    _MODE["isa"] = FUSED_ISAS.get(mode, 0)
    try:
        yield
    finally:
        _MODE.update(saved)


def dense(x: torch.Tensor) -> bool:
    """Whether ``x``'s elements fill ``numel`` consecutive places from ``data_ptr()`` in some order: contiguous,
    or a permutation of a contiguous tensor (channels-last, a transposed view). Such a tensor is read as one
    flat array by an elementwise loop, and ``torch.empty_like`` gives its strides to a new one."""
    if x.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _dense_in_place(x: torch.Tensor, spec: QuantSpec) -> bool:
    """Whether the loops can read ``x`` where it is: contiguous, or any :func:`dense` layout under a per-tensor
    scheme (elementwise with one scale, the order does not matter)."""
    return x.is_contiguous() or (spec.granularity == "tensor" and dense(x))


def fused_applies(x: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> bool:
    """Whether :func:`fake_quantize_fused` takes this call (module doc); else the torch path does."""
    return (
        bool(_MODE["on"])
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and scale.device.type == "cpu"
        and not spec.is_binary
        and spec.rounding in _ROUNDING
        and _dense_in_place(x, spec)
    )


def _view(shape: torch.Size, spec: QuantSpec) -> tuple[int, int, int, int]:
    """``(outer, channels, inner, group)``: the (outer, channels, inner) view of fake_quant.h."""
    if spec.granularity == "tensor":
        return 1, 1, shape.numel(), 1
    assert spec.axis is not None
    axis = spec.axis % len(shape)
    outer, inner = 1, 1
    for d in shape[:axis]:
        outer *= d
    for d in shape[axis + 1 :]:
        inner *= d
    return outer, shape[axis], inner, spec.group_size or 1


def _qparams_count(granularity: str, outer: int, channels: int, inner: int, group: int) -> int:
    """The number of qparams of fake_quant.h's (outer, channels, inner) view."""
    return {"tensor": 1, "channel": channels, "group": outer * (channels // group) * inner}[granularity]


def fake_quantize_fused(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec, need_mask: bool
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The fake-quantized ``x`` and, with ``need_mask``, its uint8 gradient mask, for a call
    :func:`fused_applies` accepted, with ``scale``/``zero_point`` already checked against ``x`` and
    ``spec`` (:func:`~quant.sim.functional.check_qparams`): any shape of the right number of elements."""
    assert _EXT is not None
    s = scale.detach().to(torch.float32).contiguous()
    z = zero_point.detach().to(torch.int32).contiguous()
    outer, channels, inner, group = _view(x.shape, spec)
    count = _qparams_count(spec.granularity, outer, channels, inner, group)
    if s.numel() != count or z.numel() != count:  # the C loops read exactly this many: never more
        raise ValueError(f"fake_quantize_fused: {s.numel()} scales and {z.numel()} zero points for an input of "
                         f"shape {tuple(x.shape)} under {spec.describe()}, which needs {count}")  # fmt: skip
    out = torch.empty_like(x)
    mask = torch.empty_like(x, dtype=torch.uint8) if need_mask else None
    xd = x.detach()
    _EXT.forward(
        xd.data_ptr(), out.data_ptr(), mask.data_ptr() if mask is not None else 0, s.data_ptr(),
        0 if spec.symmetric else z.data_ptr(), outer, channels, inner, group, _GRANULARITY[spec.granularity],
        spec.qmin, spec.qmax, _ROUNDING[spec.rounding], _threads(), _MODE["isa"],
    )  # fmt: skip
    return out, mask


def masked_gradient(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``grad * mask`` (the straight-through gradient), in one C pass when ``grad`` is a CPU float32 tensor
    laid out as the mask is, else by torch (same values: a product with 0.0 or 1.0)."""
    if (
        _EXT is not None
        and mask.dtype == torch.uint8
        and grad.dtype == torch.float32
        and grad.device.type == "cpu"
        and grad.shape == mask.shape
        and grad.stride() == mask.stride()
        and dense(grad)
    ):
        out = torch.empty_like(grad)
        _EXT.backward(grad.data_ptr(), mask.data_ptr(), out.data_ptr(), grad.numel(), _threads(), _MODE["isa"])
        return out
    return grad * mask


class StraightThrough(torch.autograd.Function):
    """The values ``compute(x)`` returns with their gradient mask, ``(values, mask)``, and the straight-through
    gradient ``grad * mask`` for ``x`` (:func:`masked_gradient`); the mask (uint8, or 0/1 in ``x``'s dtype) is
    the one tensor it keeps. Further tensor inputs (the scale, the zero point) get no gradient: they are
    inputs only so that a result depending on a trainable one still has a gradient function."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,
                compute: Callable[[torch.Tensor], tuple[torch.Tensor, Optional[torch.Tensor]]],
                *qparams: torch.Tensor) -> torch.Tensor:  # fmt: skip
        out, mask = compute(x.detach())
        assert mask is not None
        ctx.save_for_backward(mask)
        ctx.n_qparams = len(qparams)  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        (mask,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return (masked_gradient(grad, mask), None, *(None for _ in range(ctx.n_qparams)))  # type: ignore[attr-defined]


def tensor_extremes(x: torch.Tensor) -> Optional[tuple[float, float]]:
    """``(min, max)`` of a non-empty ``x`` as Python floats in one C pass (both NaN when any element is), or
    None where the fused path does not read ``x`` in place (then use ``torch.aminmax``)."""
    if not (_MODE["on"] and x.dtype == torch.float32 and x.device.type == "cpu" and x.numel()):
        return None
    if not dense(x):
        return None
    assert _EXT is not None
    lo, hi = _EXT.minmax(x.data_ptr(), x.numel(), _MODE["isa"])
    return lo, hi


def channel_extremes(x: torch.Tensor, spec: QuantSpec) -> Optional[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Each channel's ``(min, max)`` of a contiguous CPU float32 ``x`` under a per-channel ``spec``, as
    float32 tensors of shape ``(channels,)`` (NaN where a channel holds one), and whether they are all finite,
    in C; None where this does not apply (then use torch's reductions)."""
    if not (_MODE["on"] and spec.granularity == "channel" and x.dtype == torch.float32 and x.is_cpu
            and x.is_contiguous() and x.numel()):  # fmt: skip
        return None
    assert _EXT is not None
    outer, channels, inner, _ = _view(x.shape, spec)
    lo, hi = torch.empty(channels), torch.empty(channels)
    finite = _EXT.channel_extremes(x.data_ptr(), outer, channels, inner, lo.data_ptr(), hi.data_ptr(), _MODE["isa"])
    return lo, hi, bool(finite)


def qparams_of_ranges(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`quant.sim.qparams.range_to_qparams` of finite float32 ranges ``lo <= hi`` (CPU, any shape) in one C
    pass, bit for bit (``site.c``); None where this does not apply."""
    if not (_MODE["on"] and lo.dtype == torch.float32 and hi.dtype == torch.float32 and lo.is_cpu and hi.is_cpu
            and lo.shape == hi.shape):  # fmt: skip
        return None
    assert _EXT is not None
    lo_c, hi_c = lo.contiguous(), hi.contiguous()
    scale = torch.empty(lo.shape, dtype=torch.float32)
    zero_point = torch.empty(lo.shape, dtype=torch.int32)
    _EXT.qparams(lo_c.data_ptr(), hi_c.data_ptr(), lo.numel(), int(spec.symmetric), int(spec.signed),
                 int(spec.scale == "pow2"), spec.qmin, spec.qmax, scale.data_ptr(), zero_point.data_ptr())  # fmt: skip
    return scale, zero_point


def _forward_tensor(x: torch.Tensor, scale: float, zero_point: int, spec: QuantSpec, mask: bool
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:  # fmt: skip
    assert _EXT is not None
    out = torch.empty_like(x)
    m = torch.empty_like(x, dtype=torch.uint8) if mask else None
    _EXT.forward_tensor(
        x.data_ptr(), out.data_ptr(), m.data_ptr() if m is not None else 0, x.numel(), scale, zero_point,
        spec.qmin, spec.qmax, _ROUNDING[spec.rounding], _threads(), _MODE["isa"],
    )  # fmt: skip
    return out, m


def fake_quantize_per_tensor_with_mask(x: torch.Tensor, scale: float, zero_point: int, spec: QuantSpec
                                       ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`fake_quantize_per_tensor`'s values (no autograd) and the uint8 straight-through mask."""
    out, mask = _forward_tensor(x, scale, zero_point, spec, True)
    assert mask is not None
    return out, mask


def fake_quantize_per_tensor(x: torch.Tensor, scale: float, zero_point: int, spec: QuantSpec) -> torch.Tensor:
    """Fake quantization of ``x`` under a per-tensor ``spec`` with qparams given as numbers (a float32 scale
    > 0 and a zero point in the code range, already checked), for an ``x`` :func:`fused_applies` accepts:
    the values and gradient of :func:`~quant.sim.functional.fake_quantize`, without a tensor per qparam."""
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = StraightThrough.apply(x, lambda t: _forward_tensor(t, scale, zero_point, spec, True))  # type: ignore[no-untyped-call]
        return out
    return _forward_tensor(x, scale, zero_point, spec, False)[0]


Number = Union[float, int]


class HostScalars:
    """Python-number copies of one-element tensors (a quantizer's scale, an observer's range), each valid
    while its tensor is the same object at the same version: replacing the tensor, or changing it in place
    (``fill_``, ``copy_``, ``load_state_dict``), makes the next read take its value again."""

    __slots__ = ("_copies",)

    def __init__(self) -> None:
        self._copies: dict[str, tuple[torch.Tensor, int, Number]] = {}

    def get(self, name: str, t: torch.Tensor) -> Number:
        """The value of the one-element tensor ``t`` (known as ``name``), read once per change."""
        copy = self._copies.get(name)
        if copy is not None and copy[0] is t and copy[1] == t._version:
            return copy[2]
        value: Number = t.item()
        self._copies[name] = (t, t._version, value)
        return value

    def put(self, name: str, t: torch.Tensor, value: Number) -> None:
        """Record that ``t`` now holds ``value`` (the caller just wrote it)."""
        self._copies[name] = (t, t._version, value)

    def holds(self, name: str, t: torch.Tensor, value: Number) -> bool:
        """Whether ``t`` is known to hold exactly ``value`` already (same object and version as when it was read
        or written, and the same number, a float's sign of zero included; NaN never matches), so that writing it
        again can be skipped."""
        copy = self._copies.get(name)
        if copy is None or copy[0] is not t or copy[1] != t._version:
            return False
        old = copy[2]
        return old == value and type(old) is type(value) and math.copysign(1.0, old) == math.copysign(1.0, value)

    def __deepcopy__(self, memo: dict[int, object]) -> "HostScalars":
        return HostScalars()  # a copy reads its own tensors again

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._copies = {}


# --------------------------------------------------------------------------- the pointwise LSTM step
def lstm_step_applies(x: torch.Tensor) -> bool:
    """Whether the pointwise LSTM step (``quant/csrc/lstm_step.h``) runs on data like ``x``: CPU float32."""
    return bool(_MODE["on"]) and x.dtype == torch.float32 and x.device.type == "cpu"


def _address(t: Optional[torch.Tensor], shape: tuple[int, ...], dtype: torch.dtype, name: str) -> int:
    """``t``'s data address after checking it is a contiguous CPU ``dtype`` tensor of ``shape`` (0 for None):
    the C loops read and write exactly that many elements."""
    if t is None:
        return 0
    if t.dtype != dtype or not t.is_cpu or t.shape != shape or not t.is_contiguous():
        raise ValueError(f"lstm step: {name} must be a contiguous CPU {dtype} tensor of shape {shape}, got "
                         f"{t.dtype} {tuple(t.shape)} on {t.device}{'' if t.is_contiguous() else ', strided'}")  # fmt: skip
    return t.data_ptr()


_ONES: dict[tuple[int, ...], torch.Tensor] = {}


def _ones(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor of ones (the mask of a float site), one per shape, never written."""
    ones = _ONES.get(shape)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[shape] = torch.ones(shape, dtype=torch.uint8)
    return ones


def check_lstm_buffer(t: torch.Tensor, rows: int, hidden: int) -> None:
    """``ValueError`` unless ``t`` is a contiguous CPU float32 tensor of ``(T,) rows x hidden`` or ``x 4 hidden``
    elements per step: what :func:`lstm_backward_at` reads and writes by address."""
    if t.dtype != torch.float32 or not t.is_cpu or not t.is_contiguous() or t.shape[-2:] not in (
            (rows, hidden), (rows, 4 * hidden)):  # fmt: skip
        raise ValueError(f"lstm step: a buffer must be a contiguous CPU float32 tensor of rows {rows} x {hidden} "
                         f"or {4 * hidden}, got {t.dtype} {tuple(t.shape)}")  # fmt: skip


def lstm_ones(rows: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The all-ones masks of a float hidden, cell and gates site."""
    return _ones((rows, hidden)), _ones((rows, hidden)), _ones((rows, 4 * hidden))


def lstm_backward_at(rows: int, hidden: int, grad_out: int, grad_h: int, grad_c: int, act: int, tanh_c: int,
                     c_prev: int, mask_hidden: int, mask_cell: int, mask_gates: int, d_scale_hidden: int,
                     d_scale_cell: int, d_scale_gates: int, grad_pre: int, grad_c_prev: int
                     ) -> tuple[float, float, float]:  # fmt: skip
    """One step's pointwise backward (lstm_step.h) by address: the gradients of the gate pre-activations into
    ``grad_pre`` and of ``c_prev`` into ``grad_c_prev`` through the hidden, cell and gates sites' uint8 masks,
    and those sites' LSQ sums (``d_scale_*`` 0 where not LSQ). For the fused recurrence, whose every buffer
    has the step's layout (checked when it was made: its own buffers, the sites' values, and
    :func:`check_lstm_buffer`): no per-call check, so a wrong address is the caller's bug."""
    assert _EXT is not None
    sums: tuple[float, float, float] = _EXT.lstm_backward(
        rows, hidden, grad_out, grad_h, grad_c, act, tanh_c, c_prev, mask_hidden, mask_cell, mask_gates,
        d_scale_hidden, d_scale_cell, d_scale_gates, grad_pre, grad_c_prev, _MODE["isa"],
    )  # fmt: skip
    return sums


def lstm_pointwise_at(parts: int, rows: int, hidden: int, pre: int, c_prev: int, act: int, c: int, tanh_c: int,
                      h: int) -> None:  # fmt: skip
    """The pointwise step by address (lstm_step.h; ``parts``: 1 the cell, the gate activations ``a`` of ``pre``
    ``(B, 4H)`` and ``c = a_f * c_prev + a_i * a_g``; 2 the hidden state, ``tanh(c)`` and ``h = a_o tanh(c)``;
    3 both; the addresses a part does not use are ignored), for the fused recurrence as
    :func:`lstm_backward_at`: no per-call check."""
    assert _EXT is not None
    _EXT.lstm_pointwise(parts, rows, hidden, pre, c_prev, act, c, tanh_c, h, _MODE["isa"])


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The pointwise LSTM step's sigmoid (lstm_step.h) of a CPU float32 tensor: within 3 ulp of the exact
    function above -87 (below, within 1e-38), NaN stays NaN."""
    return _activation(x, "sigmoid")


def tanh(x: torch.Tensor) -> torch.Tensor:
    """The pointwise LSTM step's tanh (lstm_step.h) of a CPU float32 tensor: within 3 ulp, NaN stays NaN."""
    return _activation(x, "tanh")


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    assert _EXT is not None
    x = x.contiguous()
    out = torch.empty_like(x)
    getattr(_EXT, name)(_address(x, tuple(x.shape), torch.float32, "x"), out.data_ptr(), x.numel(), _MODE["isa"])
    return out


# --------------------------------------------------------------------------- LSQ

class FusedLSQ(torch.autograd.Function):
    """LSQ's fake quantization (:func:`quant.sim.learned.lsq_fake_quantize`) on the fused path: the forward is
    :func:`fake_quantize_fused` without a mask, and the backward one C pass over the saved input that gives
    the input gradient ``g * inside`` and every step's sum ``sum g * d(values)/d(step)`` (in float64, times
    ``grad_scale``): nothing but the input (which the graph holds anyway) is kept. Inputs: ``x``, the
    effective step ``s`` (qparams shape), the zero point ``z``, the spec and the gradient scale."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor,
                spec: QuantSpec, grad_scale: float) -> torch.Tensor:  # fmt: skip
        out, _ = fake_quantize_fused(x, s, z, spec, need_mask=False)
        ctx.save_for_backward(x, s, z)
        ctx.spec, ctx.grad_scale = spec, grad_scale  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        assert _EXT is not None
        x, s, z = ctx.saved_tensors  # type: ignore[attr-defined]
        spec: QuantSpec = ctx.spec  # type: ignore[attr-defined]
        x = x.detach()
        if g.dtype != torch.float32 or g.stride() != x.stride():  # the loops read g in x's layout
            g = torch.empty_like(x).copy_(g)
        s32 = s.detach().to(torch.float32).contiguous()
        z32 = z.detach().to(torch.int32).contiguous()
        outer, channels, inner, group = _view(x.shape, spec)
        count = _qparams_count(spec.granularity, outer, channels, inner, group)
        if s32.numel() != count or z32.numel() != count:
            raise ValueError(f"FusedLSQ: {s32.numel()} steps for an input of shape {tuple(x.shape)} under "
                             f"{spec.describe()}, which needs {count}")  # fmt: skip
        grad_x = torch.empty_like(x)
        sums = torch.empty(count, dtype=torch.float64)
        _EXT.lsq_backward(
            x.data_ptr(), s32.data_ptr(), 0 if spec.symmetric else z32.data_ptr(), g.data_ptr(), grad_x.data_ptr(),
            sums.data_ptr(), outer, channels, inner, group, _GRANULARITY[spec.granularity], spec.qmin, spec.qmax,
            _ROUNDING[spec.rounding], _MODE["isa"],
        )  # fmt: skip
        grad_s = (sums * ctx.grad_scale).to(s.dtype).reshape(s.shape)  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        return (grad_x if needs[0] else None), (grad_s if needs[1] else None), None, None, None


# --------------------------------------------------------------------------- a recurrence's site in C
class HostSite:
    """A per-tensor quantizer's observer range and qparams held in C for a run of calls (``fq_site`` of
    ``quant/csrc/fake_quant.h``: the same float32 arithmetic as the quantizer's own forward), or an LSQ
    quantizer's effective step and zero point (``lsq``: the values, mask and derivative of
    :func:`lsq_parts`), made and written back by :meth:`quant.sim.quantizer.Quantizer.host_site` /
    :meth:`~quant.sim.quantizer.Quantizer.end_host_site`."""

    __slots__ = ("state", "quantizing", "lsq", "spec", "last_shape", "observer_name")

    def __init__(self, state: bytearray, quantizing: bool, lsq: bool, spec: QuantSpec, observer_name: str) -> None:
        self.state = state
        self.quantizing = quantizing
        self.lsq = lsq
        self.spec = spec
        self.last_shape: Optional[tuple[int, ...]] = None
        self.observer_name = observer_name

    @classmethod
    def new(cls, spec: QuantSpec, *, observing: bool, quantizing: bool, moving_average: bool, momentum: float,
            range_: Optional[tuple[float, float]], qparams: Optional[tuple[float, int]],
            observer_name: str) -> "HostSite":  # fmt: skip
        assert _EXT is not None
        lo, hi = range_ if range_ is not None else (0.0, 0.0)
        scale, zero_point = qparams if qparams is not None else (1.0, 0)
        state = _EXT.site_new(
            int(observing), int(quantizing), int(moving_average), momentum, int(range_ is not None), lo, hi,
            int(spec.symmetric), int(spec.signed), int(spec.scale == "pow2"), spec.qmin, spec.qmax,
            _ROUNDING[spec.rounding], int(qparams is not None), scale, zero_point, 0,
        )  # fmt: skip
        return cls(state, quantizing, False, spec, observer_name)

    @classmethod
    def new_lsq(cls, spec: QuantSpec, step: float, zero_point: int) -> "HostSite":
        """An LSQ site quantizing with the effective ``step`` and ``zero_point`` (fixed for the run)."""
        assert _EXT is not None
        state = _EXT.site_new(0, 1, 0, 0.0, 0, 0.0, 0.0, int(spec.symmetric), int(spec.signed),
                              int(spec.scale == "pow2"), spec.qmin, spec.qmax, _ROUNDING[spec.rounding], 1, step,
                              zero_point, 1)  # fmt: skip
        return cls(state, True, True, spec, "LSQ")

    def values(self) -> tuple[bool, float, float, bool, float, int]:
        """``(has_range, lo, hi, calibrated, scale, zero_point)`` now."""
        assert _EXT is not None
        has_range, lo, hi, calibrated, scale, zero_point = _EXT.site_state(self.state)
        return bool(has_range), lo, hi, bool(calibrated), scale, zero_point

    def lstm_step_at(self, with_cell: bool, rows: int, hidden: int, pre: int, c_prev: int, act: int, c: int,
                     tanh_c: int, h_raw: int, h: int, mask: int, d_scale: int) -> None:  # fmt: skip
        """An LSTM step's pointwise part ending in this (hidden) site, in one C call, by address (the
        layouts of :func:`lstm_backward_at`, float32 ``rows x 4 hidden`` for ``pre`` and ``act``, ``rows x
        hidden`` for the rest): with ``with_cell`` the activations ``act`` and cell ``c`` from ``pre`` and
        ``c_prev``, else from the cell site (``act`` and ``c`` given); then ``tanh_c``, the float hidden
        state ``h_raw``, and, when the site quantizes, its values ``h``, straight-through ``mask`` (bytes)
        and, for LSQ, the derivative ``d_scale`` (0 elsewhere). For the fused recurrence, which made every
        buffer with these layouts: no per-call check, so a wrong address is the caller's bug."""
        assert _EXT is not None
        try:
            _EXT.lstm_step_site(int(with_cell), rows, hidden, pre, c_prev, act, c, tanh_c, h_raw, self.state, h,
                                mask, d_scale, _MODE["isa"])  # fmt: skip
        except FloatingPointError:
            raise ValueError(f"{self.observer_name}: the observed tensor contains NaN or Inf") from None
        self.last_shape = (rows, hidden)


# --------------------------------------------------------------------------- PACT
class FusedPACT(torch.autograd.Function):
    """PACT's per-tensor fake quantization (:func:`quant.sim.learned.pact_fake_quantize`) on the fused path:
    one C pass forward (the clip, then the fake quantization: the torch path's values), and one backward
    pass over the saved input giving ``g`` inside the clip and the clip level's gradient (the sum of ``g``
    above it, minus below its negative for signed codes, in float64). Inputs: ``x``, the projected clip
    level ``a`` and scale ``s`` as numbers, the learned ``alpha`` (for its gradient), the spec."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, a: float, s: float, alpha: torch.Tensor,
                spec: QuantSpec) -> torch.Tensor:  # fmt: skip
        out = pact_forward(x.detach(), a, s, spec)
        ctx.save_for_backward(x)
        ctx.a, ctx.spec, ctx.alpha_shape = a, spec, alpha.shape  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        assert _EXT is not None
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        x = x.detach()
        if g.dtype != torch.float32 or g.stride() != x.stride():  # the loop reads g in x's layout
            g = torch.empty_like(x).copy_(g)
        grad_x = torch.empty_like(x)
        alpha_grad = _EXT.pact_backward(x.data_ptr(), g.data_ptr(), grad_x.data_ptr(), x.numel(), ctx.a,  # type: ignore[attr-defined]
                                        int(ctx.spec.signed), _MODE["isa"])  # type: ignore[attr-defined]  # fmt: skip
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_alpha = torch.full(ctx.alpha_shape, alpha_grad, dtype=torch.float32)  # type: ignore[attr-defined]
        return (grad_x if needs[0] else None), None, None, (grad_alpha if needs[3] else None), None


def lsq_parts(x: torch.Tensor, scale: float, zero_point: int, spec: QuantSpec
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """LSQ's per-tensor values, uint8 inside mask and derivative by the step (what
    :func:`quant.sim.learned.lsq_values` computes) in one C pass, for a call :func:`fused_applies` accepted,
    with the effective step and zero point as numbers."""
    assert _EXT is not None
    out, d_scale = torch.empty_like(x), torch.empty_like(x)
    mask = torch.empty_like(x, dtype=torch.uint8)
    _EXT.lsq_parts(x.data_ptr(), x.numel(), scale, zero_point, spec.qmin, spec.qmax, _ROUNDING[spec.rounding],
                   out.data_ptr(), mask.data_ptr(), d_scale.data_ptr(), _MODE["isa"])  # fmt: skip
    return out, mask, d_scale


def pact_forward(x: torch.Tensor, a: float, s: float, spec: QuantSpec) -> torch.Tensor:
    """PACT's values (no autograd) of a per-tensor call :func:`fused_applies` accepted: the clip to
    ``[0, a]`` (signed: ``[-a, a]``) then the fake quantization with the scale ``s`` and zero point 0."""
    assert _EXT is not None
    out = torch.empty_like(x)
    _EXT.pact_forward(x.data_ptr(), out.data_ptr(), x.numel(), a, s, int(spec.signed), spec.qmin, spec.qmax,
                      _ROUNDING[spec.rounding], _MODE["isa"])  # fmt: skip
    return out
