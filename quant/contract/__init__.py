"""The arithmetic contract's Python half (docs/arithmetic.md): what every backend agrees on.

``QuantSpec`` (one quantizer), ``Datapath`` and its presets (the integer hardware), the
rounding modes, code ranges and sizes, the integer form of multipliers, the checks of scalar
arguments and the validated attribute record of every op. It imports nothing else of
``quant`` and no tensor library, so ``kernels`` can depend on it alone.
"""

from quant.contract.codes import PACKED_BITS, code_range, packed_row_bytes, window_output_size
from quant.contract.datapath import PRESETS, Datapath
from quant.contract.multiplier import (
    AddParams,
    FixedPointAdd,
    FixedPointRequant,
    FloatAdd,
    FloatRequant,
    Pow2Add,
    Pow2Requant,
    RequantParams,
    add_params,
    quantize_multiplier,
    requant_params,
)
from quant.contract.rounding import INTEGER_ROUNDING_MODES, ROUNDING_MODES, round_fraction
from quant.contract.spec import QuantSpec

__all__ = [
    "AddParams",
    "Datapath",
    "FixedPointAdd",
    "FixedPointRequant",
    "FloatAdd",
    "FloatRequant",
    "INTEGER_ROUNDING_MODES",
    "PACKED_BITS",
    "PRESETS",
    "Pow2Add",
    "Pow2Requant",
    "QuantSpec",
    "ROUNDING_MODES",
    "RequantParams",
    "add_params",
    "code_range",
    "packed_row_bytes",
    "quantize_multiplier",
    "requant_params",
    "round_fraction",
    "window_output_size",
]
