"""Post-training algorithms that choose low-bit weight codes without retraining, on any model ``attach``
quantized: ``quant.ptq.<algorithm>(model, handle, calibration_batches, **options) -> PTQReport``.

Each works layer by layer on the inputs the calibrated, quantized model gives the layer, and leaves its
result in the layer's weight quantizer as code offsets (:mod:`quant.sim.code_offsets`), never in the float
parameters: ``handle.remove()`` restores the float model bit for bit, ``state_dict`` carries the choice,
and lowering and verification take the chosen codes unchanged.

=================  =======================================================================================
``adaround``       learned up/down rounding per weight (Nagel et al. 2020, :mod:`quant.ptq.adaround`)
``gptq``           second-order error compensation column by column (Frantar et al. 2022, :mod:`quant.ptq.gptq`)
=================  =======================================================================================
"""

from __future__ import annotations

# the functions, not their modules, are the package's attributes (each module is named after its function)
from quant.ptq.adaround import adaround as adaround
from quant.ptq.calibration import LayerResult as LayerResult, PTQReport as PTQReport
from quant.ptq.gptq import gptq as gptq

__all__ = ["adaround", "gptq", "PTQReport", "LayerResult"]
