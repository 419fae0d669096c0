"""Argument checks shared by the reference ops: named ``TypeError``/``ValueError``s."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from quant.datapath import Datapath

IntPair = Union[int, Sequence[int]]


def check_datapath(datapath: object) -> Datapath:
    if not isinstance(datapath, Datapath):
        raise TypeError(f"datapath must be a Datapath, got {type(datapath).__name__}")
    return datapath


def int_tensor(t: object, name: str, op: str, ndim: Optional[int] = None) -> torch.Tensor:
    """``t`` as an int64 tensor; ``TypeError`` unless it is an integer tensor (with ``ndim`` dims)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be an integer torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must be an integer tensor of codes, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def scalar_int(v: object, name: str, op: str) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = int(v.item())
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    return v


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Code range of section 1 (binary {-1, +1} reported as (-1, 1))."""
    if signed:
        return (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return 0, (1 << bits) - 1


def check_codes(t: torch.Tensor, name: str, op: str, bits: int, signed: bool) -> None:
    """``ValueError`` if ``t`` holds a value outside the ``bits``/``signed`` code range (or 0 for binary)."""
    lo, hi = code_range(bits, signed)
    if t.numel() == 0:
        return
    tmin, tmax = int(t.min()), int(t.max())
    kind = "binary" if (bits == 1 and signed) else f"{'int' if signed else 'uint'}{bits}"
    if tmin < lo or tmax > hi:
        raise ValueError(f"{op}: {name} has values in [{tmin}, {tmax}] outside the {kind} code range [{lo}, {hi}]")
    if bits == 1 and signed and bool(torch.any(t == 0)):
        raise ValueError(f"{op}: {name} holds 0, but binary codes are -1 or +1")


def check_zero_point(z: int, name: str, op: str, bits: int, signed: bool, supported: bool) -> None:
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
    op: str, y_bits: int, y_signed: bool, y_min: Optional[int], y_max: Optional[int], y_zero_point: int
) -> tuple[int, int]:
    """``[lo, hi]``: the ``y_bits``/``y_signed`` code range narrowed by ``y_min``/``y_max``."""
    if isinstance(y_bits, bool) or not isinstance(y_bits, int) or not 1 <= y_bits <= 8:
        raise ValueError(f"{op}: y_bits={y_bits!r} must be an integer in 1..8")
    if not isinstance(y_signed, bool):
        raise TypeError(f"{op}: y_signed must be a bool, got {type(y_signed).__name__}")
    if y_bits == 1 and y_signed:
        raise ValueError(f"{op}: y_bits=1 with y_signed=True (binary codes) is not an output of requantization")
    lo, hi = code_range(y_bits, y_signed)
    if not lo <= y_zero_point <= hi:
        raise ValueError(f"{op}: y_zero_point={y_zero_point} is outside the output code range [{lo}, {hi}]")
    if y_min is not None:
        lo = max(lo, scalar_int(y_min, "y_min", op))
    if y_max is not None:
        hi = min(hi, scalar_int(y_max, "y_max", op))
    if lo > hi:
        raise ValueError(f"{op}: y_min={y_min} and y_max={y_max} leave an empty output range")
    return lo, hi


def pair(v: IntPair, name: str, op: str, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair as a pair of ints ``>= minimum``."""
    if isinstance(v, torch.Tensor):
        v = [int(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got bool")
    if isinstance(v, int):
        out = (v, v)
    else:
        try:
            items = tuple(v)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or an (h, w) pair, got {type(v).__name__}") from None
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
            raise ValueError(f"{op}: {name}={v!r} must be an int or an (h, w) pair of ints")
        out = (int(items[0]), int(items[1]))
    if min(out) < minimum:
        raise ValueError(f"{op}: {name}={v!r} must be >= {minimum}")
    return out
