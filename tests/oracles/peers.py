"""Peer arithmetic re-derived from docs/peers.md with Python ints and ``math.frexp``.

Nothing shared with ``quant.reference`` or ``kernels``.
"""

from __future__ import annotations

import math


def tflite_quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (docs/peers.md §3.2): frexp, std::round(q * 2^31), renormalize, flush."""
    if m == 0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = math.floor(q * 2.0**31 + 0.5)  # std::round of a positive double; exact below 2^52
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift
