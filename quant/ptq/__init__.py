"""Post-training algorithms that choose low-bit weight codes without retraining, on any model ``attach``
quantized: ``quant.ptq.<algorithm>(model, handle, calibration_batches, **options) -> PTQReport``.

Each works layer by layer on the inputs the calibrated, quantized model gives the layer, and leaves its
result in the layer's weight quantizer: code offsets (:mod:`quant.sim.code_offsets`), a bias shift or channel
factors (:mod:`quant.sim.rescaling`), never in the float parameters: ``handle.remove()`` restores the float model bit for bit, ``state_dict`` carries the choice,
and lowering and verification take the chosen codes unchanged.

==================  ======================================================================================
``adaround``        learned up/down rounding per weight (Nagel et al. 2020, :mod:`quant.ptq.adaround`)
``gptq``            second-order error compensation column by column (Frantar et al. 2022, :mod:`quant.ptq.gptq`)
``bias_correction`` the output mean per channel put back (Nagel et al. 2019, :mod:`quant.ptq.bias_correction`)
``equalize``        cross-layer equalization of ReLU-family chains (Nagel et al. 2019, :mod:`quant.ptq.equalize`)
``smooth``          activation outliers migrated into the weights (Xiao et al. 2023, :mod:`quant.ptq.smooth`)
==================  ======================================================================================

``equalize`` and ``smooth`` rescale channels between layers (quantizer state too, :mod:`quant.sim.rescaling`) and
calibrate the handle again: run them first; ``bias_correction`` last, after the codes are chosen.
"""

from __future__ import annotations

# the functions, not their modules, are the package's attributes (each module is named after its function)
from quant.ptq.adaround import adaround as adaround
from quant.ptq.bias_correction import bias_correction as bias_correction
from quant.ptq.calibration import LayerResult as LayerResult, PTQReport as PTQReport
from quant.ptq.equalize import equalize as equalize
from quant.ptq.gptq import gptq as gptq
from quant.ptq.smooth import smooth as smooth

__all__ = ["adaround", "gptq", "bias_correction", "equalize", "smooth", "PTQReport", "LayerResult"]
