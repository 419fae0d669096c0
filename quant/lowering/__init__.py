"""Lowering: a calibrated model (``attach`` + ``calibrate()``) becomes an :class:`quant.ir.IntegerProgram`."""

from quant.lowering.lowerer import LoweringError, lower

__all__ = ["LoweringError", "lower"]
