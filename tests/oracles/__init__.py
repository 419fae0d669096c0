"""Independent formulations of docs/arithmetic.md (and docs/peers.md), used as test oracles.

Written from the documents with Python ints, ``fractions.Fraction``, ``math.frexp`` and
NumPy float32/float64 scalars, one element at a time: deliberately nothing shared with
``quant.reference`` or ``kernels`` (no vectorization), so a backend agreeing with them is
evidence, not tautology. One concept per module:

- ``rounding``: rounding of rationals and floats (section 2);
- ``accumulation``: the accumulator, one add at a time (section 4);
- ``requant``: multiplier conversion and requantization of one accumulator (section 5);
- ``peers``: peer arithmetic re-derived (docs/peers.md);
- ``ops``: whole ops, element by element, built on the scalar modules;
- ``exact``: the exact comparison the reference tests report failures with.
"""
