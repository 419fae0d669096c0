"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models"): a few input channels of a Linear with outliers far beyond the rest make a per-tensor
activation scale coarse for all the others; moving part of their range into the weights evens them out.

For a pair (:mod:`quant.ptq.channel_pairs`: ReLU, pooling, means or nothing between) of a LayerNorm or Linear
producer and its Linear consumers, with ``X`` the consumers' input over the calibration batches (the float
model's) and ``W`` their weights,

    s_j = max |X[..., j]|^alpha / max |W[:, j]|^(1 - alpha)        (the max of W over every consumer)
    X[..., j] -> X[..., j] / s_j   (the producer's output channel: its gain or weight row and its bias)
    W[:, j]   -> W[:, j] s_j       (every consumer)

``alpha`` the migration strength (0.5 in the paper; larger moves more of the range into the weights); ``s_j = 1``
where either maximum is 0, and every factor is clamped to [1e-5, 1e5]. The factors are quantizer state (:mod:`quant.sim.rescaling`), the float parameters
stay as they are, and every quantizer is calibrated again on the calibration batches; the producer needs a
weight quantizer (a LayerNorm: its gain's, which the lowering needs anyway) to hold its factors. Run this
first, before the algorithms that choose codes.
"""

from __future__ import annotations

import time
from typing import Iterable

import torch
import torch.nn as nn
from tqdm import tqdm

from quant.ptq.calibration import WEIGHT_LAYERS, LayerResult, PTQReport, capture, checked_batches, eval_mode, relative_error
from quant.ptq.channel_pairs import apply_factors, check_pairs, find_pairs, input_ranges, recalibrate
from quant.sim.attach import QuantHandle

__all__ = ["smooth"]


def smooth(model: nn.Module, handle: QuantHandle, calibration_batches: Iterable[object], *, alpha: float = 0.5,
           progress: bool = True) -> PTQReport:  # fmt: skip
    """Smooth the inputs of every Linear whose input is a LayerNorm's or a Linear's output (module doc), then
    calibrate the handle again on ``calibration_batches``. The handle must be calibrated (the report compares each
    layer's relative output error before and after) and no layer of a pair may hold chosen codes yet.
    ``ValueError`` before any change for ``alpha`` outside [0, 1] or a model without such a pair."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smooth: alpha={alpha} must lie in [0, 1]")
    batches = checked_batches(calibration_batches, "smooth", model, handle)
    found, skipped = find_pairs(model, handle, "smooth", batches[0], producers=(nn.Linear, nn.LayerNorm))
    pairs = []
    for pair in found:
        if all(isinstance(c.layer.module, nn.Linear) for c in pair.consumers):
            pairs.append(pair)
        else:
            skipped.append(f"{pair.producer.name}: a consumer is a convolution (smoothing rescales Linear inputs)")
    layers = [layer for layer in check_pairs(pairs, skipped, handle, "smooth")
              if isinstance(layer.module, WEIGHT_LAYERS)]  # the errors of the Linear/Conv layers
    report = PTQReport("smooth", options=dict(alpha=alpha), skipped=skipped, error_label="relative output error",
                       changed_label="weights")  # fmt: skip
    start = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        before = {layer.name: relative_error(model, handle, layer, batches) for layer in layers}
        for pair in tqdm(pairs, desc="smooth", disable=not progress, leave=False):
            xs = capture(model, pair.consumers[0].layer, batches, quantized=False, handle=handle)
            x_max = torch.stack([x.detach().abs().reshape(-1, pair.channels).amax(dim=0) for x in xs]).amax(dim=0)
            w_max = input_ranges(pair)
            usable = (x_max > 0) & (w_max > 0)
            s = torch.where(usable, x_max.pow(alpha) / torch.where(usable, w_max, 1.0).pow(1.0 - alpha), 1.0)
            apply_factors(pair, s.clamp(1e-5, 1e5).to(torch.float32))
        recalibrate(model, handle, batches)
        for layer in layers:
            report.layers.append(LayerResult(layer.name, before[layer.name], relative_error(model, handle, layer, batches),
                                             0, layer.weight.numel()))  # fmt: skip
    report.options["pairs"] = [p.names for p in pairs]
    report.seconds = time.perf_counter() - start
    return report
