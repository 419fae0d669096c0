"""The accumulator (docs/arithmetic.md section 4), one add at a time, with Python ints.

Nothing shared with ``quant.reference`` or ``kernels``.
"""

from __future__ import annotations

from typing import Sequence


def accumulate_scalar(bias: int, products: Sequence[int], acc_bits: int, overflow: str) -> int:
    """The accumulator of §4, one add at a time in the canonical order. Raises OverflowError for 'error'."""
    lo, hi = -(2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1
    if overflow == "wrap":
        s = bias + sum(products)
        return int((s - lo) % (1 << acc_bits) + lo)
    s = bias
    for step in [0, *products]:
        s += step
        c = max(lo, min(hi, s))
        if c != s and overflow == "error":
            raise OverflowError("accumulator overflow")
        s = c
    return s
