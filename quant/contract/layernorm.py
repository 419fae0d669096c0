"""``layernorm`` over the last axis (docs/arithmetic.md section 6.5): I-BERT's integer LayerNorm, exact.

For one row of ``L`` codes ``q`` (any zero point: it cancels), with ``E`` the epsilon term of
:func:`layernorm_eps_term`, ``g_i = gamma_i - z_g`` (int8 codes and zero point; 1 without gamma) and ``b_i``
the int32 bias (0 without):

    T = sum q_j;  c_i = L q_i - T;  V = sum c_i^2                (int64: L (q_i - mean), L^3 var)
    W0 = min(V + E, 2^62 - 1);  P = the largest p in 0..16 with W0 4^p < 2^62
    R = max(1, isqrt(floor(W0 4^P / L)))                        (L sqrt(var + eps / s_x^2) 2^P)
    t_i = rounding_divide(g_i c_i 2^(15 + P), R)                 (g_i (q_i - mean) / sqrt(var + eps / s_x^2) 2^15)
    acc_i = saturate_int32(t_i + b_i);  y_i = requant(acc_i) (section 5, per tensor or per element of the row)

With ``gamma = s_g g`` and ``beta``, the real output ``gamma (x - mean) / sqrt(var + eps) + beta`` has the codes
above for ``M = s_g / (2^15 s_y)`` and ``b = round(2^15 beta / s_g)``. The arithmetic is the op's own (int64
inside, an int32 accumulator) whatever the datapath's accumulator; its rounding (``rounding_divide``) and the
requantization are the datapath's.

>>> import numpy as np
>>> from quant.contract.backend import get_backend
>>> from quant.contract.datapath import Datapath
>>> attrs = LayerNormAttrs.build(length=4, x_bits=8, x_signed=True, eps_term=0, multiplier=2.0 ** -15 / 0.05,
...                              y_zero_point=0, datapath=Datapath.preset("fbgemm_int8"))
>>> get_backend("torch_ref").layernorm(attrs, np.array([[10, 20, 30, 40]], dtype=np.int8), None, None).tolist()
[[-27, -9, 9, 27]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from quant.contract.args import check_bool, check_datapath, scalar_int
from quant.contract.attrs import OutputCodes, RealMultiplier, _listed, _per_channel_requant
from quant.contract.codes import check_bits
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike, RequantParams

__all__ = [
    "LayerNormAttrs",
    "LAYERNORM_FRACTION_BITS",
    "LAYERNORM_MAX_LENGTH",
    "LAYERNORM_MAX_EPS_TERM",
    "layernorm_eps_term",
]

#: The fraction bits of ``t``: the normalized value times ``2^15``.
LAYERNORM_FRACTION_BITS: int = 15
#: The longest row (``|c_i| < 2^23``, ``V < 2^60``).
LAYERNORM_MAX_LENGTH: int = 1 << 14
#: ``W0`` (and so ``E``) at most: ``2^62 - 1``.
LAYERNORM_MAX_EPS_TERM: int = (1 << 62) - 1


def layernorm_eps_term(eps: float, x_scale: float, length: int) -> int:
    """``E = round(eps L^3 / s_x^2)`` (float64, ties to even), at most ``2^62 - 1``: ``eps`` in code units, times
    the ``L^3`` of ``V``.

    >>> layernorm_eps_term(1e-5, 0.1, 8)
    1
    """
    for v, name in ((eps, "eps"), (x_scale, "x_scale")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"layernorm: {name}={v!r} must be a finite number")
    if eps < 0 or x_scale <= 0:
        raise ValueError(f"layernorm: eps={eps!r} must be >= 0 and x_scale={x_scale!r} > 0")
    term = float(eps) * float(length) ** 3 / float(x_scale) ** 2
    return LAYERNORM_MAX_EPS_TERM if not term < LAYERNORM_MAX_EPS_TERM else min(round(term), LAYERNORM_MAX_EPS_TERM)


@dataclass(frozen=True)
class LayerNormAttrs:
    """layernorm (section 6.5): the row length, the input code type, ``E``, gamma's zero point, the
    requantization (per tensor or one multiplier per element of the row) and the output codes."""

    length: int
    x_bits: int
    x_signed: bool
    eps_term: int
    gamma_zero_point: int
    requant: RequantParams
    multiplier: RealMultiplier
    output: OutputCodes
    datapath: Datapath
    op: str = "layernorm"

    @classmethod
    def build(
        cls,
        *,
        length: int,
        x_bits: int,
        x_signed: bool,
        eps_term: int,
        multiplier: MultiplierLike,
        y_zero_point: int,
        gamma_zero_point: int = 0,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "LayerNormAttrs":
        """The checked attributes of a layernorm over rows of ``length`` codes."""
        op = "layernorm"
        dp = check_datapath(datapath)
        n = scalar_int(length, "length", op)
        if not 1 <= n <= LAYERNORM_MAX_LENGTH:
            raise ValueError(f"{op}: length={n} must be in 1..{LAYERNORM_MAX_LENGTH}")
        e = scalar_int(eps_term, "eps_term", op)
        if not 0 <= e <= LAYERNORM_MAX_EPS_TERM:
            raise ValueError(f"{op}: eps_term={e} must be in 0..2^62-1 (see layernorm_eps_term)")
        zg = scalar_int(gamma_zero_point, "gamma_zero_point", op)
        if not -128 <= zg <= 127:
            raise ValueError(f"{op}: gamma_zero_point={zg} must be in [-128, 127] (gamma is int8 codes)")
        params, real = _per_channel_requant(multiplier, dp, n, op)
        output = OutputCodes.build(op, y_bits, y_signed, y_min, y_max, y_zero_point)
        return cls(n, check_bits(x_bits, "x_bits", op), check_bool(x_signed, "x_signed", op), e, zg, params, real,
                   output, dp)  # fmt: skip

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"length": self.length, "x_bits": self.x_bits, "x_signed": self.x_signed, "eps_term": self.eps_term,
                "multiplier": _listed(self.multiplier), "gamma_zero_point": self.gamma_zero_point,
                **self.output.build_args()}  # fmt: skip

    def rows(self, x_shape: Sequence[int]) -> int:
        """How many rows of ``length`` codes ``x`` holds; ``ValueError`` unless its last dimension is ``length``."""
        shape = tuple(int(d) for d in x_shape)
        if not shape or shape[-1] != self.length:
            raise ValueError(f"{self.op}: x of shape {shape} must have {self.length} elements in its last dimension")
        return math.prod(shape[:-1])

    def check_params(self, gamma: Optional[tuple[int, int, int]], bias: Optional[tuple[int, int, int]]) -> None:
        """``gamma`` and ``bias`` are None or ``(length, min, max)``: ``length`` int8 codes, and ``length`` int32
        values."""
        op = self.op
        if gamma is not None and gamma[0] != self.length:
            raise ValueError(f"{op}: gamma must hold {self.length} int8 codes, got {gamma[0]}")
        if bias is not None and (bias[0] != self.length or bias[1] < -(1 << 31) or bias[2] > (1 << 31) - 1):
            raise ValueError(f"{op}: bias must hold {self.length} int32 values, got {bias[0]} in "
                             f"[{bias[1]}, {bias[2]}]")  # fmt: skip

