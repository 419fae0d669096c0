"""The vectorized int64 PyTorch reference of every integer op of ``docs/arithmetic.md``.

Every op takes integer torch tensors of codes and returns **int64** tensors; keyword
names match the C wrappers in ``kernels`` so one test can call either backend. The
section of the contract each module implements is named in its docstring.
"""

from quant.reference.accumulate import accumulate
from quant.reference.add import add
from quant.reference.conv2d import conv2d
from quant.reference.elementwise import clamp, flatten, pad, reshape
from quant.reference.integer import (
    rounding_divide,
    rounding_right_shift,
    saturate,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
    wrap,
)
from quant.reference.layernorm import layernorm
from quant.reference.linear import linear
from quant.reference.lut import lut
from quant.reference.mul import mul
from quant.reference.softmax import softmax
from quant.reference.pool import avg_pool2d, max_pool2d
from quant.reference.quantize import dequantize, quantize
from quant.reference.requantize import (
    multiply_by_quantized_multiplier,
    requantize,
    requantize_accumulator,
    shift_by_pow2,
)

__all__ = [
    "accumulate",
    "add",
    "avg_pool2d",
    "clamp",
    "conv2d",
    "dequantize",
    "flatten",
    "layernorm",
    "linear",
    "lut",
    "max_pool2d",
    "mul",
    "multiply_by_quantized_multiplier",
    "pad",
    "quantize",
    "requantize",
    "requantize_accumulator",
    "reshape",
    "rounding_divide",
    "rounding_right_shift",
    "saturate",
    "saturating_left_shift",
    "saturating_rounding_doubling_high_mul",
    "shift_by_pow2",
    "softmax",
    "wrap",
]
