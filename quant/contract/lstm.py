"""``lstm`` (docs/arithmetic.md section 6.6): one LSTM layer over a sequence, TFLite's integer LSTM generalized:
8-bit (or narrower) operands, 16-bit gates and cell state, table sigmoid and tanh.

For inputs ``x (N, T, F)`` and outputs ``h (N, T, H)`` (one direction; ``reverse`` walks the steps from the
last), gate rows ``j`` in PyTorch's order ``i, f, g, o``, ``h_0 = z_h`` and ``c_0 = 0``, at every step:

    a_j = acc(b_ih[j] + sum_k (x_t[k] - z_x) (W_ih[j, k] - z_ih[j]))        section 4
    r_j = acc(b_hh[j] + sum_k (h_{t-1}[k] - z_h) (W_hh[j, k] - z_hh[j]))
    p_j = sat16(sat16(y0(a_j, M_ih[j])) + sat16(y0(r_j, M_hh[j])))        gate pre-activations, Q3.12
    i, f, o = sigma(p_i, p_f, p_o);  g = tanh(p_g)                          Q0.15, by the tables below
    c_t = sat16(rrs(f c_{t-1}, 15) + rrs(i g, 30 - k))                      cell state, scale 2^-k
    h_t = clamp(y0(o tanh(c_t in Q3.12), M_out) + z_h, lo, hi)              output codes

``y0`` is section 5's requantization before the zero point (per gate row for ``M_ih = s_x s_ih 2^12`` and
``M_hh = s_h s_hh 2^12``, one ``M_out = 2^-30 / s_h``), ``rrs`` the rounding right shift of section 2 and
``sat16`` the clamp to ``[-2^15, 2^15 - 1]``, all in the datapath's rounding. ``c_t`` in Q3.12 is
``rrs(c_t, k - 12)`` for ``k >= 12`` and ``sat16(c_t 2^(12 - k))`` below. A table function ``F`` of a
Q3.12 value ``p`` reads the 513 entries ``T[n] = round(2^15 F((128 n - 2^15) 2^-12))`` (float64, ties to
even, clamped to int16) with ``u = p + 2^15``, ``n = u >> 7``, ``d = u & 127``:
``F(p) = T[n] + rrs((T[n + 1] - T[n]) d, 7)``.

>>> dp = Datapath.preset("tflite_int8")
>>> attrs = LstmAttrs.build(hidden=1, features=1, x_zero_point=0, h_zero_point=0, ih_zero_point=[0] * 4,
...                         hh_zero_point=[0] * 4, ih_multiplier=[2.0 ** -7] * 4, hh_multiplier=[2.0 ** -7] * 4,
...                         out_multiplier=2.0 ** -23, cell_shift=11, datapath=dp)
>>> attrs.gates, sigmoid_table()[256], tanh_table()[288]    # sigma(0) = 1/2, tanh(1) = 0.7616 in Q0.15
(4, 16384, 24956)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Sequence

from quant.contract.args import check_bool, check_datapath, check_zero_point, scalar_int
from quant.contract.attrs import (
    MAX_DIM,
    OutputCodes,
    RealMultiplier,
    _listed,
    _per_channel_requant,
    _x_zero_point,
    check_bias_values,
)
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike, RequantParams

__all__ = ["LstmAttrs", "LSTM_TABLE_SIZE", "RecurrentShapes", "recurrent_fields", "sigmoid_table", "tanh_table"]

#: Entries of the sigmoid and tanh tables (512 intervals of 128 Q3.12 steps over [-8, 8]).
LSTM_TABLE_SIZE = 513
_INT16 = (-(1 << 15), (1 << 15) - 1)


def _table(fn: Any) -> tuple[int, ...]:
    out = []
    for n in range(LSTM_TABLE_SIZE):
        v = round((1 << 15) * fn((128 * n - (1 << 15)) / 4096.0))  # Python round: ties to even
        out.append(max(_INT16[0], min(_INT16[1], v)))
    return tuple(out)


@lru_cache(maxsize=None)
def sigmoid_table() -> tuple[int, ...]:
    """``T[n] = round(2^15 sigma((128 n - 2^15) 2^-12))`` for ``n = 0..512``, clamped to int16."""
    return _table(lambda v: 1.0 / (1.0 + math.exp(-v)))


@lru_cache(maxsize=None)
def tanh_table() -> tuple[int, ...]:
    """``T[n] = round(2^15 tanh((128 n - 2^15) 2^-12))`` for ``n = 0..512``, clamped to int16."""
    return _table(math.tanh)


def recurrent_fields(
    op: str, gates: int, hidden: int, features: int, x_zero_point: int, h_zero_point: int,
    ih_zero_point: Sequence[int], hh_zero_point: Sequence[int], multipliers: tuple[MultiplierLike, ...],
    y_bits: Optional[int], y_signed: Optional[bool], dp: Datapath,
) -> tuple[int, int, int, int, list[tuple[int, ...]], RequantParams, RequantParams, RequantParams,
           tuple[RealMultiplier, ...], OutputCodes]:  # fmt: skip
    """The checks a recurrent layer's record shares (``gates`` rows per hidden unit): sizes, zero points, the
    input and recurrent requantizations per gate row, the output's (one value) and the output codes, which are
    the datapath's activation codes (the next step's operand). ``multipliers`` are ``(ih, hh, out)``."""
    h, f = scalar_int(hidden, "hidden", op), scalar_int(features, "features", op)
    for v, name in ((h, "hidden"), (f, "features")):
        if not 1 <= v <= MAX_DIM // gates:
            raise ValueError(f"{op}: {name}={v} must be in 1..{MAX_DIM // gates}")
    zx = _x_zero_point(x_zero_point, dp, op, "x_zero_point")
    zh = _x_zero_point(h_zero_point, dp, op, "h_zero_point")
    rows = gates * h
    zeros = []
    for zp, name in ((ih_zero_point, "ih_zero_point"), (hh_zero_point, "hh_zero_point")):
        values = tuple(scalar_int(v, name, op) for v in zp)
        if len(values) not in (1, rows):
            raise ValueError(f"{op}: {name} must hold 1 or {gates} * hidden = {rows} values, got {len(values)}")
        for v in values:
            check_zero_point(v, name, op, dp.w_bits, dp.w_signed, dp.w_zero_point)
        zeros.append(values)
    ih, ih_real = _per_channel_requant(multipliers[0], dp, rows, op)
    hh, hh_real = _per_channel_requant(multipliers[1], dp, rows, op)
    out, out_real = _per_channel_requant(multipliers[-1], dp, 1, op)
    yb = dp.a_bits if y_bits is None else y_bits
    ys = dp.a_signed if y_signed is None else check_bool(y_signed, "y_signed", op)
    if (yb, ys) != (dp.a_bits, dp.a_signed):
        raise ValueError(f"{op}: the output is the next step's operand: y_bits={yb}, y_signed={ys} must be the "
                         f"datapath's activation codes ({dp.a_bits}, {dp.a_signed})")  # fmt: skip
    output = OutputCodes.build(op, yb, ys, None, None, zh)
    return h, f, zx, zh, zeros, ih, hh, out, (ih_real, hh_real, out_real), output


class RecurrentShapes:
    """The shape and bias checks of a recurrent layer's record: ``gates`` rows per hidden unit."""

    hidden: int
    features: int
    datapath: Datapath
    op: str

    @property
    def gates(self) -> int:
        """Gate rows per hidden unit."""
        raise NotImplementedError

    def check_shapes(self, x_shape: Sequence[int], w_ih_shape: Sequence[int], w_hh_shape: Sequence[int]) -> tuple[int, int]:
        """``(N, T)`` of ``x (N, T, features)``; ``ValueError`` unless the weights are ``(G H, F)`` and ``(G H, H)``."""
        x, wi, wh = (tuple(int(d) for d in s) for s in (x_shape, w_ih_shape, w_hh_shape))
        rows = self.gates * self.hidden
        if len(x) != 3 or x[2] != self.features:
            raise ValueError(f"{self.op}: x must be (N, T, {self.features}), got {x}")
        if x[1] < 1:
            raise ValueError(f"{self.op}: x must hold at least one step, got {x}")
        if wi != (rows, self.features) or wh != (rows, self.hidden):
            raise ValueError(f"{self.op}: w_ih must be {(rows, self.features)} and w_hh {(rows, self.hidden)}, got "
                             f"{wi} and {wh}")  # fmt: skip
        return x[0], x[1]

    def check_biases(self, b_ih: Optional[tuple[int, int, int]], b_hh: Optional[tuple[int, int, int]]) -> None:
        """Each bias is None or ``(length, min, max)``: one value per gate row, within ``bias_bits``."""
        check_bias_values(b_ih, self.gates * self.hidden, self.datapath, self.op)
        check_bias_values(b_hh, self.gates * self.hidden, self.datapath, self.op)


@dataclass(frozen=True)
class LstmAttrs(RecurrentShapes):
    """lstm (section 6.6): sizes, zero points, the three requantizations, the cell's scale ``2^-cell_shift``,
    the output codes (the hidden state's) and the direction."""

    hidden: int
    features: int
    x_zero_point: int
    h_zero_point: int
    ih_zero_point: tuple[int, ...]
    hh_zero_point: tuple[int, ...]
    ih_requant: RequantParams
    hh_requant: RequantParams
    out_requant: RequantParams
    ih_multiplier: RealMultiplier
    hh_multiplier: RealMultiplier
    out_multiplier: RealMultiplier
    cell_shift: int
    reverse: bool
    output: OutputCodes
    datapath: Datapath
    op: str = "lstm"

    @property
    def gates(self) -> int:
        """Gate rows per hidden unit (i, f, g, o)."""
        return 4

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
        out_multiplier: MultiplierLike,
        cell_shift: int,
        reverse: bool = False,
        y_bits: Optional[int] = None,
        y_signed: Optional[bool] = None,
        datapath: Datapath,
    ) -> "LstmAttrs":
        """Checked attributes; the output codes are the datapath's activation codes (``y_bits``/``y_signed`` default
        to them; the hidden state is the next step's operand, so they must be codes of that operand)."""
        op = "lstm"
        dp = check_datapath(datapath)
        h, f, zx, zh, zeros, ih, hh, out, reals, output = recurrent_fields(
            op, 4, hidden, features, x_zero_point, h_zero_point, ih_zero_point, hh_zero_point,
            (ih_multiplier, hh_multiplier, out_multiplier), y_bits, y_signed, dp)  # fmt: skip
        ih_real, hh_real, out_real = reals
        k = scalar_int(cell_shift, "cell_shift", op)
        if not 0 <= k <= 15:
            raise ValueError(f"{op}: cell_shift={k} must be in 0..15 (the cell's scale is 2^-cell_shift)")
        return cls(h, f, zx, zh, zeros[0], zeros[1], ih, hh, out, ih_real, hh_real, out_real, k,
                   check_bool(reverse, "reverse", op), output, dp)  # fmt: skip

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        return {"hidden": self.hidden, "features": self.features, "x_zero_point": self.x_zero_point,
                "h_zero_point": self.h_zero_point, "ih_zero_point": list(self.ih_zero_point),
                "hh_zero_point": list(self.hh_zero_point), "ih_multiplier": _listed(self.ih_multiplier),
                "hh_multiplier": _listed(self.hh_multiplier), "out_multiplier": _listed(self.out_multiplier),
                "cell_shift": self.cell_shift, "reverse": self.reverse, "y_bits": self.output.bits,
                "y_signed": self.output.signed}  # fmt: skip
