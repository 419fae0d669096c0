"""Python wrappers of the C99 integer kernels (``kernels/c``), one per op of ``docs/arithmetic.md``.

Every wrapper takes NumPy arrays of codes and a :class:`quant.contract.datapath.Datapath`, validates
everything the C library cannot know about Python objects (dtype, shape, contiguity, value
ranges of codes, zero points, bit widths, multipliers), converts the real multipliers to the
integer (or float32) parameters of section 5, allocates the scratch buffer the C kernel asks
for and calls it with the GIL released. The keyword names are those of the torch reference
(``quant.reference``), so one test can call either backend.

Dtypes: activation codes are ``int8`` when ``Datapath.a_signed`` else ``uint8``; weights
``int8``/``uint8`` per ``Datapath.w_signed``, or a :class:`PackedWeights`; output codes are
``int8`` when ``y_signed`` else ``uint8``; biases and ``requantize`` inputs are ``int32``.
Arrays must be C-contiguous: a non-contiguous array is a ``ValueError`` (never copied
silently). Bad input raises ``TypeError``/``ValueError`` naming the argument; an accumulator
overflow with ``Datapath.overflow == "error"`` raises ``OverflowError`` naming the op.

>>> import numpy as np
>>> from quant.contract.datapath import Datapath
>>> x = np.array([[[[1, 2], [3, 4]]]], dtype=np.int8); w = np.array([[[[1, -1], [2, 0]]]], dtype=np.int8)
>>> conv2d(x, w, np.array([10], dtype=np.int32), x_zero_point=1, w_zero_point=0, y_zero_point=-3,
...        multiplier=0.5, datapath=Datapath.preset("tflite_int8")).tolist()   # acc 13; 6.5 -> 7; 7 - 3
[[[[4]]]]
>>> unpack(pack(np.array([[1, -2, 7]], dtype=np.int8), 4), 4, (1, 3)).tolist()
[[1, -2, 7]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from kernels import _qk
from quant.contract.datapath import Datapath
from quant.contract.args import check_zero_point, output_range, pair, scalar_int
from quant.contract.codes import code_range
from quant.contract.multiplier import (
    FixedPointAdd,
    FixedPointRequant,
    FloatAdd,
    FloatRequant,
    RequantParams,
    add_params,
    requant_params,
)

__all__ = [
    "PackedWeights",
    "pack_weights",
    "pack",
    "unpack",
    "conv2d",
    "linear",
    "requantize",
    "add",
    "avg_pool2d",
    "max_pool2d",
    "lut",
    "rounding_right_shift",
    "saturating_rounding_doubling_high_mul",
    "isa_available",
    "ISAS",
]

IntPair = Union[int, Sequence[int]]
MultiplierLike = Union[float, int, Sequence[float], npt.NDArray[Any]]
ZeroPointLike = Union[int, Sequence[int], npt.NDArray[Any]]
Codes = npt.NDArray[Any]

#: Instruction-set choices of the hot loops (all give identical results).
ISAS: dict[str, int] = {"auto": _qk.ISA_AUTO, "portable": _qk.ISA_PORTABLE, "avx2": _qk.ISA_X86_AVX2}

_OVERFLOW = {"wrap": _qk.OVERFLOW_WRAP, "saturate": _qk.OVERFLOW_SATURATE, "error": _qk.OVERFLOW_ERROR}
_REQUANT = {
    "fixed_point": _qk.REQUANT_FIXED_POINT,
    "float32": _qk.REQUANT_FLOAT32,
    "float64": _qk.REQUANT_FLOAT64,
    "pow2": _qk.REQUANT_POW2,
}
_FIXED_POINT = {"double": _qk.FIXED_POINT_DOUBLE, "single": _qk.FIXED_POINT_SINGLE}
_ROUNDING = {
    "half_away": _qk.ROUND_HALF_AWAY,
    "half_up": _qk.ROUND_HALF_UP,
    "half_even": _qk.ROUND_HALF_EVEN,
    "floor": _qk.ROUND_FLOOR,
}
_ZP_ORDER = {"after_rounding": _qk.ZP_AFTER_ROUNDING, "before_rounding": _qk.ZP_BEFORE_ROUNDING}
_PACKED_BITS = (1, 2, 4)
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


# ----------------------------------------------------------------------------- validation helpers


def _isa(isa: str) -> int:
    if isa not in ISAS:
        raise ValueError(f"isa={isa!r} is not one of {', '.join(map(repr, ISAS))}")
    return ISAS[isa]


def isa_available(isa: str) -> bool:
    """Whether the kernels can run with instruction set ``isa`` ("auto", "portable", "avx2") here.

    >>> isa_available("portable")
    True
    """
    return bool(_qk.isa_query(_isa(isa))[0])


def _check_datapath(datapath: object) -> Datapath:
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    return datapath


def _datapath_tuple(dp: Datapath, op: str) -> tuple[int, ...]:
    """The C ``qk_datapath`` fields; ``ValueError`` for a value the kernels cannot honour."""
    try:
        return (
            int(dp.w_bits), int(dp.w_signed), int(dp.w_zero_point),
            int(dp.a_bits), int(dp.a_signed), int(dp.a_zero_point),
            int(dp.acc_bits), _OVERFLOW[dp.overflow], _REQUANT[dp.requant], int(dp.multiplier_bits),
            _FIXED_POINT[dp.fixed_point_rounding], _ROUNDING[dp.rounding], _ZP_ORDER[dp.zero_point_order],
            int(dp.bias_bits),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{op}: the kernels cannot run datapath {dp.name!r}: unsupported value {err}") from None



def _bool(v: object, name: str, op: str) -> bool:
    if isinstance(v, np.bool_):
        v = bool(v)
    if not isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    return v


def _array(a: object, name: str, op: str, dtypes: Sequence[Any], ndim: Optional[int] = None) -> Codes:
    """``a`` as a C-contiguous ndarray of one of ``dtypes`` (``TypeError``/``ValueError`` naming it)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    allowed = [np.dtype(d) for d in dtypes]
    if a.dtype not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{op}: {name} must have dtype {want}, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use numpy.ascontiguousarray)")
    return a



def _code_dtype(signed: bool) -> type[np.integer[Any]]:
    return np.int8 if signed else np.uint8


def _check_codes(a: Codes, name: str, op: str, bits: int, signed: bool) -> None:
    lo, hi = code_range(bits, signed)
    if a.size == 0 or (bits == 8 and a.dtype == _code_dtype(signed)):
        return  # every value of the dtype is a code
    amin, amax = int(a.min()), int(a.max())
    kind = "binary" if (bits == 1 and signed) else f"{'int' if signed else 'uint'}{bits}"
    if amin < lo or amax > hi:
        raise ValueError(f"{op}: {name} has values in [{amin}, {amax}] outside the {kind} code range [{lo}, {hi}]")
    if bits == 1 and signed and bool(np.any(a == 0)):
        raise ValueError(f"{op}: {name} holds 0, but binary codes are -1 or +1")


def _output(
    op: str, y_bits: object, y_signed: object, y_min: object, y_max: object, y_zero_point: object
) -> tuple[int, bool, int, int, int]:
    """``(y_bits, y_signed, z_y, lo, hi)`` of an op's output codes (section 1)."""
    lo, hi = output_range(op, y_bits, y_signed, y_min, y_max, y_zero_point)
    return scalar_int(y_bits, "y_bits", op), bool(y_signed), scalar_int(y_zero_point, "y_zero_point", op), lo, hi



# ----------------------------------------------------------------------------- multipliers (section 5)


def _requant_params(multiplier: object, dp: Datapath, op: str) -> RequantParams:
    """Section 5's integer (or float32) form of ``multiplier``, errors prefixed with ``op``."""
    try:
        return requant_params(multiplier, dp)
    except ValueError as err:
        raise ValueError(f"{op}: {err}") from None
    except TypeError as err:
        raise TypeError(f"{op}: {err}") from None


def _requant_tuple(p: RequantParams, channels: int, op: str, y: tuple[int, bool, int, int, int]) -> tuple[Any, ...]:
    """The binding's requant tuple: (M0 | None, shift | None, m | None, z_y, y_bits, y_signed, lo, hi)."""
    if p.count not in (1, channels):
        raise ValueError(
            f"{op}: multiplier has {p.count} values; it must be a scalar or have one value per output channel ({channels})"
        )

    def flat(a: npt.NDArray[Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
        return np.ascontiguousarray(a.reshape(-1), dtype=dtype)

    bits, signed, z, lo, hi = y
    if isinstance(p, FixedPointRequant):
        arrays: tuple[Any, Any, Any] = (flat(p.m0, np.int32), flat(p.exponent, np.int32), None)
    elif isinstance(p, FloatRequant):
        arrays = (None, None, flat(p.multiplier, np.float32))
    else:
        arrays = (None, flat(p.right_shift, np.int32), None)
    return (*arrays, z, bits, int(signed), lo, hi)


# ----------------------------------------------------------------------------- packing (section 3)


def _packed_row_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8 if bits in _PACKED_BITS else n


def pack(codes: Codes, bits: int, *, signed: Optional[bool] = None) -> npt.NDArray[np.uint8]:
    """Pack ``codes`` (int8 or uint8, shape ``(..., n)``) into uint8 rows ``(..., ceil(n * bits / 8))``.

    Section 3: element ``i`` of a row at bits ``(i * bits) % 8`` of byte ``i * bits // 8``,
    ``bits``-bit two's complement; 1-bit codes store +1 as 1 and -1 or 0 as 0 (mixing -1 and
    0 is refused). Widths other than 1, 2, 4 keep one code per byte (the low 8 bits). Codes
    must fit ``bits`` bits signed or unsigned, or the range of ``signed`` when given.

    >>> [f"{b:08b}" for b in pack(np.array([-1, 1, 1, -1, 1], dtype=np.int8), 1)]
    ['00010110']
    """
    op = "pack"
    c = _array(codes, "codes", op, (np.int8, np.uint8))
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 8:
        raise ValueError(f"{op}: bits={bits!r} must be an integer in 1..8")
    bits = int(bits)
    if c.ndim == 0:
        raise ValueError(f"{op}: codes must have at least one dimension (rows are packed along the last)")
    if signed is None:
        lo, hi, rng = -(1 << (bits - 1)), (1 << bits) - 1, -1
    else:
        lo, hi = code_range(bits, _bool(signed, "signed", op))
        rng = int(signed)
    if c.size and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"{op}: codes in [{int(c.min())}, {int(c.max())}] do not fit {bits} bits (range [{lo}, {hi}])")
    if bits == 1 and c.size and bool(np.any(c == -1)) and bool(np.any(c == 0)):
        raise ValueError(f"{op}: 1-bit codes mix -1 and 0 (binary codes are {{-1, +1}}, unsigned {{0, 1}})")
    n = c.shape[-1]
    rows = c.size // n if n else int(np.prod(c.shape[:-1]))
    out = np.empty(c.shape[:-1] + (_packed_row_bytes(n, bits),), dtype=np.uint8)
    _qk.pack(codes=c, codes_signed=c.dtype == np.int8, rows=rows, cols=n, bits=bits, range=rng, packed=out)
    return out


def unpack(packed: Codes, bits: int, shape: Sequence[int], signed: bool = True) -> Codes:
    """Codes of ``shape`` from uint8 ``packed`` ``(*shape[:-1], ceil(shape[-1] * bits / 8))`` (section 3).

    Returns int8 codes (uint8 for unsigned 8-bit codes); signed codes are sign-extended,
    ``signed=True`` with ``bits=1`` gives binary codes {-1, +1}; padding bits are ignored.

    >>> unpack(np.array([0b00010110], dtype=np.uint8), 1, (5,)).tolist()
    [-1, 1, 1, -1, 1]
    """
    op = "unpack"
    p = _array(packed, "packed", op, (np.uint8,))
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 8:
        raise ValueError(f"{op}: bits={bits!r} must be an integer in 1..8")
    bits = int(bits)
    is_signed = _bool(signed, "signed", op)
    try:
        shp = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{op}: shape must be a sequence of ints, got {type(shape).__name__}") from None
    if not shp or min(shp) < 0:
        raise ValueError(f"{op}: shape={shape!r} must have at least one dimension, none negative")
    expected = shp[:-1] + (_packed_row_bytes(shp[-1], bits),)
    if p.shape != expected:
        raise ValueError(f"{op}: packed has shape {p.shape}, expected {expected} for codes of shape {shp}")
    out = np.empty(shp, dtype=np.uint8 if (bits == 8 and not is_signed) else np.int8)
    rows = int(np.prod(shp[:-1])) if len(shp) > 1 else 1
    _qk.unpack(packed=p, rows=rows, cols=shp[-1], bits=bits, signed=is_signed, codes=out)
    return out


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Weights of conv2d/linear stored packed (section 3), as made by :func:`pack_weights`.

    ``data`` is uint8 ``(C_out, ceil(K * bits / 8))``, the ``(C_out, K)`` matrix view of the
    weight (``K = C_in/groups * kh * kw`` in canonical order, or linear's ``K``) packed along
    ``K``; ``bits`` in {1, 2, 4}; ``signed`` codes (1-bit signed: binary {-1, +1}); ``shape``
    the unpacked weight shape.
    """

    data: npt.NDArray[np.uint8]
    bits: int
    signed: bool
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.bits not in _PACKED_BITS or isinstance(self.bits, bool):
            raise ValueError(f"PackedWeights.bits={self.bits!r} is not one of 1, 2, 4")
        if not isinstance(self.signed, bool):
            raise ValueError(f"PackedWeights.signed={self.signed!r} must be a bool")
        shape = tuple(self.shape)
        if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"PackedWeights.shape={self.shape!r} must have >= 2 positive dimensions")
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint8:
            raise ValueError("PackedWeights.data must be a uint8 numpy.ndarray")
        k = int(np.prod(shape[1:]))
        expected = (shape[0], _packed_row_bytes(k, self.bits))
        if self.data.shape != expected:
            raise ValueError(f"PackedWeights.data has shape {self.data.shape}, expected {expected} for shape {shape}")
        if not self.data.flags.c_contiguous:
            raise ValueError("PackedWeights.data must be C-contiguous")

    def unpacked(self) -> Codes:
        """The weight codes of :attr:`shape`: int8 when :attr:`signed`, else uint8 (as conv2d/linear take them)."""
        codes = unpack(self.data, self.bits, (self.shape[0], int(np.prod(self.shape[1:]))), self.signed)
        return codes.reshape(self.shape).astype(_code_dtype(self.signed))


def pack_weights(w_codes: Codes, bits: int, signed: bool) -> PackedWeights:
    """Pack weight codes ``(C_out, ...)`` (int8/uint8) as the ``(C_out, K)`` matrix in ``bits`` bits.

    >>> pw = pack_weights(np.array([[1, -2, 7, -8]], dtype=np.int8), 4, True)
    >>> pw.data.tolist(), pw.shape
    ([[225, 135]], (1, 4))
    """
    op = "pack_weights"
    w = _array(w_codes, "w_codes", op, (np.int8, np.uint8))
    if w.ndim < 2:
        raise ValueError(f"{op}: w_codes must have >= 2 dimensions (C_out, ...), got shape {w.shape}")
    if bits not in _PACKED_BITS or isinstance(bits, bool):
        raise ValueError(f"{op}: bits={bits!r} is not one of 1, 2, 4")
    is_signed = _bool(signed, "signed", op)
    data = pack(w.reshape(w.shape[0], -1), bits, signed=is_signed)
    return PackedWeights(data=data, bits=bits, signed=is_signed, shape=tuple(int(s) for s in w.shape))


# ----------------------------------------------------------------------------- conv2d and linear (4, 5)


def _weights(
    w: object, w_zero_point: object, dp: Datapath, op: str, ndim: int
) -> tuple[tuple[Any, int, npt.NDArray[np.int32]], tuple[int, ...]]:
    """The binding's weights tuple (data, packed_bits, zero points) and the unpacked weight shape."""
    if isinstance(w, PackedWeights):
        if len(w.shape) != ndim:
            raise ValueError(f"{op}: w must have {ndim} dimensions, got packed weights of shape {w.shape}")
        if w.bits != dp.w_bits or w.signed != dp.w_signed:
            kind = f"{'int' if w.signed else 'uint'}{w.bits}"
            raise ValueError(
                f"{op}: packed weights are {kind} but datapath {dp.name!r} has "
                f"{'int' if dp.w_signed else 'uint'}{dp.w_bits} weights"
            )
        data: Codes = w.data  # every packed field is a valid code of the datapath's weight operand
        packed_bits = w.bits
        shape = w.shape
    else:
        data = _array(w, "w", op, (_code_dtype(dp.w_signed),), ndim)
        _check_codes(data, "w", op, dp.w_bits, dp.w_signed)
        packed_bits = 0
        shape = tuple(int(s) for s in data.shape)
    c_out = shape[0]
    if isinstance(w_zero_point, (np.ndarray, list, tuple)):
        zw = np.asarray(w_zero_point)
        if zw.dtype.kind not in "iu":
            raise TypeError(f"{op}: w_zero_point must be integers, got {zw.dtype}")
        zw = zw.reshape(-1)
        if zw.size not in (1, c_out):
            raise ValueError(f"{op}: w_zero_point has {zw.size} values, w has {c_out} output channels")
    else:
        zw = np.array([scalar_int(w_zero_point, "w_zero_point", op)])
    for z in sorted({int(v) for v in zw}):
        check_zero_point(z, "w_zero_point", op, dp.w_bits, dp.w_signed, dp.w_zero_point)
    return (data, packed_bits, np.ascontiguousarray(zw, dtype=np.int32)), shape


def _input(x: object, x_zero_point: object, dp: Datapath, op: str, ndim: int) -> tuple[Codes, int]:
    xa = _array(x, "x", op, (_code_dtype(dp.a_signed),), ndim)
    _check_codes(xa, "x", op, dp.a_bits, dp.a_signed)
    zx = scalar_int(x_zero_point, "x_zero_point", op)
    check_zero_point(zx, "x_zero_point", op, dp.a_bits, dp.a_signed, dp.a_zero_point)
    return xa, zx


def _bias(bias: object, c_out: int, dp: Datapath, op: str) -> Optional[npt.NDArray[np.int32]]:
    if bias is None:
        return None
    b = _array(bias, "bias", op, (np.int32,), 1)
    if b.size != c_out:
        raise ValueError(f"{op}: bias has {b.size} values, expected one per output channel ({c_out})")
    lo, hi = dp.bias_range
    if b.size and (int(b.min()) < lo or int(b.max()) > hi):
        raise ValueError(
            f"{op}: bias has values in [{int(b.min())}, {int(b.max())}] outside the "
            f"{dp.bias_bits}-bit range [{lo}, {hi}] (Datapath.bias_bits)"
        )
    return b


def conv2d(
    x: Codes,
    w: Union[Codes, PackedWeights],
    bias: Optional[npt.NDArray[np.int32]],
    *,
    x_zero_point: int,
    w_zero_point: ZeroPointLike,
    y_zero_point: int,
    multiplier: MultiplierLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
    isa: str = "auto",
) -> Codes:
    """Quantized 2-D convolution on codes (sections 4, 5): output codes ``(N, C_out, H_out, W_out)``.

    ``acc[n, o, i, j] = bias[o] + sum_{c, u, v} (x[n, g*C_in/G + c, i*s_h + u*d_h - p_h,
    j*s_w + v*d_w - p_w] - z_x) * (w[o, c, u, v] - z_w[o])`` in the canonical ``(c, u, v)``
    order, accumulated in ``Datapath.acc_bits`` bits per ``Datapath.overflow`` (padded positions
    hold ``z_x``), then requantized with ``multiplier`` (per tensor or per output channel) to
    ``clamp(y0 + z_y, lo, hi)``. ``x`` ``(N, C_in, H, W)``; ``w`` ``(C_out, C_in/groups, kh, kw)``
    codes or :class:`PackedWeights`; ``bias`` int32 ``(C_out,)`` or None. ``isa`` picks the
    instruction set of the hot loops ("auto", "portable", "avx2"): results are identical.

    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    >>> w = pack_weights(np.array([[[[1, -1], [-1, 1]]]], dtype=np.int8), 2, True)
    >>> conv2d(x, w, None, x_zero_point=3, w_zero_point=0, y_zero_point=0, multiplier=0.5, stride=2,
    ...        datapath=Datapath.preset("w4a4_acc16_sat").with_(w_bits=2), y_signed=False).tolist()
    [[[[0, 0], [0, 0]]]]
    """
    op = "conv2d"
    dp = _check_datapath(datapath)
    xa, zx = _input(x, x_zero_point, dp, op, 4)
    wt, wshape = _weights(w, w_zero_point, dp, op, 4)
    g = scalar_int(groups, "groups", op)
    n, c_in, h, wd = xa.shape
    c_out, cg, kh, kw = wshape
    if g < 1 or c_in % g or c_out % g or cg * g != c_in:
        raise ValueError(
            f"{op}: groups={g} does not fit x with {c_in} channels and w of shape {wshape} "
            "(need C_in = groups * w.shape[1] and C_out divisible by groups)"
        )
    st, pd, dl = pair(stride, "stride", op, 1), pair(padding, "padding", op, 0), pair(dilation, "dilation", op, 1)
    b = _bias(bias, c_out, dp, op)
    out = _output(op, y_bits, y_signed, y_min, y_max, y_zero_point)
    rq = _requant_tuple(_requant_params(multiplier, dp, op), c_out, op, out)
    geometry = (n, c_in, h, wd, c_out, kh, kw, st[0], st[1], pd[0], pd[1], dl[0], dl[1], g)
    ho = (h + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
    wo = (wd + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {h}x{wd} and kernel {kh}x{kw}")
    y = np.empty((n, c_out, ho, wo), dtype=_code_dtype(out[1]))
    dpt = _datapath_tuple(dp, op)
    scratch = np.empty(_qk.conv2d_scratch_bytes(geometry, dpt), dtype=np.uint8)
    _qk.conv2d(
        geometry=geometry, datapath=dpt, x=xa, x_zero_point=zx, weights=wt, bias=b,
        requant=rq, y=y, scratch=scratch, isa=_isa(isa),
    )  # fmt: skip
    return y


def linear(
    x: Codes,
    w: Union[Codes, PackedWeights],
    bias: Optional[npt.NDArray[np.int32]],
    *,
    x_zero_point: int,
    w_zero_point: ZeroPointLike,
    y_zero_point: int,
    multiplier: MultiplierLike,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
    isa: str = "auto",
) -> Codes:
    """Quantized ``y = x @ w.T`` on codes (sections 4, 5): ``x (M, K)``, ``w (N, K)``, output ``(M, N)``.

    ``acc[m, o] = bias[o] + sum_k (x[m, k] - z_x) * (w[o, k] - z_w[o])`` over increasing
    ``k`` in ``Datapath.acc_bits`` bits per ``Datapath.overflow``, requantized per output
    channel ``o``.

    >>> x = np.array([[130, 120]], dtype=np.uint8); w = np.array([[2, -1], [1, 1]], dtype=np.int8)
    >>> linear(x, w, None, x_zero_point=128, w_zero_point=0, y_zero_point=100, multiplier=[0.25, 0.5],
    ...        y_signed=False, datapath=Datapath.preset("fbgemm_int8")).tolist()   # acc [12, -6]
    [[103, 97]]
    """
    op = "linear"
    dp = _check_datapath(datapath)
    xa, zx = _input(x, x_zero_point, dp, op, 2)
    wt, wshape = _weights(w, w_zero_point, dp, op, 2)
    m, k = xa.shape
    n_out, kw_ = wshape
    if k != kw_:
        raise ValueError(f"{op}: x has K={k} but w has K={kw_} (w is (N, K))")
    b = _bias(bias, n_out, dp, op)
    out = _output(op, y_bits, y_signed, y_min, y_max, y_zero_point)
    rq = _requant_tuple(_requant_params(multiplier, dp, op), n_out, op, out)
    y = np.empty((m, n_out), dtype=_code_dtype(out[1]))
    dpt = _datapath_tuple(dp, op)
    scratch = np.empty(_qk.linear_scratch_bytes(m, k, n_out, dpt), dtype=np.uint8)
    _qk.linear(
        m=m, k=k, n=n_out, datapath=dpt, x=xa, x_zero_point=zx, weights=wt, bias=b,
        requant=rq, y=y, scratch=scratch, isa=_isa(isa),
    )  # fmt: skip
    return y


# ----------------------------------------------------------------------------- elementwise (5, 6)


def requantize(
    q: npt.NDArray[np.int32],
    *,
    in_zero_point: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    axis: Optional[int] = None,
    datapath: Datapath,
    isa: str = "auto",
) -> Codes:
    """``y = clamp(y0 + z_y, lo, hi)`` of ``acc = saturate_int32(q - in_zero_point)`` (sections 5, 6).

    ``q`` int32 of any shape; ``multiplier`` a scalar, or one value per index of ``axis``.

    >>> requantize(np.array([44, 36, -20], dtype=np.int32), in_zero_point=0, multiplier=0.125,
    ...            y_zero_point=0, datapath=Datapath.preset("w2a2_pow2_acc16")).tolist()   # 5.5, 4.5, -2.5
    [6, 4, -2]
    """
    op = "requantize"
    dp = _check_datapath(datapath)
    qa = _array(q, "q", op, (np.int32,))
    z_in = scalar_int(in_zero_point, "in_zero_point", op)
    if not _INT32_MIN <= z_in <= _INT32_MAX:
        raise ValueError(f"{op}: in_zero_point={z_in} must lie in the int32 range")
    out = _output(op, y_bits, y_signed, None, None, y_zero_point)
    params = _requant_params(multiplier, dp, op)
    if axis is not None:
        ax = scalar_int(axis, "axis", op)
        if not -qa.ndim <= ax < qa.ndim:
            raise ValueError(f"{op}: axis={ax} is out of range for q of shape {qa.shape}")
        ax %= qa.ndim
        outer, channels = int(np.prod(qa.shape[:ax])), qa.shape[ax]
        inner = int(np.prod(qa.shape[ax + 1 :]))
        if params.count not in (1, channels):
            raise ValueError(
                f"{op}: multiplier has {params.count} values but dimension {ax} of the input has {channels} channels"
            )
    elif params.count != 1:
        raise ValueError(f"{op}: a per-channel multiplier of {params.count} values needs a channel axis")
    if params.count == 1:  # per tensor: one channel spanning everything
        outer, channels, inner = 1, 1, qa.size
    rq = _requant_tuple(params, channels, op, out)
    y = np.empty(qa.shape, dtype=_code_dtype(out[1]))
    _qk.requantize(
        q=qa, outer=outer, channels=channels, inner=inner, in_zero_point=z_in,
        datapath=_datapath_tuple(dp, op), requant=rq, y=y, isa=_isa(isa),
    )  # fmt: skip
    return y


def add(
    a: Codes,
    b: Codes,
    *,
    a_zero_point: int,
    b_zero_point: int,
    a_multiplier: float,
    b_multiplier: float,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
) -> Codes:
    """Residual add (section 6.1): ``clamp(round((a - z_a) m_a + (b - z_b) m_b) + z_y, lo, hi)``.

    ``m_a = s_a / s_y`` and ``m_b = s_b / s_y``; ``round`` per requantization mode (fixed
    point: TFLite's ADD with ``L = Datapath.add_left_shift``; float32/float64: two rounded
    products and a rounded sum; pow2: one rounding of the exact sum). ``a`` and ``b`` are
    activation codes of the same shape.

    >>> a = np.array([10, -7, 100], dtype=np.int8); b = np.array([3, 3, 100], dtype=np.int8)
    >>> add(a, b, a_zero_point=0, b_zero_point=0, a_multiplier=0.5, b_multiplier=0.25, y_zero_point=0,
    ...     datapath=Datapath.preset("tflite_int8")).tolist()     # 5.75, -2.75, 75
    [6, -3, 75]
    """
    op = "add"
    dp = _check_datapath(datapath)
    aa = _array(a, "a", op, (_code_dtype(dp.a_signed),))
    ba = _array(b, "b", op, (_code_dtype(dp.a_signed),))
    if aa.shape != ba.shape:
        raise ValueError(f"{op}: a and b must have the same shape, got {aa.shape} and {ba.shape}")
    za = scalar_int(a_zero_point, "a_zero_point", op)
    zb = scalar_int(b_zero_point, "b_zero_point", op)
    for name, arr, z in (("a", aa, za), ("b", ba, zb)):
        _check_codes(arr, name, op, dp.a_bits, dp.a_signed)
        check_zero_point(z, f"{name}_zero_point", op, dp.a_bits, dp.a_signed, dp.a_zero_point)
    bits, signed, z_y, lo, hi = _output(op, y_bits, y_signed, y_min, y_max, y_zero_point)
    try:
        ap = add_params(a_multiplier, b_multiplier, dp)
    except ValueError as err:
        raise ValueError(f"{op}: {err}".replace("add: add: ", "add: ")) from None
    except TypeError as err:
        raise TypeError(f"{op}: {err}") from None
    fixed = [0, 0, 0, 0, 0, 0]
    fm = [0.0, 0.0]
    if isinstance(ap, FixedPointAdd):
        for i, rp in enumerate((ap.a, ap.b, ap.out)):
            fixed[2 * i], fixed[2 * i + 1] = int(rp.m0), int(rp.exponent)
    elif isinstance(ap, FloatAdd):
        fm = [float(ap.a.multiplier), float(ap.b.multiplier)]
    else:
        fixed[1], fixed[3] = int(ap.a.right_shift), int(ap.b.right_shift)
    params = (za, zb, *fixed, fm[0], fm[1], z_y, bits, int(signed), lo, hi)
    y = np.empty(aa.shape, dtype=_code_dtype(signed))
    _qk.add(a=aa, b=ba, params=params, datapath=_datapath_tuple(dp, op), y=y)
    return y


# ----------------------------------------------------------------------------- pooling, lut (6)


def _pool_geometry(
    x: Codes,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair],
    padding: IntPair,
    dilation: IntPair,
    op: str,
) -> tuple[tuple[int, ...], tuple[int, int]]:
    n, c, h, w = x.shape
    if kernel_size is None:
        if stride is not None or pair(padding, "padding", op, 0) != (0, 0) or pair(dilation, "dilation", op, 1) != (1, 1):
            raise ValueError(f"{op}: global pooling (kernel_size=None) takes no stride, padding or dilation")
        k, s, p, d = (h, w), (h, w), (0, 0), (1, 1)
    else:
        k = pair(kernel_size, "kernel_size", op, 1)
        s = pair(stride, "stride", op, 1) if stride is not None else k
        p = pair(padding, "padding", op, 0)
        d = pair(dilation, "dilation", op, 1)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"{op}: padding={p} must be at most half the kernel size {k}")
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: the output would be empty ({ho}x{wo}) for input {(h, w)} and kernel {k}")
    return (n, c, h, w, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]), (ho, wo)


def avg_pool2d(
    x: Codes,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    *,
    zero_point: int,
    datapath: Datapath,
) -> Codes:
    """Average pooling of codes ``x (N, C, H, W)`` (int8/uint8), output of the same dtype (section 6).

    ``y = rounding_divide(S - c z, c, Datapath.rounding) + z`` over the ``c`` valid (unpadded)
    elements of each window; ``kernel_size=None`` is global; ``stride`` defaults to the
    kernel size; ``padding <= kernel_size // 2``.

    >>> x = np.array([[[[7, 2, 4], [4, 4, 1]]]], dtype=np.int8)
    >>> avg_pool2d(x, 2, stride=1, zero_point=3, datapath=Datapath.preset("tflite_int8")).tolist()   # 17/4, 11/4
    [[[[4, 3]]]]
    """
    op = "avg_pool2d"
    dp = _check_datapath(datapath)
    xa = _array(x, "x", op, (np.int8, np.uint8), 4)
    z = scalar_int(zero_point, "zero_point", op)
    if not _INT32_MIN <= z <= _INT32_MAX:
        raise ValueError(f"{op}: zero_point={z} must lie in the int32 range")
    geometry, (ho, wo) = _pool_geometry(xa, kernel_size, stride, padding, 1, op)
    y = np.empty((xa.shape[0], xa.shape[1], ho, wo), dtype=xa.dtype)
    _qk.avg_pool2d(
        geometry=geometry, datapath=_datapath_tuple(dp, op), x=xa, x_signed=xa.dtype == np.int8, zero_point=z, y=y
    )
    return y


def max_pool2d(
    x: Codes,
    kernel_size: Optional[IntPair],
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Codes:
    """Max pooling of codes ``x (N, C, H, W)`` (int8/uint8): the largest valid code per window (section 6).

    A dilated window that covers only padding has no maximum: ``ValueError``.

    >>> x = np.array([[[[7, 2, 4], [4, 4, 1]]]], dtype=np.int8)
    >>> max_pool2d(x, 3, stride=2, padding=1).tolist()
    [[[[7, 4]]]]
    """
    op = "max_pool2d"
    xa = _array(x, "x", op, (np.int8, np.uint8), 4)
    geometry, (ho, wo) = _pool_geometry(xa, kernel_size, stride, padding, dilation, op)
    y = np.empty((xa.shape[0], xa.shape[1], ho, wo), dtype=xa.dtype)
    _qk.max_pool2d(geometry=geometry, x=xa, x_signed=xa.dtype == np.int8, y=y)
    return y


def lut(x: Codes, table: Codes, *, x_bits: int, x_signed: bool) -> Codes:
    """``y = table[x - qmin]`` (section 6) for ``x_bits``-bit codes; binary codes index by their bit.

    ``x`` int8 (``x_signed``) or uint8; ``table`` int8 or uint8 with ``2^x_bits`` entries;
    the output has ``x``'s shape and ``table``'s dtype.

    >>> lut(np.array([-2, -1, 0, 1], dtype=np.int8), np.array([0, 0, 0, 1], dtype=np.int8),
    ...     x_bits=2, x_signed=True).tolist()    # ReLU on int2
    [0, 0, 0, 1]
    """
    op = "lut"
    if isinstance(x_bits, bool) or not isinstance(x_bits, (int, np.integer)) or not 1 <= int(x_bits) <= 8:
        raise ValueError(f"{op}: x_bits={x_bits!r} must be an integer in 1..8")
    bits = int(x_bits)
    signed = _bool(x_signed, "x_signed", op)
    xa = _array(x, "x", op, (_code_dtype(signed),))
    ta = _array(table, "table", op, (np.int8, np.uint8), 1)
    if ta.size != 1 << bits:
        raise ValueError(f"{op}: table has {ta.size} entries, expected 2^x_bits = {1 << bits}")
    _check_codes(xa, "x", op, bits, signed)
    y = np.empty(xa.shape, dtype=ta.dtype)
    _qk.lut(x=xa, x_bits=bits, x_signed=signed, table=ta, table_signed=ta.dtype == np.int8, y=y)
    return y


# ----------------------------------------------------------------------------- primitives (2, 5.1)


def rounding_right_shift(v: int, k: int, mode: str) -> int:
    """``round(v / 2^k)`` in rounding ``mode`` for an int64 ``v`` and ``0 <= k <= 62`` (section 2, C primitive).

    >>> [rounding_right_shift(v, 1, "half_away") for v in (-5, -1, 1, 5)]
    [-3, -1, 1, 3]
    """
    if mode not in _ROUNDING:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(map(repr, _ROUNDING))}")
    return int(_qk.rounding_right_shift(scalar_int(v, "v", "rounding_right_shift"), scalar_int(k, "k", "rounding_right_shift"),
                                        _ROUNDING[mode]))  # fmt: skip


def saturating_rounding_doubling_high_mul(a: int, b: int, n: int = 31) -> int:
    """``saturate_int32(floor((a b + 2^(n-1)) / 2^n))`` for int32 ``a``, ``b`` (section 5.1, C primitive).

    >>> saturating_rounding_doubling_high_mul(-2**31, -2**31), saturating_rounding_doubling_high_mul(422480, 1125735238)
    (2147483647, 221469)
    """
    op = "saturating_rounding_doubling_high_mul"
    return int(_qk.srdhm(scalar_int(a, "a", op), scalar_int(b, "b", op), scalar_int(n, "n", op)))
