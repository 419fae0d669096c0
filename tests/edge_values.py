"""Edge values for the integer datapath tests (docs/arithmetic.md), used as hypothesis ``@example``s.

gemmlowp-style: +-2 around every power of two up to 2^31, the int32 limits, the code limits
of every width, the accumulator limits for A in {16, 24, 32}, the shift bounds and exact
rounding ties. Everything here is derived from definitions, nothing is a golden output.
"""

from __future__ import annotations

INT32_MIN: int = -(1 << 31)
INT32_MAX: int = (1 << 31) - 1

#: Accumulator widths whose limits are edge values.
ACC_WIDTHS: tuple[int, ...] = (16, 24, 32)

#: Exponents ``e`` of fixed-point multipliers (docs §5.1) and pow2 right shifts ``k = -e`` (§5.4).
SHIFT_MIN: int = -31
SHIFT_MAX: int = 30


def around_powers_of_two(max_exp: int = 31, radius: int = 2) -> list[int]:
    """``+-(2^e + d)`` for ``0 <= e <= max_exp``, ``|d| <= radius``, clipped to int32, plus 0."""
    out = {0}
    for e in range(max_exp + 1):
        for d in range(-radius, radius + 1):
            for sign in (1, -1):
                v = sign * ((1 << e) + d)
                if INT32_MIN <= v <= INT32_MAX:
                    out.add(v)
    return sorted(out)


def code_limits(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of ``bits``-bit codes (binary reported as (-1, 1))."""
    if signed:
        return (-1, 1) if bits == 1 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return 0, (1 << bits) - 1


def acc_limits(acc_bits: int) -> list[int]:
    """The A-bit accumulator limits and their neighbours: ``-2^(A-1) + {-1, 0, 1}``, ``2^(A-1) - 1 + {-1, 0, 1}``."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    return [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1]


def exact_ties(k: int, count: int = 3) -> list[int]:
    """Integers ``v`` with ``v / 2^k`` exactly halfway between two integers (both signs), ``k >= 1``."""
    return [s * ((2 * m + 1) << (k - 1)) for m in range(count) for s in (1, -1)]


#: Int32 edge values: around powers of two, the limits, and the accumulator limits inside int32.
EDGE_INT32: list[int] = sorted(
    set(around_powers_of_two())
    | {INT32_MIN, INT32_MIN + 1, INT32_MAX - 1, INT32_MAX}
    | {v for a in ACC_WIDTHS for v in acc_limits(a) if INT32_MIN <= v <= INT32_MAX}
)

#: Every fixed-point exponent and pow2 shift bound.
EDGE_SHIFTS: list[int] = [SHIFT_MIN, SHIFT_MIN + 1, -1, 0, 1, SHIFT_MAX - 1, SHIFT_MAX]

#: Real multipliers at the edges of fixed-point requantization: powers of two at the exponent
#: bounds, values that round up to 2^N (renormalization), and the flush threshold.
EDGE_MULTIPLIERS: list[float] = [
    2.0**-32,  # e = -31: smallest kept
    2.0**-33,  # e = -32: flushed
    2.0**-32 * (1 - 2.0**-40),  # rounds up to 2^-32 (renormalizes into e = -31)
    2.0**29,  # e = 30: largest allowed exponent
    2.0**30 * (1 - 2.0**-45),  # rounds up to 2^30 -> e = 31: refused
    1.0 - 2.0**-40,  # rounds up to 1.0
    0.5,
    0.75,
    1.0,
    1.5,
    0.2621,
]
