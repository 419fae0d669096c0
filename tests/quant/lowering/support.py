"""What the lowering tests share: a model attached with the datapath's natural recipe, calibrated and lowered."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

import quant
from quant.contract.datapath import Datapath
from quant.sim.recipe import datapath_recipe


def lowered(model: nn.Module, preset: str, x: torch.Tensor, recipe: Optional[Any] = None
            ) -> tuple[quant.QuantHandle, quant.IntegerProgram]:  # fmt: skip
    """``model`` (eval mode) attached with ``recipe`` (default: :func:`datapath_recipe` of ``preset``), calibrated on
    ``x``, and lowered on ``preset`` from its first sample."""
    dp = Datapath.preset(preset)
    handle = quant.attach(model.eval(), datapath_recipe(dp) if recipe is None else recipe)
    with torch.no_grad(), handle.calibrate():
        model(x)
    return handle, quant.lower(model, handle, x[:1], datapath=dp)
