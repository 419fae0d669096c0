"""Integer form of real multipliers: ``requant_params`` (docs/arithmetic.md sections 5 and 6.1).

A real multiplier ``M = s_x * s_w / s_y`` becomes, per ``Datapath.requant``, one variant
of :data:`RequantParams` (int32 or float32 NumPy arrays of shape ``()`` or ``(C,)``):

* ``fixed_point`` (:class:`FixedPointRequant`): an ``N``-bit integer ``M0`` and an exponent
  ``e`` with ``M ~= M0 * 2^(e - N)`` (:func:`quantize_multiplier`, TFLite's
  ``QuantizeMultiplier`` for ``N = 31`` and ``half_away``);
* ``float32`` / ``float64`` (:class:`FloatRequant`): the float32 multiplier ``fp32(M)`` (a
  float32 input is used as given);
* ``pow2`` (:class:`Pow2Requant`): the right shift ``k`` with ``M = 2^-k`` exactly.

>>> quantize_multiplier(0.75, 31)
(1610612736, 0)
>>> quantize_multiplier(2.0 ** -40, 31)         # below 2^-32: flushed to zero
(0, 0)
>>> p = requant_params([0.75, 0.001], Datapath.preset("tflite_int8"))
>>> p
FixedPointRequant(m0=[1610612736, 1099511628], exponent=[0, -9], multiplier_bits=31)
>>> requant_params(0.125, Datapath.preset("w2a2_pow2_acc16"))
Pow2Requant(right_shift=3)
>>> requant_params(0.1, Datapath.preset("fbgemm_int8")).multiplier.dtype
dtype('float32')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Sequence, Union

import numpy as np
import numpy.typing as npt

from quant.contract.datapath import Datapath
from quant.contract.rounding import round_fraction

__all__ = [
    "MultiplierLike",
    "RequantParams",
    "FixedPointRequant",
    "FloatRequant",
    "Pow2Requant",
    "AddParams",
    "FixedPointAdd",
    "FloatAdd",
    "Pow2Add",
    "quantize_multiplier",
    "requant_params",
    "add_params",
    "multiplier_values",
    "MIN_EXPONENT",
    "MAX_EXPONENT",
    "MAX_POW2_RATIO_LOG2",
]

#: A float, a sequence of floats, a NumPy array or a tensor-like object with ``detach()``
#: (a torch tensor; read on the CPU, so this module does not import torch).
MultiplierLike = Union[float, int, Sequence[float], npt.NDArray[Any], Any]

#: Fixed point: exponents below this flush the multiplier to 0; pow2: the smallest ``-k``.
MIN_EXPONENT: int = -31
#: Fixed point: exponents above this are refused; pow2: the largest ``-k``.
MAX_EXPONENT: int = 30
#: pow2 ``add``: ``|k_a - k_b|`` may not exceed this.
MAX_POW2_RATIO_LOG2: int = 32


def quantize_multiplier(multiplier: float, n_bits: int = 31, rounding: str = "half_away") -> tuple[int, int]:
    """``(M0, e)`` with ``multiplier ~= M0 * 2^(e - n_bits)`` (docs/arithmetic.md section 5.1).

    ``(f, e) = frexp(multiplier)`` with ``f`` in [0.5, 1); ``M0 = round(f * 2^N)`` with
    ``rounding`` (exact: ``f * 2^N`` is rational); if ``M0 == 2^N`` then ``M0 = 2^(N-1)``
    and ``e += 1``; if ``e < -31`` the multiplier is flushed to ``(0, 0)``; ``e > 30`` is a
    ``ValueError``. ``multiplier = 0`` gives ``(0, 0)``. So ``M0`` is in
    ``[2^(N-1), 2^N)`` or 0 and ``e`` in -31..30.

    >>> quantize_multiplier(1.0 - 2.0 ** -40, 31)   # rounds up to 2^31: renormalized
    (1073741824, 1)
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 62:
        raise ValueError(f"n_bits={n_bits!r} must be an integer in 1..62")
    m = float(multiplier)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"multiplier={m!r} must be finite and >= 0")
    if m == 0.0:
        return 0, 0
    f, e = math.frexp(m)
    m0 = round_fraction(Fraction(f) * (1 << n_bits), rounding)
    if m0 == 1 << n_bits:
        m0 >>= 1
        e += 1
    if e < MIN_EXPONENT:
        return 0, 0
    if e > MAX_EXPONENT:
        largest = (2**n_bits - 1) * 2.0 ** (MAX_EXPONENT - n_bits)
        raise ValueError(
            f"multiplier={m!r} is too large for fixed-point requantization: with a {n_bits}-bit M0 it rounds to "
            f"2^{MAX_EXPONENT} or more (exponent {e} > {MAX_EXPONENT}); the largest is {largest!r}"
        )
    return m0, e


def _listed(a: npt.NDArray[Any]) -> object:
    return a.tolist()


class _PerChannel:
    """Shape helpers of the requantization variants (``()`` per tensor, ``(C,)`` per channel), and
    equality and hashing by value (so records holding them compare and hash by value too)."""

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        raise NotImplementedError

    def _key(self) -> tuple[object, ...]:
        return (type(self), *((a.dtype.str, a.shape, a.tobytes()) for a in self._arrays()), *self._scalars())

    def _scalars(self) -> tuple[object, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _PerChannel) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the parameter arrays: ``()`` or ``(C,)``."""
        return tuple(self._arrays()[0].shape)

    @property
    def count(self) -> int:
        """Number of multipliers: 1 per tensor, ``C`` per channel."""
        return math.prod(self.shape)


@dataclass(frozen=True, eq=False, repr=False)
class FixedPointRequant(_PerChannel):
    """``fixed_point`` (section 5.1): ``M ~= M0 * 2^(e - N)``.

    ``m0``: int32 ``M0`` in ``[2^(N-1), 2^N)`` or 0; ``exponent``: int32 ``e`` in -31..30
    (left-positive, as TFLite's shift); ``multiplier_bits``: ``N``.
    """

    m0: npt.NDArray[np.int32]
    exponent: npt.NDArray[np.int32]
    multiplier_bits: int
    requant: ClassVar[str] = "fixed_point"

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return self.m0, self.exponent

    def _scalars(self) -> tuple[object, ...]:
        return (self.multiplier_bits,)

    def __repr__(self) -> str:
        return (
            f"FixedPointRequant(m0={_listed(self.m0)}, exponent={_listed(self.exponent)}, "
            f"multiplier_bits={self.multiplier_bits})"
        )


@dataclass(frozen=True, eq=False, repr=False)
class FloatRequant(_PerChannel):
    """``float32`` / ``float64`` (sections 5.2, 5.3): ``multiplier`` is float32 ``fp32(M)``, finite and ``>= 0``;
    ``precision`` names the float type the product is computed in."""

    multiplier: npt.NDArray[np.float32]
    precision: str

    @property
    def requant(self) -> str:
        """``"float32"`` or ``"float64"``: the ``Datapath.requant`` these parameters are for."""
        return self.precision

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return (self.multiplier,)

    def _scalars(self) -> tuple[object, ...]:
        return (self.precision,)

    def __repr__(self) -> str:
        return f"FloatRequant(multiplier={_listed(self.multiplier)}, precision={self.precision!r})"


@dataclass(frozen=True, eq=False, repr=False)
class Pow2Requant(_PerChannel):
    """``pow2`` (section 5.4): ``M = 2^-k``; ``right_shift`` is int32 ``k`` in -30..31."""

    right_shift: npt.NDArray[np.int32]
    requant: ClassVar[str] = "pow2"

    def _arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return (self.right_shift,)

    def __repr__(self) -> str:
        return f"Pow2Requant(right_shift={_listed(self.right_shift)})"


#: The integer (or float32) form of a multiplier: one variant per ``Datapath.requant``.
RequantParams = Union[FixedPointRequant, FloatRequant, Pow2Requant]


@dataclass(frozen=True)
class FixedPointAdd:
    """``add`` on ``fixed_point`` (section 6.1): headroom shift ``L``; ``a``/``b`` the fixed-point form
    of ``m_a / (2 max(m_a, m_b))`` and ``m_b / (2 max(m_a, m_b))``; ``out`` of ``2 max(m_a, m_b) / 2^L``."""

    left_shift: int
    a: FixedPointRequant
    b: FixedPointRequant
    out: FixedPointRequant
    requant: ClassVar[str] = "fixed_point"


@dataclass(frozen=True)
class FloatAdd:
    """``add`` on ``float32`` / ``float64``: ``a``/``b`` hold ``fp32(m_a)``/``fp32(m_b)``."""

    a: FloatRequant
    b: FloatRequant

    @property
    def requant(self) -> str:
        """``"float32"`` or ``"float64"``."""
        return self.a.precision


@dataclass(frozen=True)
class Pow2Add:
    """``add`` on ``pow2``: ``a``/``b`` hold the right shifts ``k_a``/``k_b`` (``|k_a - k_b| <= 32``)."""

    a: Pow2Requant
    b: Pow2Requant
    requant: ClassVar[str] = "pow2"


#: Parameters of ``add``: one variant per ``Datapath.requant``.
AddParams = Union[FixedPointAdd, FloatAdd, Pow2Add]


def multiplier_values(multiplier: MultiplierLike, name: str = "multiplier") -> tuple[list[float], tuple[int, ...]]:
    """The real multipliers as Python floats (exact conversions) and their shape (``()`` or ``(C,)``),
    each finite and ``>= 0``; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if hasattr(multiplier, "detach") and hasattr(multiplier, "cpu"):  # a torch tensor, read without importing torch
        multiplier = multiplier.detach().cpu().numpy()
    if isinstance(multiplier, np.ndarray):
        if multiplier.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real array, got dtype {multiplier.dtype}")
        shape = tuple(multiplier.shape)
        values = [float(v) for v in multiplier.astype(np.float64).reshape(-1)]
    elif isinstance(multiplier, (float, int, np.floating, np.integer)) and not isinstance(multiplier, (bool, np.bool_)):
        shape = ()
        values = [float(multiplier)]
    elif isinstance(multiplier, (list, tuple)):
        try:
            arr64 = np.asarray(multiplier, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a float or a sequence of floats") from None
        shape = tuple(arr64.shape)
        values = [float(v) for v in arr64.reshape(-1)]
    else:
        raise TypeError(f"{name} must be a float, a sequence, a numpy array or a tensor, got {type(multiplier).__name__}")
    if len(shape) > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D per-channel array, got shape {shape}")
    if not values:
        raise ValueError(f"{name} must not be empty")
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            where = f"[{i}]" if shape else ""
            raise ValueError(f"{name}{where}={v!r} must be finite and >= 0")
    return values, shape


def _int32(values: list[int], shape: tuple[int, ...]) -> npt.NDArray[np.int32]:
    return np.array(values, dtype=np.int32).reshape(shape)


def _fixed_point(values: list[float], shape: tuple[int, ...], datapath: Datapath, name: str) -> FixedPointRequant:
    pairs = []
    for i, v in enumerate(values):
        try:
            pairs.append(quantize_multiplier(v, datapath.multiplier_bits, datapath.multiplier_rounding))
        except ValueError as err:
            where = f"[{i}]" if shape else ""
            raise ValueError(f"{name}{where}: {err}") from None
    return FixedPointRequant(
        m0=_int32([p[0] for p in pairs], shape),
        exponent=_int32([p[1] for p in pairs], shape),
        multiplier_bits=datapath.multiplier_bits,
    )


def _float(values: list[float], shape: tuple[int, ...], datapath: Datapath, name: str) -> FloatRequant:
    with np.errstate(over="ignore"):
        m32 = np.array(values, dtype=np.float64).astype(np.float32).reshape(shape)
    if not bool(np.all(np.isfinite(m32))):
        raise ValueError(f"{name} does not fit float32 (values up to {max(values)!r})")
    return FloatRequant(multiplier=m32, precision=datapath.requant)


def _pow2(values: list[float], shape: tuple[int, ...], name: str) -> Pow2Requant:
    ks = []
    for i, v in enumerate(values):
        f, e = math.frexp(v)
        k = 1 - e
        if f != 0.5 or not -MAX_EXPONENT <= k <= -MIN_EXPONENT:
            where = f"[{i}]" if shape else ""
            raise ValueError(
                f"{name}{where}={v!r} must be an exact power of two 2^-k with k in "
                f"{-MAX_EXPONENT}..{-MIN_EXPONENT} on a pow2 datapath"
            )
        ks.append(k)
    return Pow2Requant(right_shift=_int32(ks, shape))


def requant_params(multiplier: MultiplierLike, datapath: Datapath, *, name: str = "multiplier") -> RequantParams:
    """The integer (or float32) form of ``multiplier`` on ``datapath`` (section 5).

    ``multiplier`` is a float, a sequence, a 1-D numpy array or tensor (per channel),
    every value finite and ``>= 0`` (``pow2``: exact powers of two ``2^-k`` with ``k`` in
    -30..31). A float32 array is used as given; any other value is converted exactly
    (fixed point, pow2) or rounded to the nearest float32 (float requantization).
    """
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    values, shape = multiplier_values(multiplier, name)
    if datapath.requant == "fixed_point":
        return _fixed_point(values, shape, datapath, name)
    if datapath.requant in ("float32", "float64"):
        return _float(values, shape, datapath, name)
    return _pow2(values, shape, name)


def add_params(a_multiplier: float, b_multiplier: float, datapath: Datapath) -> AddParams:
    """Parameters of ``add`` for ``m_a = s_a / s_y`` and ``m_b = s_b / s_y`` (section 6.1).

    Fixed point (TFLite's ADD, generalized): with ``m = max(m_a, m_b)`` (float64),
    ``r_a = m_a / (2m)``, ``r_b = m_b / (2m)``, ``r_out = 2m / 2^L`` (float64 divisions),
    each turned into ``(M0, e)`` by :func:`quantize_multiplier`, and
    ``L = Datapath.add_left_shift``.

    >>> p = add_params(0.5, 0.25, Datapath.preset("tflite_int8"))
    >>> p.left_shift, p.a.m0.item(), p.a.exponent.item(), p.b.exponent.item(), p.out.exponent.item()
    (20, 1073741824, 0, -1, -19)
    """
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    ma_values, ma_shape = multiplier_values(a_multiplier, "a_multiplier")
    mb_values, mb_shape = multiplier_values(b_multiplier, "b_multiplier")
    if ma_shape or mb_shape:
        raise ValueError("add: a_multiplier and b_multiplier must be scalars (per-tensor scales)")
    ma, mb = ma_values[0], mb_values[0]
    if datapath.requant == "fixed_point":
        if ma == 0 and mb == 0:
            raise ValueError("add: a_multiplier and b_multiplier must not both be 0")
        twice_max = 2.0 * max(ma, mb)
        left_shift = datapath.add_left_shift
        return FixedPointAdd(
            left_shift=left_shift,
            a=_fixed_point([ma / twice_max], (), datapath, "a_multiplier / (2 max)"),
            b=_fixed_point([mb / twice_max], (), datapath, "b_multiplier / (2 max)"),
            out=_fixed_point([twice_max / float(1 << left_shift)], (), datapath, "2 max / 2^L"),
        )
    if datapath.requant in ("float32", "float64"):
        return FloatAdd(a=_float([ma], (), datapath, "a_multiplier"), b=_float([mb], (), datapath, "b_multiplier"))
    pa, pb = _pow2([ma], (), "a_multiplier"), _pow2([mb], (), "b_multiplier")
    ka, kb = int(pa.right_shift), int(pb.right_shift)
    if abs(ka - kb) > MAX_POW2_RATIO_LOG2:
        raise ValueError(
            f"add: a_multiplier/b_multiplier = 2^{kb - ka} is outside "
            f"2^-{MAX_POW2_RATIO_LOG2}..2^{MAX_POW2_RATIO_LOG2} on a pow2 datapath"
        )
    return Pow2Add(a=pa, b=pb)
