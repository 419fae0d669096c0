"""The simulation: fake quantization on unmodified models (specs in, quantizers and hooks out).

Quantizer numerics (``functional``, ``qparams``, ``observers``, ``learned``, ``quantizer``),
recipes, the simulation modes and their wiring (``modes``, ``fast``, ``attach``), BN folding
and error metrics. The public names are re-exported by :mod:`quant`.
"""
