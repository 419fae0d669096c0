"""One integer LSTM layer over a sequence (docs/arithmetic.md section 6.6), in int64.

The input products of every step are accumulated at once (they do not depend on the recurrence), the
recurrent ones step by step; gates are requantized to Q3.12 int16, the activations read the contract's
513-entry tables with interpolation, the cell state is int16 of scale ``2^-cell_shift`` and the hidden state is
requantized to the output codes, which are the next step's operand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

import torch

from quant.contract.lstm import LstmAttrs, sigmoid_table, tanh_table
from quant.reference._checks import codes_tensor, extremes, int_tensor
from quant.reference.accumulate import accumulate
from quant.reference.integer import rounding_right_shift
from quant.reference.requantize import requantize_accumulator

if TYPE_CHECKING:
    from quant.contract.gru import GruAttrs

__all__ = ["run_lstm", "recurrent_inputs", "table_fn"]

_LO16, _HI16 = -(1 << 15), (1 << 15) - 1


def table_fn(table: torch.Tensor, p: torch.Tensor, rounding: str) -> torch.Tensor:
    """``T[n] + rrs((T[n + 1] - T[n]) d, 7)`` for Q3.12 ``p``: ``u = p + 2^15``, ``n = u >> 7``, ``d = u & 127``."""
    u = p + (1 << 15)
    n, d = u >> 7, u & 127
    t0 = table[n]
    return t0 + rounding_right_shift((table[n + 1] - t0) * d, 7, rounding)


def recurrent_inputs(
    attrs: Union[LstmAttrs, "GruAttrs"],
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor],
    b_hh: Optional[torch.Tensor],
) -> tuple[int, int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """What an lstm and a gru share: the operands checked, ``(N, T)``, the input parts of every step's gates in
    Q3.12 ``(N, T, G H)`` (accumulated at once: they do not depend on the recurrence), and the function from
    ``h - z_h (N, H)`` to the recurrent parts in Q3.12 ``(N, G H)``."""
    op, dp = attrs.op, attrs.datapath
    xt = codes_tensor(x, "x", op, dp.a_bits, dp.a_signed)
    wi = codes_tensor(w_ih, "w_ih", op, dp.w_bits, dp.w_signed)
    wh = codes_tensor(w_hh, "w_hh", op, dp.w_bits, dp.w_signed)
    n, steps = attrs.check_shapes(tuple(xt.shape), tuple(wi.shape), tuple(wh.shape))
    bi = None if b_ih is None else int_tensor(b_ih, "b_ih", op, ndim=1)
    bh = None if b_hh is None else int_tensor(b_hh, "b_hh", op, ndim=1)
    attrs.check_biases(extremes(bi), extremes(bh))
    rows = attrs.gates * attrs.hidden
    zi = torch.tensor(attrs.ih_zero_point, dtype=torch.int64).reshape(-1, 1)
    zh = torch.tensor(attrs.hh_zero_point, dtype=torch.int64).reshape(-1, 1)
    wi_c, wh_c = (wi - zi).unsqueeze(0), (wh - zh).unsqueeze(0)
    acc_x = accumulate((xt - attrs.x_zero_point).reshape(1, n * steps, attrs.features), wi_c,
                       None if bi is None else bi.unsqueeze(0), dp, op=op)  # fmt: skip
    q_x = requantize_accumulator(acc_x.reshape(n, steps, rows), attrs.ih_requant, dp, y_zero_point=0, lo=_LO16,
                                 hi=_HI16, channel_dim=-1, op=op)  # fmt: skip

    def recurrent(hd: torch.Tensor) -> torch.Tensor:
        acc = accumulate(hd.unsqueeze(0), wh_c, None if bh is None else bh.unsqueeze(0), dp, op=op)
        return requantize_accumulator(acc[0], attrs.hh_requant, dp, y_zero_point=0, lo=_LO16, hi=_HI16,
                                      channel_dim=-1, op=op)  # fmt: skip

    return n, steps, q_x, recurrent


def run_lstm(
    attrs: LstmAttrs,
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor],
    b_hh: Optional[torch.Tensor],
) -> torch.Tensor:
    """lstm of ``attrs`` on codes ``x (N, T, F)`` with weight codes ``w_ih (4H, F)``, ``w_hh (4H, H)`` and int32 biases
    (either may be None): the hidden states ``(N, T, H)`` as int64 codes."""
    op, dp = attrs.op, attrs.datapath
    hidden = attrs.hidden
    n, steps, q_x, recurrent = recurrent_inputs(attrs, x, w_ih, w_hh, b_ih, b_hh)
    y = torch.zeros((n, steps, hidden), dtype=torch.int64)
    if n == 0:
        return y
    sigmoid = torch.tensor(sigmoid_table(), dtype=torch.int64)
    tanh = torch.tensor(tanh_table(), dtype=torch.int64)
    rnd, k = dp.rounding, attrs.cell_shift
    h = torch.full((n, hidden), attrs.h_zero_point, dtype=torch.int64)
    c = torch.zeros((n, hidden), dtype=torch.int64)
    out = attrs.output
    order = range(steps - 1, -1, -1) if attrs.reverse else range(steps)
    for t in order:
        q_h = recurrent(h - attrs.h_zero_point)
        p = torch.clamp(q_x[:, t] + q_h, _LO16, _HI16)
        i, f, g, o = (p[:, j * hidden : (j + 1) * hidden] for j in range(4))
        i, f, o = (table_fn(sigmoid, v, rnd) for v in (i, f, o))
        g = table_fn(tanh, g, rnd)
        c = torch.clamp(rounding_right_shift(f * c, 15, rnd) + rounding_right_shift(i * g, 30 - k, rnd), _LO16, _HI16)
        v = rounding_right_shift(c, k - 12, rnd) if k >= 12 else torch.clamp(c * (1 << (12 - k)), _LO16, _HI16)
        h = requantize_accumulator(o * table_fn(tanh, v, rnd), attrs.out_requant, dp, y_zero_point=out.zero_point,
                                   lo=out.lo, hi=out.hi, op=op)  # fmt: skip
        y[:, t] = h
    return y
