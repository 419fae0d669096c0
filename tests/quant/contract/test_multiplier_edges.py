"""The largest fixed-point multipliers: one that rounds up to 2^30 at N bits is refused with the largest one
named; the largest itself is accepted."""

from __future__ import annotations

import pytest

from quant.contract.multiplier import quantize_multiplier


@pytest.mark.parametrize("n_bits", [8, 15, 31])
def test_the_largest_multiplier_and_just_above(n_bits: int) -> None:
    largest = (2**n_bits - 1) * 2.0 ** (30 - n_bits)
    assert quantize_multiplier(largest, n_bits) == (2**n_bits - 1, 30)
    just_below_2_30 = 2.0**30 * (1 - 2.0**-45)
    with pytest.raises(ValueError, match=rf"rounds to 2\^30 or more .*the largest is {largest!r}"):
        quantize_multiplier(just_below_2_30, n_bits)
