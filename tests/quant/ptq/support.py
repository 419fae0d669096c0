"""What the post-training algorithm tests share: a briefly trained digits CNN (batch norms folded) and a
calibrated handle on a copy of it."""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import torch
import torch.nn as nn

import quant
from experiments.data.digits import load_digits
from experiments.models.registry import build_model
from experiments.training import train
from quant import QuantSpec
from quant.ir.program import IntegerProgram, PackedTensor
from quant.reference.packing import unpack

ACT8 = QuantSpec(bits=8, signed=False, symmetric=False)


def weight_spec(bits: int) -> QuantSpec:
    """Per-output-channel symmetric signed weights."""
    return QuantSpec(bits=bits, signed=True, symmetric=True, granularity="channel", axis=0)


@functools.lru_cache(maxsize=1)
def digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(float model, calibration images, test images, test labels)``: the zoo's digits CNN trained for 8
    epochs, batch norms folded (never modified by a test: take a deepcopy)."""
    torch.manual_seed(0)
    data = load_digits()
    model = build_model("cnn", (1, 8, 8), 10, 16)
    train(model, data.x_train, data.y_train, epochs=8, progress=False)
    model = quant.fold_bn(model.eval())
    return model, data.x_train[:512], data.x_test, data.y_test


def calibrated(model: nn.Module, x: torch.Tensor, bits: int, *, activations: bool = True) -> quant.QuantHandle:
    """``model`` attached with ``bits``-bit per-channel weights (and uint8 activations) and calibrated on ``x``."""
    rule = {"weight": weight_spec(bits), "input": ACT8} if activations else {"weight": weight_spec(bits)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": rule})
    with torch.no_grad(), handle.calibrate():
        model(x)
    return handle


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fresh_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def program_weight_codes(program: IntegerProgram) -> dict[str, np.ndarray]:
    """Every node's weight codes as int64 arrays (packed weights unpacked), by node name."""
    out: dict[str, np.ndarray] = {}
    for node in program.nodes:
        w = node.params.get("weight")
        if isinstance(w, PackedTensor):
            out[node.name] = unpack(torch.from_numpy(w.data), w.bits, w.shape, w.signed).numpy().astype(np.int64)
        elif w is not None:
            out[node.name] = np.asarray(w).astype(np.int64)
    return out
