"""Mixed precision: what each layer costs, how sensitive it is to its weight width, and which width it gets.

=====================  ==================================================================================
``cost``               MACs, bit operations and packed weight bytes per layer (:mod:`quant.mixed.cost`)
``sensitivity``        per layer and candidate width: output SQNR and the HAWQ-v2 Hessian-trace measure
                       (:mod:`quant.mixed.sensitivity`)
``allocate_bits``      one width per layer minimising the summed sensitivity under a BOPs or size budget,
                       an exact 0/1 integer program (:mod:`quant.mixed.allocation`)
=====================  ==================================================================================
"""

from __future__ import annotations

# the functions, not their modules, are the package's attributes (each module is named after its concept)
from quant.mixed.allocation import Allocation as Allocation, allocate_bits as allocate_bits
from quant.mixed.cost import LayerCost as LayerCost, ModelCost as ModelCost, cost as cost
from quant.mixed.sensitivity import (
    LayerSensitivity as LayerSensitivity,
    Sensitivity as Sensitivity,
    sensitivity as sensitivity,
)

__all__ = ["cost", "LayerCost", "ModelCost", "sensitivity", "Sensitivity", "LayerSensitivity", "allocate_bits",
           "Allocation"]
