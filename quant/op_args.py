"""Checks of the scalar arguments of the integer ops (docs/arithmetic.md), shared by the
torch reference (:mod:`quant.reference`) and the C kernels' wrappers (:mod:`kernels`), so
both backends accept and refuse the same values with the same named errors.

>>> code_range(4, True), code_range(4, False), code_range(1, True)
((-8, 7), (0, 15), (-1, 1))
>>> output_range("conv2d", 8, False, 0, 6 * 16, 0)   # fused ReLU6 at s_y = 1/16
(0, 96)
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence, Union, cast

import numpy as np
import torch

from quant.datapath import Datapath

__all__ = ["IntPair", "check_datapath", "check_zero_point", "code_range", "output_range", "pair", "scalar_int"]

IntPair = Union[int, Sequence[int]]


def check_datapath(datapath: object) -> Datapath:
    """``datapath`` itself, or ``TypeError`` if it is not a :class:`Datapath`."""
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    return datapath


def scalar_int(v: object, name: str, op: str) -> int:
    """``v`` as a Python int (a one-element integer tensor or a NumPy integer is accepted)."""
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = int(v.item())
    elif isinstance(v, np.integer):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    return v


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Code range of section 1 (binary {-1, +1} reported as (-1, 1))."""
    if signed:
        return (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return 0, (1 << bits) - 1


def check_zero_point(z: int, name: str, op: str, bits: int, signed: bool, supported: bool) -> None:
    """``ValueError`` unless ``z`` is a valid zero point of ``bits``/``signed`` codes (0 where unsupported or binary)."""
    lo, hi = code_range(bits, signed)
    if not supported and z != 0:
        raise ValueError(f"{op}: {name}={z} must be 0: the datapath has no zero point for this operand")
    if bits == 1 and signed:
        if z != 0:
            raise ValueError(f"{op}: {name}={z} must be 0 for binary codes")
        return
    if not lo <= z <= hi:
        raise ValueError(f"{op}: {name}={z} is outside the code range [{lo}, {hi}]")


def output_range(
    op: str, y_bits: object, y_signed: object, y_min: object, y_max: object, y_zero_point: object
) -> tuple[int, int]:
    """``[lo, hi]``: the ``y_bits``/``y_signed`` code range narrowed by ``y_min``/``y_max``."""
    if isinstance(y_bits, (bool, np.bool_)) or not isinstance(y_bits, (int, np.integer)) or not 1 <= int(y_bits) <= 8:
        raise ValueError(f"{op}: y_bits={y_bits!r} must be an integer in 1..8")
    bits = int(y_bits)
    if isinstance(y_signed, np.bool_):
        y_signed = bool(y_signed)
    if not isinstance(y_signed, bool):
        raise TypeError(f"{op}: y_signed must be a bool, got {type(y_signed).__name__}")
    z = scalar_int(y_zero_point, "y_zero_point", op)
    if bits == 1 and y_signed:
        raise ValueError(f"{op}: y_bits=1 with y_signed=True (binary codes) is not an output of requantization")
    lo, hi = code_range(bits, y_signed)
    if not lo <= z <= hi:
        raise ValueError(f"{op}: y_zero_point={z} is outside the output code range [{lo}, {hi}]")
    if y_min is not None:
        lo = max(lo, scalar_int(y_min, "y_min", op))
    if y_max is not None:
        hi = min(hi, scalar_int(y_max, "y_max", op))
    if lo > hi:
        raise ValueError(f"{op}: y_min={y_min} and y_max={y_max} leave an empty output range")
    return lo, hi


def pair(v: object, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair as a pair of ints ``>= minimum``."""
    if isinstance(v, torch.Tensor):
        v = [int(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got bool")
    if isinstance(v, (int, np.integer)):
        out = (int(v), int(v))
    else:
        try:
            items = tuple(cast(Iterable[Any], v))
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got {type(v).__name__}") from None
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items):
            raise ValueError(f"{op}: {name}={v!r} must be an int or an (h, w) pair of ints")
        out = (int(items[0]), int(items[1]))
    if min(out) < minimum:
        raise ValueError(f"{op}: {name}={v!r} must be >= {minimum}")
    return out
