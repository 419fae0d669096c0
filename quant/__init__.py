"""Simulation of sub-8-bit quantization schemes on unmodified PyTorch models.

Public API only; each name lives in the module that owns its concept.
"""

from quant.datapath import Datapath
from quant.functional import dequantize, fake_quantize, quantize
from quant.requant import requant_params
from quant.spec import QuantSpec

__all__ = ["QuantSpec", "quantize", "dequantize", "fake_quantize", "Datapath", "requant_params"]
