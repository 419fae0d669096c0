"""The integer datapath in C: bit-exact kernels of ``docs/arithmetic.md`` behind NumPy wrappers.

``kernels/c`` is a dependency-free C99 library (no allocation, no globals, every datapath knob
a runtime field); ``kernels._qk`` is its CPython binding and ``kernels.api`` the validated
Python wrappers exported here. Their keyword names match ``quant.reference``.
"""

from kernels.export import ExportReport, export_c
from kernels.api import (
    ISAS,
    PackedWeights,
    add,
    avg_pool2d,
    conv2d,
    isa_available,
    linear,
    lut,
    max_pool2d,
    mul,
    pack,
    pack_weights,
    requantize,
    rounding_right_shift,
    saturating_rounding_doubling_high_mul,
    softmax,
    layernorm,
    lstm,
    gru,
    unpack,
)

__all__ = [
    "ExportReport",
    "ISAS",
    "PackedWeights",
    "add",
    "avg_pool2d",
    "conv2d",
    "export_c",
    "isa_available",
    "linear",
    "lut",
    "max_pool2d",
    "mul",
    "pack",
    "pack_weights",
    "requantize",
    "rounding_right_shift",
    "saturating_rounding_doubling_high_mul",
    "softmax",
    "layernorm",
    "lstm",
    "gru",
    "unpack",
]
