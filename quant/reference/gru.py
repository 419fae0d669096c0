"""One integer GRU layer over a sequence (docs/arithmetic.md section 6.7), in int64.

The input products of every step are accumulated at once, the recurrent ones step by step; both parts are
requantized to Q3.12 int16, the gates read the contract's tables, and the new state mixes ``n`` with the
previous state brought to Q0.15 before it is requantized to the output codes, the next step's operand.
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.gru import GruAttrs
from quant.contract.lstm import sigmoid_table, tanh_table
from quant.reference.integer import rounding_right_shift
from quant.reference.lstm import recurrent_inputs, table_fn
from quant.reference.requantize import requantize_accumulator

__all__ = ["run_gru"]

_LO16, _HI16 = -(1 << 15), (1 << 15) - 1


def run_gru(
    attrs: GruAttrs,
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: Optional[torch.Tensor],
    b_hh: Optional[torch.Tensor],
) -> torch.Tensor:
    """gru of ``attrs`` on codes ``x (N, T, F)`` with weight codes ``w_ih (3H, F)``, ``w_hh (3H, H)`` and int32 biases
    (either may be None): the hidden states ``(N, T, H)`` as int64 codes."""
    op, dp = attrs.op, attrs.datapath
    hidden = attrs.hidden
    n, steps, q_x, recurrent = recurrent_inputs(attrs, x, w_ih, w_hh, b_ih, b_hh)
    y = torch.zeros((n, steps, hidden), dtype=torch.int64)
    if n == 0:
        return y
    sigmoid = torch.tensor(sigmoid_table(), dtype=torch.int64)
    tanh = torch.tensor(tanh_table(), dtype=torch.int64)
    rnd, out = dp.rounding, attrs.output
    h = torch.full((n, hidden), attrs.h_zero_point, dtype=torch.int64)
    for t in range(steps - 1, -1, -1) if attrs.reverse else range(steps):
        hd = h - attrs.h_zero_point
        q_h = recurrent(hd)
        qa = q_x[:, t]
        r = table_fn(sigmoid, torch.clamp(qa[:, :hidden] + q_h[:, :hidden], _LO16, _HI16), rnd)
        z = table_fn(sigmoid, torch.clamp(qa[:, hidden : 2 * hidden] + q_h[:, hidden : 2 * hidden], _LO16, _HI16), rnd)
        inner = qa[:, 2 * hidden :] + rounding_right_shift(r * q_h[:, 2 * hidden :], 15, rnd)
        g = table_fn(tanh, torch.clamp(inner, _LO16, _HI16), rnd)
        hq = requantize_accumulator(hd, attrs.hq_requant, dp, y_zero_point=0, lo=_LO16, hi=_HI16, op=op)
        h = requantize_accumulator(((1 << 15) - z) * g + z * hq, attrs.out_requant, dp, y_zero_point=out.zero_point,
                                   lo=out.lo, hi=out.hi, op=op)  # fmt: skip
        y[:, t] = h
    return y
