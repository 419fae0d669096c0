"""The model zoo of the integer-datapath tests, lowered per preset: what the ONNX agreement table and its tests use.

``zoo_models()`` maps each name to a constructor and ``make_input(batch)`` (the small models of
:mod:`experiments.models.small` and the digits CNN, with digits-like inputs); ``zoo_program(name, preset)``
folds BN, attaches the preset's natural recipe, calibrates on three seeded batches of 8 and lowers.
"""

from __future__ import annotations

from typing import Any, Callable

from quant.ir.program import IntegerProgram

__all__ = ["zoo_models", "zoo_program"]


def zoo_models() -> dict[str, tuple[Callable[[], Any], Callable[[int], Any]]]:
    """The model zoo by name: a constructor and ``make_input(batch)`` (experiments/models; digits-like inputs for
    the digits CNN)."""
    import torch

    from experiments.models.digits_cnn import DigitsCNN
    from experiments.models.small import SMALL_MODELS

    models: dict[str, tuple[Callable[[], Any], Callable[[int], Any]]] = {
        name: (cls, getattr(cls, "example_input")) for name, cls in SMALL_MODELS.items()}  # fmt: skip
    models["digits"] = (DigitsCNN, lambda n: torch.rand(n, 1, 8, 8) * 16)
    return models


def zoo_program(name: str, preset: str, *, seed: int = 0) -> tuple[IntegerProgram, Callable[[int], Any]]:
    """The zoo model ``name`` lowered for ``preset``: BN folded, the preset's natural recipe
    (:func:`quant.sim.recipe.datapath_recipe`) calibrated on three batches of 8 seeded random inputs, as
    ``tests/quant/lowering`` does; returns the program and the model's ``make_input(batch)``."""
    import torch

    import quant
    from quant.contract.datapath import PRESETS
    from quant.sim.recipe import datapath_recipe

    cls, make_input = zoo_models()[name]
    dp = PRESETS[preset]
    torch.manual_seed(seed)
    batches = [make_input(8) for _ in range(3)]
    model = quant.fold_bn(cls().eval())
    handle = quant.attach(model, datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        for x in batches:
            model(x)
    return quant.lower(model, handle, batches[0], datapath=dp), make_input
