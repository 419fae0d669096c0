"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", section 4.1): rescale the channels between two layers so that each channel's weight range is the
same in both, which a per-tensor weight scale (and the activation between them) quantizes much better when the
channels' ranges differ widely, as in depthwise-separable networks.

For a pair (:mod:`quant.ptq.channel_pairs`, ``positive`` ops between: ReLU, pooling, a flatten) with producer
rows ``W_p[c]`` and consumer columns ``W_c[:, c]`` (over every consumer),

    r1_c = max |W_p[c, ...]|,   r2_c = max |W_c[:, c, ...]|,   s_c = sqrt(r1_c / r2_c)
    W_p[c] -> W_p[c] / s_c,   b_p[c] -> b_p[c] / s_c,   W_c[:, c] -> W_c[:, c] s_c

after which both ranges are ``sqrt(r1_c r2_c)`` (``s_c = 1`` where either range is 0). Pairs that share a
layer (a chain of three) are equalized in turn, ``iterations`` sweeps at most, until no factor of a sweep
differs from 1 by more than ``tolerance`` in log. The factors are quantizer state (:mod:`quant.sim.rescaling`):
the float parameters stay as they are and the rescaled float model computes the same function up to float
rounding. Every quantizer is then calibrated again on the calibration batches (the rescaled ranges): run this
first, before AdaRound, GPTQ and bias correction.
"""

from __future__ import annotations

import time
from typing import Iterable

import torch
import torch.nn as nn
from tqdm import tqdm

from quant.ptq.calibration import WEIGHT_LAYERS, LayerResult, PTQReport, checked_batches, eval_mode, relative_error
from quant.ptq.channel_pairs import ChannelPair, apply_factors, check_pairs, find_pairs, input_ranges, recalibrate
from quant.sim.attach import QuantHandle

__all__ = ["equalize"]


def _row_ranges(pair: ChannelPair) -> torch.Tensor:
    w = pair.producer.weight.abs()
    return w.reshape(w.shape[0], -1).amax(dim=1)


def equalize(model: nn.Module, handle: QuantHandle, calibration_batches: Iterable[object], *, iterations: int = 20,
             tolerance: float = 1e-3, progress: bool = True) -> PTQReport:  # fmt: skip
    """Equalize every pair of Linear/Conv layers of the handle that a ReLU-family chain joins (module doc), then
    calibrate the handle again on ``calibration_batches``. The handle must be calibrated (the report compares
    each layer's relative output error before and after) and no layer of a pair may hold chosen codes yet.
    ``ValueError`` before any change when the model has no such pair (naming why each candidate is none)."""
    if iterations < 1:
        raise ValueError(f"equalize: iterations={iterations} must be >= 1")
    if not tolerance >= 0:
        raise ValueError(f"equalize: tolerance={tolerance} must be >= 0")
    batches = checked_batches(calibration_batches, "equalize", model, handle)
    pairs, skipped = find_pairs(model, handle, "equalize", batches[0], producers=(nn.Linear, nn.Conv1d, nn.Conv2d))
    layers = [layer for layer in check_pairs(pairs, skipped, handle, "equalize")
              if isinstance(layer.module, WEIGHT_LAYERS)]  # the errors of the Linear/Conv layers
    report = PTQReport("equalize", options=dict(iterations=iterations, tolerance=tolerance), skipped=skipped,
                       error_label="relative output error", changed_label="weights")  # fmt: skip
    start = time.perf_counter()
    with eval_mode(model):
        before = {layer.name: relative_error(model, handle, layer, batches) for layer in layers}
        sweeps = 0
        for _ in tqdm(range(iterations), desc="equalize", disable=not progress, leave=False):
            sweeps += 1
            worst = 0.0
            for pair in pairs:
                r1, r2 = _row_ranges(pair), input_ranges(pair)
                s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / torch.where(r2 > 0, r2, 1.0)), 1.0)
                apply_factors(pair, s)
                worst = max(worst, float(s.log().abs().max()))
            if worst <= tolerance:
                break
        recalibrate(model, handle, batches)
        for layer in layers:
            report.layers.append(LayerResult(layer.name, before[layer.name], relative_error(model, handle, layer, batches),
                                             0, layer.weight.numel()))  # fmt: skip
    report.options["sweeps"] = sweeps
    report.options["pairs"] = [p.names for p in pairs]
    report.seconds = time.perf_counter() - start
    return report
