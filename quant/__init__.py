"""Simulation of sub-8-bit quantization schemes on unmodified PyTorch models.

Public API only; each name lives in the module that owns its concept.
"""

from quant.bn_fold import fold_bn
from quant.datapath import Datapath
from quant.functional import dequantize, fake_quantize, quantize
from quant.hooks import QuantHandle, attach
from quant.observers import make_observer
from quant.qparams import qparams_from_range
from quant.quantizer import Quantizer
from quant.metrics import LayerError, collect_layer_errors, max_abs_error, mean_abs_error, sqnr_db
from quant.recipe import QuantizerConfig, Recipe, Rule
from quant.requant import requant_params
from quant.spec import QuantSpec

__all__ = [
    "QuantSpec", "quantize", "dequantize", "fake_quantize", "Datapath", "requant_params",
    "attach", "QuantHandle", "Recipe", "Rule", "QuantizerConfig", "fold_bn",
    "sqnr_db", "max_abs_error", "mean_abs_error", "collect_layer_errors", "LayerError",
    "Quantizer", "make_observer", "qparams_from_range",
]
