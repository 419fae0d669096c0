"""Simulation of sub-8-bit quantization schemes on unmodified PyTorch models.

Public API only; each name lives in the module that owns its concept and is imported on
first use, so ``import quant.contract`` (what ``kernels`` needs) does not load the
simulation. The one import rule between the parts is in ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quant.contract.datapath import Datapath as Datapath
    from quant.contract.multiplier import requant_params as requant_params
    from quant.contract.spec import QuantSpec as QuantSpec
    from quant.sim.attach import QuantHandle as QuantHandle, attach as attach
    from quant.sim.bn_fold import fold_bn as fold_bn
    from quant.sim.functional import dequantize as dequantize, fake_quantize as fake_quantize, quantize as quantize
    from quant.sim.metrics import LayerError as LayerError, collect_layer_errors as collect_layer_errors, max_abs_error as max_abs_error, mean_abs_error as mean_abs_error, sqnr_db as sqnr_db
    from quant.sim.observers import make_observer as make_observer
    from quant.sim.qparams import qparams_from_range as qparams_from_range
    from quant.sim.quantizer import Quantizer as Quantizer
    from quant.sim.recipe import QuantizerConfig as QuantizerConfig, Recipe as Recipe, Rule as Rule
    from quant.ir.program import IntegerProgram as IntegerProgram
    from quant.lowering.lowerer import lower as lower
    from quant.verification.verifier import VerificationReport as VerificationReport, verify as verify
    from quant.custom.registry import elementwise as elementwise, register_op as register_op, unregister_op as unregister_op
    from quant.export.onnx_export import export_onnx as export_onnx
    from quant.export.onnx_import import import_onnx as import_onnx
    from quant.contract.accumulator import AccumulatorTarget as AccumulatorTarget
    from quant.sim.accumulator import AccumulatorReport as AccumulatorReport, LayerAccumulatorBound as LayerAccumulatorBound, accumulator_bound as accumulator_bound
    from quant.mixed.allocation import Allocation as Allocation, allocate_bits as allocate_bits
    from quant.mixed.cost import LayerCost as LayerCost, ModelCost as ModelCost, cost as cost
    from quant.mixed.sensitivity import LayerSensitivity as LayerSensitivity, Sensitivity as Sensitivity, sensitivity as sensitivity

#: Public name -> the module that defines it.
_HOMES: dict[str, str] = {
    "QuantSpec": "quant.contract.spec",
    "Datapath": "quant.contract.datapath",
    "requant_params": "quant.contract.multiplier",
    "quantize": "quant.sim.functional",
    "dequantize": "quant.sim.functional",
    "fake_quantize": "quant.sim.functional",
    "attach": "quant.sim.attach",
    "QuantHandle": "quant.sim.attach",
    "Recipe": "quant.sim.recipe",
    "Rule": "quant.sim.recipe",
    "QuantizerConfig": "quant.sim.recipe",
    "fold_bn": "quant.sim.bn_fold",
    "sqnr_db": "quant.sim.metrics",
    "max_abs_error": "quant.sim.metrics",
    "mean_abs_error": "quant.sim.metrics",
    "collect_layer_errors": "quant.sim.metrics",
    "LayerError": "quant.sim.metrics",
    "Quantizer": "quant.sim.quantizer",
    "make_observer": "quant.sim.observers",
    "qparams_from_range": "quant.sim.qparams",
    "lower": "quant.lowering.lowerer",
    "IntegerProgram": "quant.ir.program",
    "verify": "quant.verification.verifier",
    "VerificationReport": "quant.verification.verifier",
    "register_op": "quant.custom.registry",
    "elementwise": "quant.custom.registry",
    "unregister_op": "quant.custom.registry",
    "export_onnx": "quant.export.onnx_export",
    "import_onnx": "quant.export.onnx_import",
    "AccumulatorTarget": "quant.contract.accumulator",
    "accumulator_bound": "quant.sim.accumulator",
    "AccumulatorReport": "quant.sim.accumulator",
    "LayerAccumulatorBound": "quant.sim.accumulator",
    "cost": "quant.mixed.cost",
    "ModelCost": "quant.mixed.cost",
    "LayerCost": "quant.mixed.cost",
    "sensitivity": "quant.mixed.sensitivity",
    "Sensitivity": "quant.mixed.sensitivity",
    "LayerSensitivity": "quant.mixed.sensitivity",
    "allocate_bits": "quant.mixed.allocation",
    "Allocation": "quant.mixed.allocation",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'quant' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
