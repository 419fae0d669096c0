"""``QuantSpec``: what one quantizer does, as a frozen, validated dataclass.

A spec describes the map from real values to integer codes

    q = clamp(round(x / s) + z, qmin, qmax)

with scale ``s`` (> 0), integer zero point ``z`` and rounding mode ``round``. It fixes
the code range (bits, signedness, narrow range), the granularity of ``s`` and ``z``
(one per tensor, one per channel along ``axis``, or one per group of ``group_size``
consecutive elements along ``axis``), the rounding mode and the scale constraint.

The same class is the Hydra structured-config schema of a scheme: every field is a
plain scalar, and invalid combinations raise ``ValueError`` at construction naming the
field and the allowed values.

Special cases:

* ``bits=1, signed=True`` is binary sign quantization: codes are {-1, +1} (there is no
  code 0), ``q = +1`` when ``x >= 0`` and ``-1`` otherwise, dequantized as ``q * s``.
  It requires ``symmetric=True``.
* ternary is ``bits=2, signed=True, narrow=True, symmetric=True``: codes {-1, 0, +1}.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal, Optional

from quant.contract.codes import code_kind, code_range
from quant.contract.rounding import ROUNDING_MODES

__all__ = ["QuantSpec", "GRANULARITIES", "SCALE_CONSTRAINTS", "Granularity", "ScaleConstraint"]

GRANULARITIES: tuple[str, ...] = ("tensor", "channel", "group")
SCALE_CONSTRAINTS: tuple[str, ...] = ("float", "pow2")

Granularity = Literal["tensor", "channel", "group"]
ScaleConstraint = Literal["float", "pow2"]


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"QuantSpec.{field}={value!r} is not one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class QuantSpec:
    """A quantization scheme for one tensor.

    Code range: signed ``[-2^(b-1) (+1 if narrow), 2^(b-1) - 1]``, unsigned
    ``[0, 2^b - 1]``; for binary (``bits=1``, signed) the codes are ``{-1, +1}``.

    >>> QuantSpec(bits=8, signed=True, symmetric=True, granularity="channel", axis=0).code_range
    (-128, 127)
    >>> QuantSpec(bits=4, narrow=True).code_range
    (-7, 7)
    >>> QuantSpec(bits=4, signed=False, symmetric=False).code_range
    (0, 15)
    >>> QuantSpec.ternary().code_range
    (-1, 1)
    >>> QuantSpec.binary().code_range
    (-1, 1)
    >>> QuantSpec(bits=9)
    Traceback (most recent call last):
    ...
    ValueError: QuantSpec.bits=9 must be an integer in 1..8
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    narrow: bool = False
    granularity: str = "tensor"
    axis: Optional[int] = None
    group_size: Optional[int] = None
    rounding: str = "half_even"
    scale: str = "float"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ValueError(f"QuantSpec.bits={self.bits!r} must be an integer in 1..8")
        for name in ("signed", "symmetric", "narrow"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"QuantSpec.{name}={getattr(self, name)!r} must be a bool")
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("rounding", self.rounding, ROUNDING_MODES)
        _choice("scale", self.scale, SCALE_CONSTRAINTS)
        if self.granularity == "tensor":
            if self.axis is not None or self.group_size is not None:
                raise ValueError(
                    "QuantSpec.axis and QuantSpec.group_size must be None when granularity='tensor' "
                    f"(got axis={self.axis!r}, group_size={self.group_size!r})"
                )
        else:
            if isinstance(self.axis, bool) or not isinstance(self.axis, int):
                raise ValueError(
                    f"QuantSpec.axis={self.axis!r} must be an integer when granularity={self.granularity!r}"
                )
            if self.granularity == "channel" and self.group_size is not None:
                raise ValueError("QuantSpec.group_size must be None when granularity='channel'")
            if self.granularity == "group" and (
                isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1
            ):
                raise ValueError(
                    f"QuantSpec.group_size={self.group_size!r} must be a positive integer when granularity='group'"
                )
        if self.bits == 1 and self.signed:
            if not self.symmetric:
                raise ValueError("QuantSpec.symmetric must be True for binary (bits=1, signed=True) quantization")
            if self.narrow:
                raise ValueError("QuantSpec.narrow must be False for binary (bits=1, signed=True): codes are {-1, +1}")
        if self.bits == 1 and not self.signed and self.narrow:
            raise ValueError("QuantSpec.narrow=True leaves no code range for bits=1, signed=False")

    # ----------------------------------------------------------------- factories
    @classmethod
    def binary(cls, **kwargs: object) -> "QuantSpec":
        """Binary sign quantization: codes {-1, +1}, ``q = +1`` iff ``x >= 0``."""
        return cls(bits=1, signed=True, symmetric=True, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def ternary(cls, **kwargs: object) -> "QuantSpec":
        """Ternary quantization: 2-bit narrow symmetric, codes {-1, 0, +1}."""
        return cls(bits=2, signed=True, symmetric=True, narrow=True, **kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> "QuantSpec":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- derived
    @property
    def is_binary(self) -> bool:
        """True for sign quantization (bits=1, signed): codes {-1, +1}."""
        return self.bits == 1 and self.signed

    @cached_property
    def qmin(self) -> int:
        """Smallest code (computed once: the per-call paths of the simulation read it on every call)."""
        if self.is_binary:
            return -1
        return code_range(self.bits, self.signed)[0] + (1 if self.narrow else 0)

    @cached_property
    def qmax(self) -> int:
        """Largest code (computed once)."""
        return code_range(self.bits, self.signed)[1]

    @property
    def code_range(self) -> tuple[int, int]:
        """``(qmin, qmax)``."""
        return self.qmin, self.qmax

    @property
    def levels(self) -> int:
        """Number of distinct codes."""
        return 2 if self.is_binary else self.qmax - self.qmin + 1

    def describe(self) -> str:
        """Short human-readable name, e.g. ``int4 sym per-channel(0) half_even``."""
        if self.is_binary:
            kind = "binary"
        elif self.bits == 2 and self.signed and self.narrow and self.symmetric:
            kind = "ternary"
        else:
            kind = f"{code_kind(self.bits, self.signed)}{'n' if self.narrow else ''}"
        sym = "sym" if self.symmetric else "asym"
        if self.granularity == "tensor":
            gran = "per-tensor"
        elif self.granularity == "channel":
            gran = f"per-channel({self.axis})"
        else:
            gran = f"per-group({self.axis},{self.group_size})"
        scale = " pow2" if self.scale == "pow2" else ""
        return f"{kind} {sym} {gran} {self.rounding}{scale}"
