"""The argument behind each status of the C kernels, named in the terms of :mod:`kernels.api`.

Every C entry point returns a ``qk_status`` (``kernels/c/include/qk_types.h``) that says what is
wrong but not with which argument: the kernel sees structs and buffers, not keyword names. The
binding raises it as ``ValueError`` (``OverflowError`` for an accumulator overflow) carrying the
value as ``qk_status``; :func:`named_status` turns that into a message naming the argument of
the wrapper and its allowed range, from the table below (an entry per op where the generic one
would name the wrong argument).

The wrappers validate their arguments before calling C (the op's record in
:mod:`quant.contract.attrs`, the array checks of :mod:`kernels.api`), so a status reaches a user
only where a C-side check is the one that sees the problem; the fuzzing harness
(``tests/fuzz``) counts any raw ``qk_status`` message reaching the API as a defect.

>>> from kernels import _qk
>>> argument_of("conv2d", _qk.ERR_GROUPS)
'groups: must divide both C_in (x.shape[1]) and C_out (w.shape[0])'
>>> argument_of("unpack", _qk.ERR_X_LENGTH)
'packed: must have shape (*shape[:-1], ceil(shape[-1] * bits / 8))'
"""

from __future__ import annotations

from types import TracebackType
from typing import Optional

from kernels import _qk

__all__ = ["STATUS_NAMES", "NamedStatus", "argument_of", "named_status"]

#: ``qk_status`` value -> its name in ``qk_types.h`` (without the ``QK_`` prefix).
STATUS_NAMES: dict[int, str] = {getattr(_qk, n): n for n in dir(_qk) if n.startswith("ERR_")}

_WINDOW = (
    "kernel_size, stride, padding, dilation: kernel, stride and dilation in 1..2^31-1, padding in 0..2^31-1, "
    "and the dilated window d*(k-1)+1 must fit the padded input"
)

#: The argument (and its allowed range) behind a status, whatever the op.
_GENERIC: dict[int, str] = {
    _qk.ERR_NULL: "x, w, y and scratch: a required array is missing",
    _qk.ERR_DATAPATH: "datapath: a field outside its allowed values (see quant.contract.datapath.Datapath)",
    _qk.ERR_SHAPE: "x: every dimension must be >= 1 (an empty batch gives an empty output) and agree with the op's shapes",
    _qk.ERR_X_LENGTH: "x: its element count must be the product of its shape",
    _qk.ERR_W_LENGTH: "w: its element count (packed: C_out rows of ceil(K * bits / 8) bytes) must match w's shape",
    _qk.ERR_BIAS_LENGTH: "bias: must hold one int32 per output channel",
    _qk.ERR_Y_LENGTH: "y: the output array must hold the op's output shape",
    _qk.ERR_PARAM_LENGTH: "multiplier: must be one value, or one per output channel",
    _qk.ERR_SCRATCH: "scratch: must hold at least the bytes the op's *_scratch_bytes query gives",
    _qk.ERR_BITS: "y_bits and the datapath's widths: must be in 1..8",
    _qk.ERR_ZERO_POINT: (
        "x_zero_point, w_zero_point, y_zero_point: each inside its operand's code range, and 0 where the "
        "datapath has no zero point for that operand"
    ),
    _qk.ERR_MULTIPLIER: "multiplier: must be finite and > 0 and representable by the datapath's requantization",
    _qk.ERR_SHIFT: "multiplier: its exponent is outside the shifts the datapath's requantization allows",
    _qk.ERR_BIAS_RANGE: "bias: every value must fit the datapath's bias_bits signed bits",
    _qk.ERR_OUTPUT_RANGE: "y_min, y_max: must lie inside the output code range, with y_min <= y_max",
    _qk.ERR_CODE_RANGE: "x: every code must lie inside its operand's code range",
    _qk.ERR_WINDOW: _WINDOW,
    _qk.ERR_GROUPS: "groups: must divide both C_in (x.shape[1]) and C_out (w.shape[0])",
    _qk.ERR_ISA: "isa: this instruction set is not available on this CPU (see kernels.isa_available)",
    _qk.ERR_OVERFLOW: (
        "datapath.acc_bits: the accumulator left its range with datapath.overflow='error' (widen acc_bits, "
        "or choose overflow 'saturate' or 'wrap')"
    ),
    _qk.ERR_SIZE: "x's shape and the op's attributes: a size formed from them does not fit the address space",
    _qk.ERR_PARAM_VALUE: "the op's parameters: one is outside its allowed values",
    _qk.ERR_CACHE: "the weights cache: must hold at least the bytes the op's *_cache_bytes query gives",
}

#: Where the generic entry names the wrong argument.
_BY_OP: dict[tuple[str, int], str] = {
    ("linear", _qk.ERR_SHAPE): "x, w: x must be (M, K) and w (N, K) with K, N >= 1 (M = 0 gives an empty output)",
    ("requantize", _qk.ERR_X_LENGTH): "q: its element count must be the product of its shape",
    ("requantize", _qk.ERR_SHAPE): "q, axis: the multiplier's channels must be q.shape[axis]",
    ("add", _qk.ERR_CODE_RANGE): "a, b: every code must lie inside the datapath's activation code range",
    ("add", _qk.ERR_SHIFT): (
        "a_multiplier, b_multiplier: their exponents must fit the datapath's add shifts (fixed point: "
        "r_a, r_b <= 1/2, so exponents <= 0; pow2: shifts in -30..31, at most 32 apart)"
    ),
    ("add", _qk.ERR_MULTIPLIER): "a_multiplier, b_multiplier: must be finite, > 0 and below the add's limit",
    ("mul", _qk.ERR_X_LENGTH): "a, b: b must have a's shape or broadcast along a's trailing dimensions",
    ("mul", _qk.ERR_PARAM_LENGTH): "multiplier: must be one value for the whole product",
    ("softmax", _qk.ERR_PARAM_LENGTH): "table: must hold 2^x_bits entries",
    ("softmax", _qk.ERR_SHAPE): "x, axis: the softmax axis must have length >= 1",
    ("softmax", _qk.ERR_BITS): "x_bits, y_bits: must be in 1..8 (y_bits >= 2 signed)",
    ("layernorm", _qk.ERR_SHAPE): "x: its last dimension (the row) must hold 1..2^14 codes",
    ("layernorm", _qk.ERR_PARAM_LENGTH): "gamma, multiplier: one gamma code and one multiplier (or one in all) per "
    "element of the row",
    ("layernorm", _qk.ERR_BIAS_LENGTH): "bias: one int32 value per element of the row",
    ("layernorm", _qk.ERR_ZERO_POINT): "gamma_zero_point: must be in [-128, 127]",
    ("layernorm", _qk.ERR_PARAM_VALUE): "eps_term: must be in 0..2^62-1 (see quant.contract.layernorm.layernorm_eps_term)",
    ("layernorm", _qk.ERR_BITS): "x_bits: must be in 1..8",
    ("lstm", _qk.ERR_SHAPE): "x, w_ih, w_hh: x must be (N, T, F) with T, F >= 1, w_ih (4H, F), w_hh (4H, H)",
    ("lstm", _qk.ERR_ZERO_POINT): (
        "x_zero_point, h_zero_point, ih/hh_zero_point: activation and weight zero points of the datapath; the gate "
        "requantizations take zero point 0 and the output the hidden state's"
    ),
    ("lstm", _qk.ERR_PARAM_VALUE): "cell_shift: must be in 0..15; reverse: 0 or 1",
    ("lstm", _qk.ERR_PARAM_LENGTH): (
        "ih_multiplier, hh_multiplier, zero points, tables: one or 4H values per gate row; 513 table entries"
    ),
    ("gru", _qk.ERR_SHAPE): "x, w_ih, w_hh: x must be (N, T, F) with T, F >= 1, w_ih (3H, F), w_hh (3H, H)",
    ("gru", _qk.ERR_ZERO_POINT): (
        "x_zero_point, h_zero_point, ih/hh_zero_point: activation and weight zero points of the datapath; the gate "
        "and Q0.15 requantizations take zero point 0 and the output the hidden state's"
    ),
    ("gru", _qk.ERR_PARAM_VALUE): "reverse: 0 or 1",
    ("gru", _qk.ERR_PARAM_LENGTH): (
        "ih_multiplier, hh_multiplier, zero points, tables: one or 3H values per gate row; 513 table entries"
    ),
    ("avg_pool2d", _qk.ERR_BITS): "x: its dtype must be int8 or uint8",
    ("max_pool2d", _qk.ERR_BITS): "x: its dtype must be int8 or uint8",
    ("max_pool2d", _qk.ERR_WINDOW): (
        "kernel_size, stride, padding, dilation: every window must hold an element of x (a dilated window "
        "that holds only padding has no maximum), with kernel, stride, dilation >= 1 and padding <= kernel // 2"
    ),
    ("lut", _qk.ERR_PARAM_LENGTH): "table: must hold 2^x_bits entries per channel (channels x 2^x_bits)",
    ("lut", _qk.ERR_SHAPE): "x, channels: x.shape[1] must equal channels",
    ("lut", _qk.ERR_BITS): "x_bits: must be in 1..8",
    ("pack", _qk.ERR_X_LENGTH): "codes: its element count must be rows * cols",
    ("pack", _qk.ERR_Y_LENGTH): "packed: must hold rows of ceil(cols * bits / 8) bytes",
    ("pack", _qk.ERR_CODE_RANGE): "codes: every code must fit bits bits (signed or unsigned, per signed)",
    ("pack", _qk.ERR_BITS): "bits: must be in 1..8",
    ("unpack", _qk.ERR_X_LENGTH): "packed: must have shape (*shape[:-1], ceil(shape[-1] * bits / 8))",
    ("unpack", _qk.ERR_Y_LENGTH): "shape: the codes array must hold prod(shape) codes",
    ("unpack", _qk.ERR_BITS): "bits: must be in 1..8",
    ("rounding_right_shift", _qk.ERR_SHIFT): "k: must be in 0..62",
    ("rounding_right_shift", _qk.ERR_DATAPATH): "mode: must be one of the integer rounding modes",
    ("saturating_rounding_doubling_high_mul", _qk.ERR_SHIFT): "n: must be in 1..31",
}


def argument_of(op: str, status: int) -> str:
    """The argument of ``op``'s wrapper behind ``status`` and its allowed range, as one phrase."""
    found = _BY_OP.get((op, status)) or _GENERIC.get(status)
    return found if found is not None else f"an argument outside its allowed values (qk_status {status})"


class NamedStatus:
    """The context manager of :func:`named_status` (a class: a generator-based one costs about 0.5 us
    more per kernel call, a tenth of a small kernel)."""

    __slots__ = ("op",)

    def __init__(self, op: str) -> None:
        self.op = op

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: Optional[type[BaseException]], err: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if isinstance(err, (ValueError, OverflowError)):
            status = getattr(err, "qk_status", None)
            if isinstance(status, int):
                name = STATUS_NAMES.get(status, str(status))
                raise type(err)(f"{self.op}: {argument_of(self.op, status)} (kernel status QK_{name})") from None
        # anything else (no exception included) passes through unchanged


def named_status(op: str) -> NamedStatus:
    """Re-raise a status of the C kernels inside the block as the same exception type naming the argument.

    ``ValueError``/``OverflowError`` without a ``qk_status`` attribute (raised by Python code or
    by the binding's own checks, which name their argument already) pass through unchanged.
    """
    return NamedStatus(op)
