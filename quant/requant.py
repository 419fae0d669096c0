"""Integer form of real multipliers: ``requant_params`` (docs/arithmetic.md sections 5 and 6.1).

A real multiplier ``M = s_x * s_w / s_y`` becomes, per ``Datapath.requant``:

* ``fixed_point``: an ``N``-bit integer ``M0`` and an exponent ``e`` with
  ``M ~= M0 * 2^(e - N)`` (:func:`quantize_multiplier`, TFLite's ``QuantizeMultiplier``
  for ``N = 31`` and ``half_away``);
* ``float32`` / ``float64``: the float32 multiplier ``fp32(M)`` (a float32 input is used as given);
* ``pow2``: the right shift ``k`` with ``M = 2^-k`` exactly.

>>> quantize_multiplier(0.75, 31)
(1610612736, 0)
>>> quantize_multiplier(2.0 ** -40, 31)         # below 2^-32: flushed to zero
(0, 0)
>>> p = requant_params([0.75, 0.001], Datapath.preset("tflite_int8"))
>>> p.multiplier_int.tolist(), p.shift.tolist()
([1610612736, 1099511628], [0, -9])
>>> requant_params(0.125, Datapath.preset("w2a2_pow2_acc16")).shift.tolist()
3
>>> requant_params(0.1, Datapath.preset("fbgemm_int8")).multiplier_float.dtype
torch.float32
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence, Union

import numpy as np
import torch

from quant.datapath import INTEGER_ROUNDING_MODES, Datapath

__all__ = [
    "MultiplierLike",
    "RequantParams",
    "AddParams",
    "round_fraction",
    "quantize_multiplier",
    "requant_params",
    "add_params",
    "MIN_EXPONENT",
    "MAX_EXPONENT",
    "MAX_POW2_RATIO_LOG2",
]

MultiplierLike = Union[float, int, Sequence[float], np.ndarray, torch.Tensor]

#: Fixed point: exponents below this flush the multiplier to 0; pow2: the smallest ``-k``.
MIN_EXPONENT: int = -31
#: Fixed point: exponents above this are refused; pow2: the largest ``-k``.
MAX_EXPONENT: int = 30
#: pow2 ``add``: ``|k_a - k_b|`` may not exceed this.
MAX_POW2_RATIO_LOG2: int = 32


def round_fraction(x: Fraction, mode: str) -> int:
    """``round(x)`` of an exact rational with a rounding mode of docs/arithmetic.md section 2.

    >>> [round_fraction(Fraction(v, 2), "half_away") for v in (-5, -1, 1, 5)]
    [-3, -1, 1, 3]
    """
    if mode not in INTEGER_ROUNDING_MODES:
        raise ValueError(f"rounding mode {mode!r} is not one of {', '.join(map(repr, INTEGER_ROUNDING_MODES))}")
    fl = math.floor(x)
    rem = x - fl
    if mode == "floor" or rem == 0:
        return fl
    half = Fraction(1, 2)
    if rem != half:
        return fl + (1 if rem > half else 0)
    if mode == "half_up":
        return fl + 1
    if mode == "half_away":
        return fl + (1 if x > 0 else 0)
    return fl + (fl & 1)  # half_even


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
        raise ValueError(
            f"multiplier={m!r} is too large for fixed-point requantization: exponent {e} > {MAX_EXPONENT} "
            f"(the multiplier must be below 2^{MAX_EXPONENT})"
        )
    return m0, e


@dataclass(frozen=True, eq=False)
class RequantParams:
    """Integer (or float32) form of a per-tensor or per-channel multiplier for one datapath.

    All tensors have the shape of the multiplier given to :func:`requant_params`: ``()``
    for a scalar, ``(C,)`` per channel.

    * ``fixed_point``: ``multiplier_int`` (int64, ``M0`` in ``[2^(N-1), 2^N)`` or 0) and
      ``shift`` (int64, the exponent ``e`` in -31..30, left-positive as in TFLite:
      ``M ~= M0 * 2^(e - N)``); ``multiplier_float`` is None.
    * ``float32`` / ``float64``: ``multiplier_float`` (float32, ``fp32(M)``); the others are None.
    * ``pow2``: ``shift`` (int64, the **right** shift ``k`` in -30..31 with ``M = 2^-k``);
      the others are None.
    """

    requant: str
    multiplier_bits: int
    multiplier_int: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None
    multiplier_float: Optional[torch.Tensor] = None

    @property
    def count(self) -> int:
        """Number of multipliers: 1 per tensor, ``C`` per channel."""
        return math.prod(self.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the parameter tensors: ``()`` or ``(C,)``."""
        for t in (self.multiplier_int, self.shift, self.multiplier_float):
            if t is not None:
                return tuple(t.shape)
        raise ValueError("RequantParams holds no tensor")


@dataclass(frozen=True, eq=False)
class AddParams:
    """Parameters of ``add`` (docs/arithmetic.md section 6.1), per tensor.

    * ``fixed_point``: ``left_shift`` L; ``a``/``b`` the fixed-point form of
      ``m_a / (2 max(m_a, m_b))`` and ``m_b / (2 max(m_a, m_b))``; ``out`` of
      ``2 max(m_a, m_b) / 2^L``.
    * ``float32`` / ``float64``: ``a``/``b`` hold ``fp32(m_a)``/``fp32(m_b)``; ``out`` is None.
    * ``pow2``: ``a``/``b`` hold the right shifts ``k_a``/``k_b``; ``out`` is None.
    """

    requant: str
    left_shift: int
    a: RequantParams
    b: RequantParams
    out: Optional[RequantParams] = None


def _multiplier_values(multiplier: MultiplierLike, name: str) -> tuple[list[float], tuple[int, ...]]:
    """Values as Python floats (exact conversions) and the shape (``()`` or ``(C,)``)."""
    if isinstance(multiplier, torch.Tensor):
        if not multiplier.is_floating_point():
            if multiplier.is_complex() or multiplier.dtype == torch.bool:
                raise TypeError(f"{name} must be a real tensor, got {multiplier.dtype}")
        arr = multiplier.detach().cpu().to(torch.float64)
        shape = tuple(arr.shape)
        values = [float(v) for v in arr.reshape(-1).tolist()]
    elif isinstance(multiplier, np.ndarray):
        if multiplier.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real array, got dtype {multiplier.dtype}")
        shape = tuple(multiplier.shape)
        values = [float(v) for v in multiplier.astype(np.float64).reshape(-1)]
    elif isinstance(multiplier, (float, int, np.floating, np.integer)) and not isinstance(multiplier, bool):
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


def requant_params(multiplier: MultiplierLike, datapath: Datapath, *, name: str = "multiplier") -> RequantParams:
    """The integer (or float32) form of ``multiplier`` on ``datapath`` (section 5).

    ``multiplier`` is a float, a sequence, a 1-D numpy array or tensor (per channel),
    every value finite and ``>= 0`` (``pow2``: exact powers of two ``2^-k`` with ``k`` in
    -30..31). A float32 array is used as given; any other value is converted exactly
    (fixed point, pow2) or rounded to the nearest float32 (float requantization).
    """
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    values, shape = _multiplier_values(multiplier, name)
    if datapath.requant == "fixed_point":
        pairs = []
        for i, v in enumerate(values):
            try:
                pairs.append(quantize_multiplier(v, datapath.multiplier_bits, datapath.multiplier_rounding))
            except ValueError as err:
                where = f"[{i}]" if shape else ""
                raise ValueError(f"{name}{where}: {err}") from None
        return RequantParams(
            requant="fixed_point",
            multiplier_bits=datapath.multiplier_bits,
            multiplier_int=torch.tensor([p[0] for p in pairs], dtype=torch.int64).reshape(shape),
            shift=torch.tensor([p[1] for p in pairs], dtype=torch.int64).reshape(shape),
        )
    if datapath.requant in ("float32", "float64"):
        m32 = torch.tensor(values, dtype=torch.float64).to(torch.float32).reshape(shape)
        if not bool(torch.all(torch.isfinite(m32))):
            raise ValueError(f"{name} does not fit float32 (values up to {max(values)!r})")
        return RequantParams(requant=datapath.requant, multiplier_bits=datapath.multiplier_bits, multiplier_float=m32)
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
    return RequantParams(
        requant="pow2",
        multiplier_bits=datapath.multiplier_bits,
        shift=torch.tensor(ks, dtype=torch.int64).reshape(shape),
    )


def add_params(a_multiplier: float, b_multiplier: float, datapath: Datapath) -> AddParams:
    """Parameters of ``add`` for ``m_a = s_a / s_y`` and ``m_b = s_b / s_y`` (section 6.1).

    Fixed point (TFLite's ADD, generalized): with ``m = max(m_a, m_b)`` (float64),
    ``r_a = m_a / (2m)``, ``r_b = m_b / (2m)``, ``r_out = 2m / 2^L`` (float64 divisions),
    each turned into ``(M0, e)`` by :func:`quantize_multiplier`, and
    ``L = Datapath.add_left_shift``.

    >>> p = add_params(0.5, 0.25, Datapath.preset("tflite_int8"))
    >>> p.left_shift, p.a.multiplier_int.item(), p.a.shift.item(), p.b.shift.item(), p.out.shift.item()
    (20, 1073741824, 0, -1, -19)
    """
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    ma_values, ma_shape = _multiplier_values(a_multiplier, "a_multiplier")
    mb_values, mb_shape = _multiplier_values(b_multiplier, "b_multiplier")
    if ma_shape or mb_shape:
        raise ValueError("add: a_multiplier and b_multiplier must be scalars (per-tensor scales)")
    ma, mb = ma_values[0], mb_values[0]
    if datapath.requant == "fixed_point":
        if ma == 0 and mb == 0:
            raise ValueError("add: a_multiplier and b_multiplier must not both be 0")
        twice_max = 2.0 * max(ma, mb)
        left_shift = datapath.add_left_shift
        return AddParams(
            requant="fixed_point",
            left_shift=left_shift,
            a=requant_params(ma / twice_max, datapath, name="a_multiplier / (2 max)"),
            b=requant_params(mb / twice_max, datapath, name="b_multiplier / (2 max)"),
            out=requant_params(twice_max / float(1 << left_shift), datapath, name="2 max / 2^L"),
        )
    if datapath.requant in ("float32", "float64"):
        return AddParams(
            requant=datapath.requant,
            left_shift=0,
            a=requant_params(ma, datapath, name="a_multiplier"),
            b=requant_params(mb, datapath, name="b_multiplier"),
        )
    pa = requant_params(ma, datapath, name="a_multiplier")
    pb = requant_params(mb, datapath, name="b_multiplier")
    assert pa.shift is not None and pb.shift is not None
    if abs(int(pa.shift) - int(pb.shift)) > MAX_POW2_RATIO_LOG2:
        raise ValueError(
            f"add: a_multiplier/b_multiplier = 2^{int(pb.shift) - int(pa.shift)} is outside "
            f"2^-{MAX_POW2_RATIO_LOG2}..2^{MAX_POW2_RATIO_LOG2} on a pow2 datapath"
        )
    return AddParams(requant="pow2", left_shift=0, a=pa, b=pb)
