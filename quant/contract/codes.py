"""Code ranges and sizes (docs/arithmetic.md sections 1, 3 and 6): one function each.

* :func:`code_range`: the codes of a ``bits``-wide signed or unsigned operand;
* :func:`packed_row_bytes`: the bytes a row of codes takes in sub-byte storage;
* :func:`window_output_size`: the output length of a convolution or pooling window.

Every size is computed on Python ints, so nothing here can overflow; the callers check
that a result fits the C kernels' types.

>>> code_range(4, True), code_range(4, False), code_range(1, True)
((-8, 7), (0, 15), (-1, 1))
>>> packed_row_bytes(5, 4), packed_row_bytes(5, 3)
(3, 5)
>>> window_output_size(56, 3, stride=2, padding=1, dilation=1)
28
"""

from __future__ import annotations

import operator

__all__ = ["PACKED_BITS", "check_bits", "code_kind", "code_range", "packed_row_bytes", "window_output_size"]

#: Widths stored several codes per byte (section 3); every other width takes one byte per code.
PACKED_BITS: tuple[int, ...] = (1, 2, 4)


def check_bits(bits: object, name: str = "bits", op: str = "") -> int:
    """``bits`` as an int in 1..8, or ``ValueError`` naming ``name`` (prefixed by ``op``)."""
    value = None
    if not isinstance(bits, bool) and "bool" not in type(bits).__name__:
        try:
            value = operator.index(bits)  # type: ignore[arg-type]
        except TypeError:
            pass
    if value is None or not 1 <= value <= 8:
        raise ValueError(f"{op + ': ' if op else ''}{name}={bits!r} must be an integer in 1..8")
    return value


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of section 1: signed ``[-2^(b-1), 2^(b-1) - 1]``, unsigned ``[0, 2^b - 1]``;
    binary (1-bit signed) codes {-1, +1} are reported as ``(-1, 1)``."""
    if signed:
        return (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return 0, (1 << bits) - 1


def code_kind(bits: int, signed: bool) -> str:
    """The name of a code type in messages: ``int4``, ``uint8``, ``binary``."""
    return "binary" if (bits == 1 and signed) else f"{'int' if signed else 'uint'}{bits}"


def packed_row_bytes(n: int, bits: int) -> int:
    """Bytes taken by a row of ``n`` codes (section 3): ``ceil(n * b / 8)`` for b in {1, 2, 4}, else ``n``."""
    check_bits(bits)
    return (n * bits + 7) // 8 if bits in PACKED_BITS else n


def window_output_size(size: int, kernel: int, *, stride: int, padding: int, dilation: int) -> int:
    """``floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``: the output length of a
    window sliding over ``size`` elements (conv2d and pooling, section 6); ``<= 0`` when none fits."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pack_code_range(bits: int, signed: "bool | None") -> tuple[int, int]:
    """Codes ``pack`` accepts in ``bits`` bits: the signed or unsigned range, or with ``signed=None``
    either (``[-2^(b-1), 2^b - 1]``)."""
    if signed is None:
        return -(1 << (bits - 1)), (1 << bits) - 1
    return code_range(bits, signed)


def codes_shape(shape: object, op: str) -> tuple[int, ...]:
    """``shape`` of the codes to unpack as a tuple of ints: at least one dimension, none negative
    (``TypeError``/``ValueError`` naming it); what both backends' ``unpack`` take."""
    try:
        dims = tuple(operator.index(s) for s in shape)  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"{op}: shape must be a sequence of ints, got {shape!r}") from None
    if not dims or min(dims) < 0:
        raise ValueError(f"{op}: shape={tuple(dims)!r} must have at least one dimension, none negative")
    return dims


def packed_shape(shape: tuple[int, ...], bits: int) -> tuple[int, ...]:
    """Shape of the packed bytes of codes of ``shape``: rows along the last axis (section 3)."""
    return shape[:-1] + (packed_row_bytes(shape[-1], bits),)
