"""``gru`` (docs/arithmetic.md section 6.7): one GRU layer over a sequence on the integer datapath, in the formats
of section 6.6's LSTM: 8-bit (or narrower) operands, 16-bit Q3.12 gates, the contract's sigmoid and tanh tables.

For inputs ``x (N, T, F)`` and outputs ``h (N, T, H)``, gate rows ``j`` in PyTorch's order ``r, z, n`` and
``h_0 = z_h``, at every step (from the last one when ``reverse``):

    a_j = acc(b_ih[j] + sum_k (x_t[k] - z_x) (W_ih[j, k] - z_ih[j]))        section 4
    r_j = acc(b_hh[j] + sum_k (h_{t-1}[k] - z_h) (W_hh[j, k] - z_hh[j]))
    qa_j = sat16(y0(a_j, M_ih[j]));  qh_j = sat16(y0(r_j, M_hh[j]))       Q3.12
    r = S(sat16(qa_r + qh_r));  z = S(sat16(qa_z + qh_z))                   Q0.15
    n = Th(sat16(qa_n + rrs(r qh_n, 15)))                                  Q0.15
    hq = sat16(y0(h_{t-1} - z_h, M_hq))                                     the previous state in Q0.15
    h_t = clamp(y0((2^15 - z) n + z hq, M_out) + z_h, lo, hi)               output codes

with ``M_ih = s_x s_ih 2^12``, ``M_hh = s_h s_hh 2^12``, ``M_hq = s_h 2^15`` and ``M_out = 2^-30 / s_h``, and ``S``,
``Th`` the interpolated tables of :mod:`quant.contract.lstm`.

>>> attrs = GruAttrs.build(hidden=2, features=3, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
...                        ih_multiplier=1.0, hh_multiplier=1.0, hq_multiplier=2.0 ** 8, out_multiplier=2.0 ** -23,
...                        datapath=Datapath.preset("tflite_int8"))
>>> attrs.gates, attrs.output.zero_point
(3, 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from quant.contract.args import check_bool, check_datapath
from quant.contract.attrs import OutputCodes, RealMultiplier, _listed, _per_channel_requant
from quant.contract.datapath import Datapath
from quant.contract.lstm import RecurrentShapes, recurrent_fields
from quant.contract.multiplier import MultiplierLike, RequantParams

__all__ = ["GruAttrs"]


@dataclass(frozen=True)
class GruAttrs(RecurrentShapes):
    """gru (section 6.7): sizes, zero points, the four requantizations, the output codes and the direction."""

    hidden: int
    features: int
    x_zero_point: int
    h_zero_point: int
    ih_zero_point: tuple[int, ...]
    hh_zero_point: tuple[int, ...]
    ih_requant: RequantParams
    hh_requant: RequantParams
    hq_requant: RequantParams
    out_requant: RequantParams
    ih_multiplier: RealMultiplier
    hh_multiplier: RealMultiplier
    hq_multiplier: RealMultiplier
    out_multiplier: RealMultiplier
    reverse: bool
    output: OutputCodes
    datapath: Datapath
    op: str = "gru"

    @property
    def gates(self) -> int:
        """Gate rows per hidden unit (r, z, n)."""
        return 3

    @classmethod
    def build(
        cls,
        *,
        hidden: int,
        features: int,
        x_zero_point: int,
        h_zero_point: int,
        ih_zero_point: Sequence[int],
        hh_zero_point: Sequence[int],
        ih_multiplier: MultiplierLike,
        hh_multiplier: MultiplierLike,
        hq_multiplier: MultiplierLike,
        out_multiplier: MultiplierLike,
        reverse: bool = False,
        y_bits: Optional[int] = None,
        y_signed: Optional[bool] = None,
        datapath: Datapath,
    ) -> "GruAttrs":
        """Checked attributes (the output codes are the datapath's activation codes, as for the LSTM)."""
        op = "gru"
        dp = check_datapath(datapath)
        h, f, zx, zh, zeros, ih, hh, out, reals, output = recurrent_fields(
            op, 3, hidden, features, x_zero_point, h_zero_point, ih_zero_point, hh_zero_point,
            (ih_multiplier, hh_multiplier, out_multiplier), y_bits, y_signed, dp)  # fmt: skip
        hq, hq_real = _per_channel_requant(hq_multiplier, dp, 1, op)
        return cls(h, f, zx, zh, zeros[0], zeros[1], ih, hh, hq, out, reals[0], reals[1], hq_real, reals[2],
                   check_bool(reverse, "reverse", op), output, dp)  # fmt: skip

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"hidden": self.hidden, "features": self.features, "x_zero_point": self.x_zero_point,
                "h_zero_point": self.h_zero_point, "ih_zero_point": list(self.ih_zero_point),
                "hh_zero_point": list(self.hh_zero_point), "ih_multiplier": _listed(self.ih_multiplier),
                "hh_multiplier": _listed(self.hh_multiplier), "hq_multiplier": _listed(self.hq_multiplier),
                "out_multiplier": _listed(self.out_multiplier), "reverse": self.reverse, "y_bits": self.output.bits,
                "y_signed": self.output.signed}  # fmt: skip
