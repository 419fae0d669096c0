"""Python wrappers of the C99 integer kernels (``kernels/c``), one per op of ``docs/arithmetic.md``.

Every wrapper takes NumPy arrays of codes and a :class:`quant.contract.datapath.Datapath`.
Its attributes (zero points, window, multipliers, output range) become the op's validated
record of :mod:`quant.contract.attrs`, the one that the torch reference, the IR and the
exporters use too; ``run_<op>(attrs, ...)`` then checks what is specific to C (dtype,
contiguity, buffer lengths, through the record's shape checks), allocates the output and the
scratch buffer the C kernel asks for and calls it with the GIL released. The keyword names are
those of the torch reference (``quant.reference``), so one test can call either backend.

Dtypes: activation codes are ``int8`` when ``Datapath.a_signed`` else ``uint8``; weights
``int8``/``uint8`` per ``Datapath.w_signed``, or a :class:`PackedWeights`; output codes are
``int8`` when ``y_signed`` else ``uint8``; biases and ``requantize`` inputs are ``int32``.
Arrays must be C-contiguous: a non-contiguous array is a ``ValueError`` (never copied
silently). Bad input raises ``TypeError``/``ValueError`` naming the argument, before any
allocation; a status of the C core is re-raised naming the wrapper's argument and its allowed
range (:mod:`kernels.status`); an accumulator overflow with ``Datapath.overflow == "error"``
raises ``OverflowError`` naming the op.

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

import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence, TypeVar, Union

import numpy as np
import numpy.typing as npt

from kernels import _qk
from kernels.status import named_status
from kernels._abi import (
    ISAS,
    ROUNDING,
    add_struct,
    conv2d_geometry,
    datapath_struct,
    isa_code,
    pool_geometry,
    requant_struct,
    weights_struct,
)
from quant.contract.args import IntPair, check_bool, check_code_values, check_pack_values, scalar_int
from quant.contract.attrs import (
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    MulAttrs,
    RequantizeAttrs,
    SoftmaxAttrs,
    ZeroPointLike,
)
from quant.contract.codes import PACKED_BITS, check_bits, codes_shape, packed_row_bytes, packed_shape
from quant.contract.datapath import Datapath
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs, sigmoid_table, tanh_table
from quant.contract.attrs import OutputCodes
from quant.contract.multiplier import MultiplierLike

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
    "run_conv2d",
    "run_linear",
    "run_requantize",
    "run_add",
    "mul",
    "run_mul",
    "softmax",
    "run_softmax",
    "layernorm",
    "run_layernorm",
    "lstm",
    "run_lstm",
    "gru",
    "run_gru",
    "run_avg_pool2d",
    "run_max_pool2d",
    "run_lut",
    "rounding_right_shift",
    "saturating_rounding_doubling_high_mul",
    "isa_available",
    "ISAS",
]

Codes = npt.NDArray[Any]


# ----------------------------------------------------------------------------- array checks (C-specific)


def isa_available(isa: str) -> bool:
    """Whether the kernels can run with instruction set ``isa`` ("auto", "portable", "avx2", "avx512_vnni") here.

    >>> isa_available("portable")
    True
    """
    return bool(_qk.isa_query(isa_code(isa))[0])


def _array(a: object, name: str, op: str, dtypes: Sequence[Any], ndim: Optional[int] = None) -> Codes:
    """``a`` as a C-contiguous ndarray of one of ``dtypes`` (``TypeError``/``ValueError`` naming it)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in dtypes:  # dtype == scalar type compares as np.dtype(type); instances of _INT8 etc. by identity
        want = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype {want}, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use numpy.ascontiguousarray)")
    return a


_INT8, _UINT8, _INT32 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)


def _code_dtype(signed: bool) -> np.dtype[Any]:
    return _INT8 if signed else _UINT8


def _check_values(arr: Codes, name: str, op: str, bits: int, signed: bool) -> None:
    """The code-value check of the contract on an int8/uint8 array (a full-width dtype holds only codes)."""
    if arr.size and bits != 8:
        has_zero = bits == 1 and signed and bool(np.any(arr == 0))
        check_code_values(int(arr.min()), int(arr.max()), has_zero, name, op, bits, signed)


def _codes(a: object, name: str, op: str, bits: int, signed: bool, ndim: Optional[int] = None) -> Codes:
    """``a`` as an int8 (``signed``) or uint8 C-contiguous array of valid ``bits``-bit codes."""
    arr = _array(a, name, op, (_code_dtype(signed),), ndim)
    _check_values(arr, name, op, bits, signed)
    return arr


def _extremes(a: Optional[Codes]) -> Optional[tuple[int, int, int]]:
    if a is None:
        return None
    return (a.size, int(a.min()), int(a.max())) if a.size else (0, 0, 0)


def _bias(bias: object, op: str) -> Optional[npt.NDArray[np.int32]]:
    return None if bias is None else _array(bias, "bias", op, (_INT32,), 1)


def _bias_extremes(bias: Optional[npt.NDArray[np.int32]], dp: Datapath) -> Optional[tuple[int, int, int]]:
    """``(length, min, max)`` of a bias for its record's check. A 32-bit ``Datapath.bias_bits`` range holds
    every int32, so there only the length can fail and the range's own ends stand in for the extremes
    (two reductions saved per call; the check and its messages are the same)."""
    if bias is not None and dp.bias_bits >= 32:
        lo, hi = dp.bias_range
        return (bias.size, lo, hi)
    return _extremes(bias)


# ----------------------------------------------------------------------------- packing (section 3)


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
    bits = check_bits(bits, "bits", op)
    if c.ndim == 0:
        raise ValueError(f"{op}: codes must have at least one dimension (rows are packed along the last)")
    is_signed = None if signed is None else check_bool(signed, "signed", op)
    if c.size:
        mixes = bits == 1 and bool(np.any(c == -1)) and bool(np.any(c == 0))
        check_pack_values(int(c.min()), int(c.max()), mixes, bits, is_signed)
    n = c.shape[-1]
    out = np.empty(packed_shape(c.shape, bits), dtype=np.uint8)
    rng = -1 if is_signed is None else int(is_signed)
    with named_status("pack"):
        _qk.pack(codes=c, codes_signed=c.dtype == np.int8, rows=math.prod(c.shape[:-1]), cols=n, bits=bits, range=rng,
                 packed=out)  # fmt: skip
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
    bits = check_bits(bits, "bits", op)
    is_signed = check_bool(signed, "signed", op)
    shp = codes_shape(shape, op)
    expected = packed_shape(shp, bits)
    if p.shape != expected:
        raise ValueError(f"{op}: packed has shape {p.shape}, expected {expected} for codes of shape {shp}")
    out = np.empty(shp, dtype=np.uint8 if (bits == 8 and not is_signed) else np.int8)
    with named_status("unpack"):
        _qk.unpack(packed=p, rows=math.prod(shp[:-1]), cols=shp[-1], bits=bits, signed=is_signed, codes=out)
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
        if self.bits not in PACKED_BITS or isinstance(self.bits, bool):
            raise ValueError(f"PackedWeights.bits={self.bits!r} is not one of 1, 2, 4")
        if not isinstance(self.signed, bool):
            raise ValueError(f"PackedWeights.signed={self.signed!r} must be a bool")
        shape = tuple(self.shape)
        if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"PackedWeights.shape={self.shape!r} must have >= 2 positive dimensions")
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint8:
            raise ValueError("PackedWeights.data must be a uint8 numpy.ndarray")
        k = math.prod(shape[1:])
        expected = (shape[0], packed_row_bytes(k, self.bits))
        if self.data.shape != expected:
            raise ValueError(f"PackedWeights.data has shape {self.data.shape}, expected {expected} for shape {shape}")
        if not self.data.flags.c_contiguous:
            raise ValueError("PackedWeights.data must be C-contiguous")

    def unpacked(self) -> Codes:
        """The weight codes of :attr:`shape`: int8 when :attr:`signed`, else uint8 (as conv2d/linear take them)."""
        codes = unpack(self.data, self.bits, (self.shape[0], math.prod(self.shape[1:])), self.signed)
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
    if bits not in PACKED_BITS or isinstance(bits, bool):
        raise ValueError(f"{op}: bits={bits!r} is not one of 1, 2, 4")
    is_signed = check_bool(signed, "signed", op)
    data = pack(w.reshape(w.shape[0], -1), bits, signed=is_signed)
    return PackedWeights(data=data, bits=bits, signed=is_signed, shape=tuple(int(s) for s in w.shape))


# ----------------------------------------------------------------------------- conv2d and linear (4, 5)


def _weight_data(w: object, dp: Datapath, op: str, ndim: int) -> tuple[Codes, int, tuple[int, ...]]:
    """``(data, packed_bits, unpacked shape)`` of weight codes or :class:`PackedWeights` (codes checked)."""
    if isinstance(w, PackedWeights):
        if len(w.shape) != ndim:
            raise ValueError(f"{op}: w must have {ndim} dimensions, got packed weights of shape {w.shape}")
        if w.bits != dp.w_bits or w.signed != dp.w_signed:
            kind = f"{'int' if w.signed else 'uint'}{w.bits}"
            raise ValueError(
                f"{op}: packed weights are {kind} but datapath {dp.name!r} has "
                f"{'int' if dp.w_signed else 'uint'}{dp.w_bits} weights"
            )
        return w.data, w.bits, w.shape  # every packed field is a valid code of the datapath's weight operand
    data = _codes(w, "w", op, dp.w_bits, dp.w_signed, ndim)
    return data, 0, tuple(int(s) for s in data.shape)


def _weight_shape(w: object, op: str) -> tuple[int, ...]:
    """The unpacked shape of weight codes or :class:`PackedWeights` (what the attribute record needs)."""
    if isinstance(w, PackedWeights):
        return w.shape
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{op}: w must be a numpy.ndarray, got {type(w).__name__}")
    return tuple(int(s) for s in w.shape)


def _operands(
    attrs: Union[Conv2dAttrs, LinearAttrs], x: object, w: object, bias: object
) -> tuple[Codes, Codes, int, Optional[npt.NDArray[np.int32]]]:
    """``(x, weight data, packed bits, bias)`` of conv2d/linear, checked against ``attrs`` (dtype, codes, shapes,
    bias). Everything an operand can change is read on every call: nothing here is cached."""
    op, dp = attrs.op, attrs.datapath
    ndim = len(attrs.w_shape)
    xa = _codes(x, "x", op, dp.a_bits, dp.a_signed, ndim)
    data, packed_bits, wshape = _weight_data(w, dp, op, ndim)
    if wshape != attrs.w_shape:
        raise ValueError(f"{op}: w has shape {wshape}, the op's attributes are for {attrs.w_shape}")
    b = _bias(bias, op)
    attrs.check_bias(_bias_extremes(b, dp))
    return xa, data, packed_bits, b


# ----------------------------------------------------------------------------- what a call derives from its record
#
# A small conv2d or linear runs in a few microseconds of C; encoding the record's structs and checking the
# input's shape against it cost about as much again in Python. Both depend on the record and the input's
# shape only, never on an operand's values, so they are computed once per record (and per input shape) and
# kept beside it. A record is a frozen dataclass of immutable fields (its requantization arrays are views
# shared with the encoded struct, so even an in-place change of those would reach C as before); the entry
# is found by the record's identity, verified through a weak reference, and dropped when the record dies.


class _ShapeEntry(NamedTuple):
    """What a record derives from one input shape: the output shape, the C geometry (conv2d:
    ``qk_conv2d_geometry``; linear: ``m``, ``k``, ``n``) and the scratch bytes the kernel asks for."""

    out_shape: tuple[int, ...]
    geometry: dict[str, int]
    scratch_bytes: int


#: Input shapes remembered per record (a record sees one or a few batch sizes; more are forgotten at once).
_SHAPES_PER_RECORD = 16


class _Prepared:
    """The C structs of one conv2d/linear record (``qk_datapath``, ``qk_requant_params``), its output dtype
    and the :class:`_ShapeEntry` of each input shape seen, all computed once."""

    __slots__ = ("datapath", "requant", "y_dtype", "shapes", "cache_bytes")

    def __init__(self, attrs: Union[Conv2dAttrs, LinearAttrs]) -> None:
        self.datapath = datapath_struct(attrs.datapath, attrs.op)
        self.requant = requant_struct(attrs.requant, attrs.output)
        self.y_dtype = _code_dtype(attrs.output.signed)
        self.shapes: dict[tuple[int, ...], _ShapeEntry] = {}
        self.cache_bytes: dict[int, int] = {}  # packed bits (0: unpacked) -> bytes of a weights cache

    def remember(self, shape: tuple[int, ...], entry: _ShapeEntry) -> None:
        if len(self.shapes) >= _SHAPES_PER_RECORD:
            self.shapes.clear()
        self.shapes[shape] = entry


_PREPARED: dict[int, tuple["weakref.ref[Any]", _Prepared]] = {}


def _prepared_of(attrs: object) -> Optional[_Prepared]:
    """The :class:`_Prepared` of this very record object, if one was made (None otherwise)."""
    found = _PREPARED.get(id(attrs))
    return found[1] if found is not None and found[0]() is attrs else None


def _prepare(attrs: Union[Conv2dAttrs, LinearAttrs]) -> _Prepared:
    """The :class:`_Prepared` of ``attrs``, made now if needed (``ValueError`` of :func:`datapath_struct`)."""
    found = _prepared_of(attrs)
    if found is not None:
        return found
    prepared = _Prepared(attrs)
    key = id(attrs)

    def forget(ref: "weakref.ref[Any]") -> None:  # runs as the record dies, before its id can be reused
        entry = _PREPARED.get(key)
        if entry is not None and entry[0] is ref:
            _PREPARED.pop(key, None)

    try:
        _PREPARED[key] = (weakref.ref(attrs, forget), prepared)
    except TypeError:  # a record type without weak references: prepared again on each call
        pass
    return prepared


#: Alignment of the scratch buffer: the kernels carve their arrays at multiples of 64 bytes from its
#: start (QK__ALIGN), so a 64-byte aligned start keeps their vector loads within cache lines
#: (measured: conv3x3 128->128 at 28x28 runs at 81 GMAC/s aligned, 56-62 at offsets 16 and 48).
SCRATCH_ALIGN = 64
#: The largest scratch a wrapper asks for (2^40 bytes, 1 TiB): a geometry needing more is refused by name
#: before any allocation (the C core refuses sizes that do not fit size_t with QK_ERR_SIZE).
_MAX_SCRATCH = 1 << 40
#: Scratch up to this size (16 MiB) comes from one buffer per thread, grown as needed and reused by every
#: call; a larger one is allocated per call (its kernel runs far longer than the allocation takes).
_KEPT_SCRATCH = 1 << 24
_THREAD = threading.local()


def _aligned(nbytes: int) -> npt.NDArray[np.uint8]:
    raw = np.empty(nbytes + SCRATCH_ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % SCRATCH_ALIGN
    return raw[start : start + nbytes]


def _scratch(nbytes: int) -> npt.NDArray[np.uint8]:
    """``nbytes`` of scratch starting on a :data:`SCRATCH_ALIGN` boundary, valid until the next call in this
    thread (the kernels use it only while they run and never read what they did not write).

    The view ends as close to the end of the kept buffer as the alignment allows (less than
    ``SCRATCH_ALIGN`` bytes before it, as a buffer of its own would), so a kernel writing past its
    scratch leaves the allocation and AddressSanitizer still sees it."""
    if nbytes > _KEPT_SCRATCH:
        return _aligned(nbytes)
    kept: Optional[tuple[npt.NDArray[np.uint8], int]] = getattr(_THREAD, "scratch", None)
    if kept is None or kept[0].size < nbytes + SCRATCH_ALIGN:
        raw = np.empty(max(nbytes + SCRATCH_ALIGN, 2 * (0 if kept is None else kept[0].size), 4096), dtype=np.uint8)
        kept = (raw, int(raw.ctypes.data))
        _THREAD.scratch = kept
    raw, address = kept
    start = (address + raw.size - nbytes) // SCRATCH_ALIGN * SCRATCH_ALIGN - address
    return raw[start : start + nbytes]


# ----------------------------------------------------------------------------- weights caches
#
# Without a cache, conv2d and linear decode their weights (sub-byte fields, int16 rows, per-row bounds) and
# prepare them for the instruction set's product on every call, which for a linear layer at batch 64 is a
# third of the call. With one (``qk_weights.cache``), a call keeps that form and a later call reuses it once
# the C library has compared the weight bytes, zero points, geometry, datapath and instruction set with
# those it was made from, so an in-place change of the weights still reaches the next call. A cache is kept
# per weight array object the caller passes (a view is another object, with a cache of its own) and per
# thread (a cache serves one call at a time), and dropped with the array. It holds about four times the
# weights' bytes.


def _weights_cache(data: Codes, nbytes: int) -> npt.NDArray[np.uint8]:
    """This thread's weights cache of the array ``data``, at least ``nbytes`` long (made or grown now)."""
    caches: Optional[dict[int, tuple["weakref.ref[Any]", npt.NDArray[np.uint8]]]] = getattr(_THREAD, "weights", None)
    if caches is None:
        caches = {}
        _THREAD.weights = caches
    key = id(data)
    found = caches.get(key)
    if found is not None and found[0]() is data and found[1].size >= nbytes:
        return found[1]
    cache = _aligned(nbytes)

    def drop(_: object, caches: dict[int, Any] = caches, key: int = key) -> None:
        entry = caches.get(key)
        if entry is not None and entry[0]() is None:
            del caches[key]

    caches[key] = (weakref.ref(data, drop), cache)
    return cache


def _weights_with_cache(
    prepared: _Prepared, w: object, data: Codes, packed_bits: int, zero_point: Sequence[int], cache_bytes: Any
) -> dict[str, Any]:
    """The ``qk_weights`` struct of a conv2d/linear call, with this thread's cache of ``data`` where ``data`` is
    the caller's own array (``cache_bytes(weights)``: the C size query, asked once per record and packing)."""
    if data is not w and not (isinstance(w, PackedWeights) and data is w.data):
        return weights_struct(data, packed_bits, zero_point)
    nbytes = prepared.cache_bytes.get(packed_bits)
    if nbytes is None:
        nbytes = int(cache_bytes(weights_struct(data, packed_bits, zero_point)))
        prepared.cache_bytes[packed_bits] = nbytes
    return weights_struct(data, packed_bits, zero_point, _weights_cache(data, nbytes))


#: Records built by :func:`conv2d` and :func:`linear` from their arguments, found again by the arguments'
#: types and values (:func:`_argument_key`): building one converts every multiplier (section 5), which costs
#: 10-20 times a small kernel call. Cleared when full.
_BUILT: dict[tuple[Any, ...], Any] = {}
_MAX_BUILT = 256
_R = TypeVar("_R", Conv2dAttrs, LinearAttrs)


_EXACT = frozenset({type(None), bool, int, str})
_FLOATS = frozenset({float, np.float16, np.float32, np.float64})


def _argument_key(v: object) -> Optional[tuple[Any, ...]]:
    """A hashable key equal for two arguments exactly when they have the same types and values (so a build
    of one gives what a build of the other gives); None for anything else (a torch tensor, an object array,
    ...), which is then built on every call."""
    kind = type(v)
    if kind in _EXACT:
        return (kind, v)
    if kind in _FLOATS:
        return (kind, float(v).hex())  # type: ignore[arg-type]  # exact, and tells -0.0 from 0.0
    if isinstance(v, (np.integer, np.bool_)):
        return (kind, v.item())
    if isinstance(v, (tuple, list)) and kind in (tuple, list):
        parts = tuple(_argument_key(e) for e in v)
        return None if None in parts else (kind, parts)
    if isinstance(v, np.ndarray) and kind is np.ndarray and v.dtype.kind in "biuf" and v.dtype.itemsize <= 8:
        return (kind, v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, Datapath) and kind is Datapath:
        return (kind, v)  # frozen and validated: equal datapaths have equal, equally typed fields
    return None


def _built(cls: type[_R], **arguments: Any) -> _R:
    """``cls.build(**arguments)``, or the record an identical earlier call built (errors are never cached)."""
    parts = tuple(_argument_key(v) for v in arguments.values())
    key = None if None in parts else (cls, tuple(arguments), parts)  # the call site's fixed keyword order
    if key is not None:
        found: Optional[_R] = _BUILT.get(key)
        if found is not None:
            return found
    attrs = cls.build(**arguments)
    if key is not None:
        if len(_BUILT) >= _MAX_BUILT:
            _BUILT.clear()
        _BUILT[key] = attrs
    return attrs


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
    instruction set of the hot loops ("auto", "portable", "avx2", "avx512_vnni"): results are identical.

    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    >>> w = pack_weights(np.array([[[[1, -1], [-1, 1]]]], dtype=np.int8), 2, True)
    >>> conv2d(x, w, None, x_zero_point=3, w_zero_point=0, y_zero_point=0, multiplier=0.5, stride=2,
    ...        datapath=Datapath.preset("w4a4_acc16_sat").with_(w_bits=2), y_signed=False).tolist()
    [[[[0, 0], [0, 0]]]]
    """
    attrs = _built(
        Conv2dAttrs, w_shape=_weight_shape(w, "conv2d"), x_zero_point=x_zero_point, w_zero_point=w_zero_point,
        y_zero_point=y_zero_point, multiplier=multiplier, stride=stride, padding=padding, dilation=dilation,
        groups=groups, y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_conv2d(attrs, x, w, bias, isa=isa)


def run_conv2d(
    attrs: Conv2dAttrs, x: Codes, w: Union[Codes, PackedWeights], bias: Optional[npt.NDArray[np.int32]], *, isa: str = "auto"
) -> Codes:
    """conv2d of the validated record ``attrs`` on the operands (see :func:`conv2d`).

    The checks and structs that depend on ``attrs`` and ``x.shape`` alone are made on the first call of a
    record with an input shape and reused after (:class:`_Prepared`); the operands are checked every call."""
    xa, data, packed_bits, b = _operands(attrs, x, w, bias)
    prepared = _prepared_of(attrs)
    entry = None if prepared is None else prepared.shapes.get(xa.shape)
    if prepared is None or entry is None:
        out_shape = attrs.output_shape(xa.shape)
        prepared = _prepare(attrs)
        if xa.shape[0] == 0:  # an empty batch: the empty output (section 6), as the reference gives
            return np.empty(out_shape, dtype=prepared.y_dtype)
        geometry = conv2d_geometry(attrs, xa.shape)
        plane = (geometry["h"] + 2 * geometry["pad_h"]) * (geometry["w"] + 2 * geometry["pad_w"]) * attrs.w_shape[1]
        if 2 * plane > _MAX_SCRATCH:  # the kernels copy the zero-padded input plane (int16) into the scratch
            raise ValueError(f"conv2d: padding={attrs.padding} around a {geometry['h']}x{geometry['w']} input makes a "
                             f"padded plane of {plane} codes, whose scratch ({2 * plane} bytes) exceeds {_MAX_SCRATCH} "
                             "bytes")  # fmt: skip
        y = np.empty(out_shape, dtype=prepared.y_dtype)
        with named_status(attrs.op):
            nbytes = int(_qk.conv2d_scratch_bytes(geometry, prepared.datapath))
        prepared.remember(xa.shape, _ShapeEntry(out_shape, geometry, nbytes))
    else:
        geometry, nbytes = entry.geometry, entry.scratch_bytes
        y = np.empty(entry.out_shape, dtype=prepared.y_dtype)
    with named_status(attrs.op):
        weights = _weights_with_cache(prepared, w, data, packed_bits, attrs.w_zero_point,
                                      lambda ws: _qk.conv2d_cache_bytes(geometry, prepared.datapath, ws))  # fmt: skip
        _qk.conv2d(
            geometry=geometry, datapath=prepared.datapath, x=xa, x_zero_point=attrs.x_zero_point, weights=weights,
            bias=b, requant=prepared.requant, y=y, scratch=_scratch(nbytes), isa=isa_code(isa),
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
    attrs = _built(
        LinearAttrs, w_shape=_weight_shape(w, "linear"), x_zero_point=x_zero_point, w_zero_point=w_zero_point,
        y_zero_point=y_zero_point, multiplier=multiplier, y_bits=y_bits, y_signed=y_signed, y_min=y_min,
        y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_linear(attrs, x, w, bias, isa=isa)


def run_linear(
    attrs: LinearAttrs, x: Codes, w: Union[Codes, PackedWeights], bias: Optional[npt.NDArray[np.int32]], *, isa: str = "auto"
) -> Codes:
    """linear of the validated record ``attrs`` on the operands (see :func:`linear`; what depends on ``attrs``
    and ``x.shape`` alone is made once, as for :func:`run_conv2d`)."""
    xa, data, packed_bits, b = _operands(attrs, x, w, bias)
    prepared = _prepared_of(attrs)
    entry = None if prepared is None else prepared.shapes.get(xa.shape)
    if prepared is None or entry is None:
        m, n_out = attrs.output_shape(xa.shape)
        prepared = _prepare(attrs)
        k = attrs.w_shape[1]
        y = np.empty((m, n_out), dtype=prepared.y_dtype)
        if m == 0:  # an empty batch: the empty output (section 6)
            return y
        with named_status(attrs.op):
            nbytes = int(_qk.linear_scratch_bytes(m, k, n_out, prepared.datapath))
        geometry = {"m": m, "k": k, "n": n_out}
        prepared.remember(xa.shape, _ShapeEntry((m, n_out), geometry, nbytes))
    else:
        geometry, nbytes = entry.geometry, entry.scratch_bytes
        y = np.empty(entry.out_shape, dtype=prepared.y_dtype)
    with named_status(attrs.op):
        weights = _weights_with_cache(prepared, w, data, packed_bits, attrs.w_zero_point,
                                      lambda ws: _qk.linear_cache_bytes(geometry["k"], geometry["n"], prepared.datapath, ws))  # fmt: skip
        _qk.linear(
            m=geometry["m"], k=geometry["k"], n=geometry["n"], datapath=prepared.datapath, x=xa,
            x_zero_point=attrs.x_zero_point, weights=weights, bias=b, requant=prepared.requant, y=y,
            scratch=_scratch(nbytes), isa=isa_code(isa),
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
    attrs = RequantizeAttrs.build(
        in_zero_point=in_zero_point, multiplier=multiplier, y_zero_point=y_zero_point, y_bits=y_bits,
        y_signed=y_signed, axis=axis, datapath=datapath,
    )  # fmt: skip
    return run_requantize(attrs, q, isa=isa)


def run_requantize(attrs: RequantizeAttrs, q: npt.NDArray[np.int32], *, isa: str = "auto") -> Codes:
    """requantize of the validated record ``attrs`` on ``q`` (see :func:`requantize`)."""
    op = attrs.op
    isa_value = isa_code(isa)
    qa = _array(q, "q", op, (np.int32,))
    outer, channels, inner = attrs.channel_layout(qa.shape)
    y = np.empty(qa.shape, dtype=_code_dtype(attrs.output.signed))
    with named_status(op):
        _qk.requantize(
            q=qa, outer=outer, channels=channels, inner=inner, in_zero_point=attrs.in_zero_point,
            datapath=datapath_struct(attrs.datapath, op), requant=requant_struct(attrs.requant, attrs.output), y=y,
            isa=isa_value,
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
    attrs = AddAttrs.build(
        a_zero_point=a_zero_point, b_zero_point=b_zero_point, a_multiplier=a_multiplier, b_multiplier=b_multiplier,
        y_zero_point=y_zero_point, y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_add(attrs, a, b)


def run_add(attrs: AddAttrs, a: Codes, b: Codes) -> Codes:
    """add of the validated record ``attrs`` on two same-shape code arrays (see :func:`add`)."""
    op, dp = attrs.op, attrs.datapath
    dps = datapath_struct(dp, op)
    aa = _codes(a, "a", op, dp.a_bits, dp.a_signed)
    ba = _codes(b, "b", op, dp.a_bits, dp.a_signed)
    if aa.shape != ba.shape:
        raise ValueError(f"{op}: a and b must have the same shape, got {aa.shape} and {ba.shape}")
    y = np.empty(aa.shape, dtype=_code_dtype(attrs.output.signed))
    with named_status(op):
        _qk.add(a=aa, b=ba, params=add_struct(attrs), datapath=dps, y=y)
    return y


# ----------------------------------------------------------------------------- pooling, lut (6)


def layernorm(
    x: Codes,
    *,
    x_bits: int,
    x_signed: bool,
    eps_term: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    gamma: Optional[Codes] = None,
    gamma_zero_point: int = 0,
    bias: Optional[Codes] = None,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
    isa: str = "auto",
) -> Codes:
    """Integer LayerNorm over the last axis (section 6.5) with int8 ``gamma`` codes and an int32 ``bias``.

    >>> layernorm(np.array([[10, 20, 30, 40]], dtype=np.int8), x_bits=8, x_signed=True, eps_term=0,
    ...           multiplier=2.0 ** -15 / 0.05, y_zero_point=0, datapath=Datapath.preset("fbgemm_int8")).tolist()
    [[-27, -9, 9, 27]]
    """
    if not isinstance(x, np.ndarray) or x.ndim < 1:
        raise TypeError("layernorm: x must be a numpy.ndarray of at least one dimension")
    attrs = LayerNormAttrs.build(
        length=int(x.shape[-1]), x_bits=x_bits, x_signed=x_signed, eps_term=eps_term, multiplier=multiplier,
        y_zero_point=y_zero_point, gamma_zero_point=gamma_zero_point, y_bits=y_bits, y_signed=y_signed, y_min=y_min,
        y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_layernorm(attrs, x, gamma, bias, isa=isa)


def run_layernorm(
    attrs: LayerNormAttrs, x: Codes, gamma: Optional[Codes], bias: Optional[Codes], *, isa: str = "auto"
) -> Codes:
    """layernorm of the validated record ``attrs`` (see :func:`layernorm`)."""
    op = attrs.op
    xa = _codes(x, "x", op, attrs.x_bits, attrs.x_signed)
    rows = attrs.rows(xa.shape)
    g = None if gamma is None else _array(gamma, "gamma", op, (np.int8,), 1)
    b = _bias(bias, op)
    attrs.check_params(_extremes(g), _extremes(b))
    y = np.empty(xa.shape, dtype=_code_dtype(attrs.output.signed))
    with named_status(op):
        _qk.layernorm(x=xa, rows=rows, length=attrs.length, x_bits=attrs.x_bits, x_signed=attrs.x_signed,
                      eps_term=attrs.eps_term, gamma=g, gamma_zero_point=attrs.gamma_zero_point, bias=b,
                      datapath=datapath_struct(attrs.datapath, op), requant=requant_struct(attrs.requant, attrs.output),
                      y=y, isa=isa_code(isa))  # fmt: skip
    return y


#: The output range a gate requantization is given in C (zero point 0; the kernel saturates to int16 itself).
GATE_OUTPUT = OutputCodes(8, True, 0, -128, 127)


def lstm(
    x: Codes,
    w_ih: object,
    w_hh: object,
    b_ih: Optional[Codes] = None,
    b_hh: Optional[Codes] = None,
    *,
    x_zero_point: int,
    h_zero_point: int,
    ih_zero_point: Sequence[int],
    hh_zero_point: Sequence[int],
    ih_multiplier: MultiplierLike,
    hh_multiplier: MultiplierLike,
    out_multiplier: MultiplierLike,
    cell_shift: int,
    reverse: bool = False,
    datapath: Datapath,
) -> Codes:
    """One integer LSTM layer (section 6.6) over ``x (N, T, F)``: the hidden states ``(N, T, H)``, ``H`` from
    ``w_hh``'s shape ``(4H, H)``.

    >>> z = np.zeros((4, 1), np.int8)
    >>> lstm(np.zeros((1, 2, 1), np.int8), z, z, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
    ...      ih_multiplier=1.0, hh_multiplier=1.0, out_multiplier=2.0 ** -23, cell_shift=11,
    ...      datapath=Datapath.preset("tflite_int8")).tolist()      # c = 0.5 * 0, h = 0.5 tanh(0) = 0
    [[[0], [0]]]
    """
    shape = _weight_shape(w_hh, "lstm")
    features = _weight_shape(w_ih, "lstm")
    if len(shape) != 2 or len(features) != 2:
        raise ValueError(f"lstm: w_ih and w_hh must be 2-D, got {features} and {shape}")
    attrs = LstmAttrs.build(
        hidden=shape[1], features=features[1], x_zero_point=x_zero_point, h_zero_point=h_zero_point,
        ih_zero_point=ih_zero_point, hh_zero_point=hh_zero_point, ih_multiplier=ih_multiplier,
        hh_multiplier=hh_multiplier, out_multiplier=out_multiplier, cell_shift=cell_shift, reverse=reverse,
        datapath=datapath,
    )  # fmt: skip
    return run_lstm(attrs, x, w_ih, w_hh, b_ih, b_hh)


def run_lstm(attrs: LstmAttrs, x: Codes, w_ih: object, w_hh: object, b_ih: object, b_hh: object) -> Codes:
    """lstm (section 6.6) of the validated record ``attrs`` on codes ``x (N, T, F)``: the hidden states
    ``(N, T, H)``; ``w_ih (4H, F)``, ``w_hh (4H, H)`` weight codes or :class:`PackedWeights`, int32 biases or None."""
    return _run_recurrent(attrs, x, w_ih, w_hh, b_ih, b_hh, _qk.lstm, _qk.lstm_scratch_bytes,
                          rq_out=requant_struct(attrs.out_requant, attrs.output), cell_shift=attrs.cell_shift)  # fmt: skip


def _run_recurrent(attrs: Union[LstmAttrs, GruAttrs], x: Codes, w_ih: object, w_hh: object, b_ih: object, b_hh: object,
                   call: Any, scratch_bytes: Any, **specific: Any) -> Codes:  # fmt: skip
    """The checks and the binding call shared by lstm and gru (``specific``: the op's own keyword arguments)."""
    op, dp = attrs.op, attrs.datapath
    xa = _codes(x, "x", op, dp.a_bits, dp.a_signed, 3)
    di, pi, si = _weight_data(w_ih, dp, op, 2)
    dh, ph, sh = _weight_data(w_hh, dp, op, 2)
    n, steps = attrs.check_shapes(xa.shape, si, sh)
    bi, bh = _bias(b_ih, op), _bias(b_hh, op)
    attrs.check_biases(_extremes(bi), _extremes(bh))
    y = np.empty((n, steps, attrs.hidden), dtype=_code_dtype(dp.a_signed))
    with named_status(op):
        nbytes = int(scratch_bytes(attrs.features, attrs.hidden))
    if nbytes > _MAX_SCRATCH:
        raise ValueError(f"{op}: hidden={attrs.hidden} and features={attrs.features} need a scratch of {nbytes} "
                         f"bytes, more than {_MAX_SCRATCH}")  # fmt: skip
    with named_status(op):
        call(n=n, steps=steps, features=attrs.features, hidden=attrs.hidden, datapath=datapath_struct(dp, op), x=xa,
             x_zero_point=attrs.x_zero_point, h_zero_point=attrs.h_zero_point,
             w_ih=weights_struct(di, pi, attrs.ih_zero_point), w_hh=weights_struct(dh, ph, attrs.hh_zero_point),
             b_ih=bi, b_hh=bh, rq_ih=requant_struct(attrs.ih_requant, GATE_OUTPUT),
             rq_hh=requant_struct(attrs.hh_requant, GATE_OUTPUT), reverse=attrs.reverse,
             sigmoid_table=np.array(sigmoid_table(), dtype=np.int16), tanh_table=np.array(tanh_table(), dtype=np.int16),
             y=y, scratch=_scratch(nbytes), **specific)  # fmt: skip
    return y


def gru(
    x: Codes,
    w_ih: object,
    w_hh: object,
    b_ih: Optional[Codes] = None,
    b_hh: Optional[Codes] = None,
    *,
    x_zero_point: int,
    h_zero_point: int,
    ih_zero_point: Sequence[int],
    hh_zero_point: Sequence[int],
    ih_multiplier: MultiplierLike,
    hh_multiplier: MultiplierLike,
    hq_multiplier: MultiplierLike,
    out_multiplier: MultiplierLike,
    reverse: bool = False,
    datapath: Datapath,
) -> Codes:
    """One integer GRU layer (section 6.7) over ``x (N, T, F)``: the hidden states ``(N, T, H)``, ``H`` from ``w_hh``'s
    shape ``(3H, H)``.

    >>> z = np.zeros((3, 1), np.int8)
    >>> gru(np.zeros((1, 2, 1), np.int8), z, z, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
    ...     ih_multiplier=1.0, hh_multiplier=1.0, hq_multiplier=2.0 ** 8, out_multiplier=2.0 ** -23,
    ...     datapath=Datapath.preset("tflite_int8")).tolist()      # z = 0.5, n = tanh(0) = 0, h = 0
    [[[0], [0]]]
    """
    shape, features = _weight_shape(w_hh, "gru"), _weight_shape(w_ih, "gru")
    if len(shape) != 2 or len(features) != 2:
        raise ValueError(f"gru: w_ih and w_hh must be 2-D, got {features} and {shape}")
    attrs = GruAttrs.build(
        hidden=shape[1], features=features[1], x_zero_point=x_zero_point, h_zero_point=h_zero_point,
        ih_zero_point=ih_zero_point, hh_zero_point=hh_zero_point, ih_multiplier=ih_multiplier,
        hh_multiplier=hh_multiplier, hq_multiplier=hq_multiplier, out_multiplier=out_multiplier, reverse=reverse,
        datapath=datapath,
    )  # fmt: skip
    return run_gru(attrs, x, w_ih, w_hh, b_ih, b_hh)


def run_gru(attrs: GruAttrs, x: Codes, w_ih: object, w_hh: object, b_ih: object, b_hh: object) -> Codes:
    """gru (section 6.7) of the validated record ``attrs`` on codes ``x (N, T, F)``: the hidden states ``(N, T, H)``."""
    return _run_recurrent(attrs, x, w_ih, w_hh, b_ih, b_hh, _qk.gru, _qk.gru_scratch_bytes,
                          rq_hq=requant_struct(attrs.hq_requant, GATE_OUTPUT),
                          rq_out=requant_struct(attrs.out_requant, attrs.output))  # fmt: skip


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
    return run_avg_pool2d(AvgPool2dAttrs.build(kernel_size, stride, padding, zero_point=zero_point, datapath=datapath), x)


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
    return run_max_pool2d(MaxPool2dAttrs.build(kernel_size, stride, padding, dilation), x)


def _pool_operand(attrs: Union[AvgPool2dAttrs, MaxPool2dAttrs], x: object) -> tuple[Codes, dict[str, int], Codes]:
    """``(x, qk_pool2d_geometry, empty output)`` of a pooling op on int8/uint8 codes ``x (N, C, H, W)``."""
    xa = _array(x, "x", attrs.op, (np.int8, np.uint8), 4)
    out_shape = attrs.output_shape(xa.shape)
    geometry = pool_geometry(xa.shape, attrs.window.resolve(xa.shape, attrs.op))
    return xa, geometry, np.empty(out_shape, dtype=xa.dtype)


def _empty(x: Codes) -> bool:
    return bool(x.shape[0] == 0)  # an empty batch: the empty output (section 6)


def run_max_pool2d(attrs: MaxPool2dAttrs, x: Codes) -> Codes:
    """max_pool2d of the validated record ``attrs`` (see :func:`max_pool2d`)."""
    xa, geometry, y = _pool_operand(attrs, x)
    if not _empty(xa):
        with named_status(attrs.op):
            _qk.max_pool2d(geometry=geometry, x=xa, x_signed=xa.dtype == np.int8, y=y)
    return y


def run_avg_pool2d(attrs: AvgPool2dAttrs, x: Codes) -> Codes:
    """avg_pool2d of the validated record ``attrs`` (see :func:`avg_pool2d`)."""
    xa, geometry, y = _pool_operand(attrs, x)
    if _empty(xa):
        return y
    with named_status(attrs.op):
        _qk.avg_pool2d(
            geometry=geometry, datapath=datapath_struct(attrs.datapath, attrs.op), x=xa, x_signed=xa.dtype == np.int8,
            zero_point=attrs.zero_point, y=y,
        )  # fmt: skip
    return y


def lut(x: Codes, table: Codes, *, x_bits: int, x_signed: bool, channels: int = 1) -> Codes:
    """``y = table[x - qmin]`` (section 6) for ``x_bits``-bit codes; binary codes index by their bit.

    ``x`` int8 (``x_signed``) or uint8; ``table`` int8 or uint8 with ``2^x_bits`` entries, or
    ``(channels, 2^x_bits)``: row ``c`` for the elements of channel ``c`` (axis 1 of ``x``); the
    output has ``x``'s shape and ``table``'s dtype.

    >>> lut(np.array([-2, -1, 0, 1], dtype=np.int8), np.array([0, 0, 0, 1], dtype=np.int8),
    ...     x_bits=2, x_signed=True).tolist()    # ReLU on int2
    [0, 0, 0, 1]
    """
    return run_lut(LutAttrs.build(x_bits=x_bits, x_signed=x_signed, channels=channels), x, table)


def run_lut(attrs: LutAttrs, x: Codes, table: Codes) -> Codes:
    """lut of the validated record ``attrs`` (see :func:`lut`)."""
    op = attrs.op
    xa = _array(x, "x", op, (_code_dtype(attrs.x_signed),))
    ta = _array(table, "table", op, (np.int8, np.uint8), 1 if attrs.channels == 1 else 2)
    attrs.check_table(ta.size)
    inner = attrs.inner(xa.shape)
    _check_values(xa, "x", op, attrs.x_bits, attrs.x_signed)
    y = np.empty(xa.shape, dtype=ta.dtype)
    if xa.size == 0:
        return y
    with named_status(op):
        _qk.lut(x=xa, channels=attrs.channels, inner=inner, x_bits=attrs.x_bits, x_signed=attrs.x_signed,
                table=np.ascontiguousarray(ta).reshape(-1), table_signed=ta.dtype == np.int8, y=y)  # fmt: skip
    return y


# ----------------------------------------------------------------------------- primitives (2, 5.1)


def rounding_right_shift(v: int, k: int, mode: str) -> int:
    """``round(v / 2^k)`` in rounding ``mode`` for an int64 ``v`` and ``0 <= k <= 62`` (section 2, C primitive).

    >>> [rounding_right_shift(v, 1, "half_away") for v in (-5, -1, 1, 5)]
    [-3, -1, 1, 3]
    """
    op = "rounding_right_shift"
    if mode not in ROUNDING:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(map(repr, ROUNDING))}")
    return int(_qk.rounding_right_shift(_ranged(v, "v", op, -(2**63), 2**63 - 1), _ranged(k, "k", op, 0, 62),
                                        ROUNDING[mode]))  # fmt: skip


def saturating_rounding_doubling_high_mul(a: int, b: int, n: int = 31) -> int:
    """``saturate_int32(floor((a b + 2^(n-1)) / 2^n))`` for int32 ``a``, ``b`` (section 5.1, C primitive).

    >>> saturating_rounding_doubling_high_mul(-2**31, -2**31), saturating_rounding_doubling_high_mul(422480, 1125735238)
    (2147483647, 221469)
    """
    op = "saturating_rounding_doubling_high_mul"
    int32 = (-(2**31), 2**31 - 1)
    return int(_qk.srdhm(_ranged(a, "a", op, *int32), _ranged(b, "b", op, *int32), _ranged(n, "n", op, 1, 31)))


def _ranged(v: object, name: str, op: str, lo: int, hi: int) -> int:
    """``v`` as an int in ``lo..hi`` (``TypeError``/``ValueError`` naming it and the range)."""
    value = scalar_int(v, name, op)
    if not lo <= value <= hi:
        raise ValueError(f"{op}: {name}={value} must be in {lo}..{hi}")
    return value


def mul(
    a: Codes,
    b: Codes,
    *,
    a_zero_point: int,
    b_zero_point: int,
    multiplier: MultiplierLike,
    y_zero_point: int,
    y_bits: int = 8,
    y_signed: bool = True,
    y_min: Optional[int] = None,
    y_max: Optional[int] = None,
    datapath: Datapath,
    isa: str = "auto",
) -> Codes:
    """Elementwise product (section 6.2): ``requant((a - z_a) (b - z_b))`` with ``M = s_a s_b / s_y``;
    ``b`` of ``a``'s shape or broadcast along ``a``'s trailing dimensions (``(N, C, 1, 1)``).

    >>> a = np.array([[10, -7], [3, 100]], dtype=np.int8); b = np.array([[2], [-1]], dtype=np.int8)
    >>> mul(a, b, a_zero_point=0, b_zero_point=0, multiplier=0.25, y_zero_point=0,
    ...     datapath=Datapath.preset("tflite_int8")).tolist()
    [[5, -4], [-1, -25]]
    """
    attrs = MulAttrs.build(
        a_zero_point=a_zero_point, b_zero_point=b_zero_point, multiplier=multiplier, y_zero_point=y_zero_point,
        y_bits=y_bits, y_signed=y_signed, y_min=y_min, y_max=y_max, datapath=datapath,
    )  # fmt: skip
    return run_mul(attrs, a, b, isa=isa)


def run_mul(attrs: MulAttrs, a: Codes, b: Codes, *, isa: str = "auto") -> Codes:
    """mul of the validated record ``attrs`` (see :func:`mul`)."""
    op, dp = attrs.op, attrs.datapath
    dps = datapath_struct(dp, op)
    aa = _codes(a, "a", op, dp.a_bits, dp.a_signed)
    ba = _codes(b, "b", op, dp.a_bits, dp.a_signed)
    rows, inner, _ = attrs.broadcast(aa.shape, ba.shape)
    y = np.empty(aa.shape, dtype=_code_dtype(attrs.output.signed))
    with named_status(op):
        _qk.mul(a=aa, b=ba, rows=rows, inner=inner, a_zero_point=attrs.a_zero_point, b_zero_point=attrs.b_zero_point,
                datapath=dps, requant=requant_struct(attrs.requant, attrs.output), y=y, isa=isa_code(isa))  # fmt: skip
    return y


def softmax(
    x: Codes,
    *,
    axis: int,
    x_bits: int,
    x_signed: bool,
    table: Sequence[int],
    y_bits: int = 8,
    y_signed: bool = False,
    datapath: Datapath,
) -> Codes:
    """Integer softmax over ``axis`` (section 6.3) with the exponential ``table`` of
    :func:`quant.contract.attrs.softmax_table`; codes of scale ``2^-y_bits``.

    >>> from quant.contract.attrs import softmax_table
    >>> softmax(np.array([[4, 4, 0]], dtype=np.int8), axis=1, x_bits=8, x_signed=True, table=softmax_table(0.5, 8),
    ...         datapath=Datapath.preset("fbgemm_int8")).tolist()
    [[120, 120, 16]]
    """
    attrs = SoftmaxAttrs.build(axis=axis, x_bits=x_bits, x_signed=x_signed, table=table, y_bits=y_bits,
                               y_signed=y_signed, datapath=datapath)  # fmt: skip
    return run_softmax(attrs, x)


def run_softmax(attrs: SoftmaxAttrs, x: Codes) -> Codes:
    """softmax of the validated record ``attrs`` (see :func:`softmax`)."""
    op = attrs.op
    xa = _codes(x, "x", op, attrs.x_bits, attrs.x_signed)
    outer, length, inner = attrs.layout(xa.shape)
    y = np.empty(xa.shape, dtype=_code_dtype(attrs.output.signed))
    with named_status(op):
        _qk.softmax(x=xa, outer=outer, length=length, inner=inner, x_bits=attrs.x_bits, x_signed=attrs.x_signed,
                    table=np.array(attrs.table, dtype=np.int32), y_bits=attrs.output.bits, y_signed=attrs.output.signed,
                    datapath=datapath_struct(attrs.datapath, op), y=y)  # fmt: skip
    return y
