"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", section 4.2, its empirical form): quantization shifts the mean of a layer's output, and a constant
per output channel takes the shift back.

For each Linear/Conv layer in the model's order, over the calibration inputs,

    shift_c = E[ f(X, W) ]_c - E[ f(Q_in(X_q), Q(W)) ]_c        (E over every output position of channel c)

``f`` the layer with its float bias; ``X`` its inputs in the float model, ``X_q`` in the quantized model with the
earlier layers already corrected (so a layer corrects what reaches it too), ``Q(W)`` its weight codes dequantized
(chosen codes of AdaRound or GPTQ included: run this after them). The shift becomes the weight quantizer's bias
shift (:mod:`quant.sim.rescaling`): the quantized layer computes with ``b + shift``, the float parameters stay as
they are. On the calibration data the corrected output has the float output's mean in every channel, so its mean
squared error against it is at most the uncorrected one (a constant per channel removes the mean of the error
and nothing else). The correction replaces an earlier one: running it twice gives the same shifts.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from quant.ptq.calibration import (
    Layer,
    LayerResult,
    PTQReport,
    capture,
    channel_axes,
    channel_view,
    checked_batches,
    dequantized_weight,
    eval_mode,
    layer_output,
    quantized_layer_output,
    weight_layers,
)
from quant.sim.attach import QuantHandle
from quant.sim.rescaling import bias_shape

__all__ = ["bias_correction"]


def bias_correction(model: nn.Module, handle: QuantHandle, calibration_batches: Iterable[object], *,
                    layers: Optional[Sequence[str]] = None, progress: bool = True) -> PTQReport:  # fmt: skip
    """Correct the output mean of every Linear/Conv layer of the handle (``layers``: those only) on
    ``calibration_batches`` (module doc); the shifts go into the weight quantizers. The handle must be
    calibrated. Returns the report: per layer the output's mean squared error against the float layer's
    output before and after, and the number of channels corrected (as ``changed_codes`` / ``codes``)."""
    batches = checked_batches(calibration_batches, "bias_correction", model, handle)
    skipped: list[str] = []
    chosen = weight_layers(handle, "bias_correction", layers, skipped)
    report = PTQReport("bias_correction", skipped=skipped, changed_label="channels shifted")
    start = time.perf_counter()
    with eval_mode(model):
        for layer in tqdm(chosen, desc="bias_correction", disable=not progress, leave=False):
            report.layers.append(_correct(model, handle, layer, batches))
    report.seconds = time.perf_counter() - start
    return report


@torch.no_grad()
def _correct(model: nn.Module, handle: QuantHandle, layer: Layer, batches: Sequence[object]) -> LayerResult:
    q = layer.quantizer
    xs_q = capture(model, layer, batches, quantized=True, handle=handle)
    xs_f = capture(model, layer, batches, quantized=False, handle=handle)
    old = q.bias_shift.clone()
    w, w_q = layer.weight, dequantized_weight(layer)
    ys_q = [quantized_layer_output(handle, layer, x, w_q, shifted=False).to(torch.float64) for x in xs_q]
    ys_f = [layer_output(layer, x, w).to(torch.float64) for x in xs_f]
    total = torch.zeros(bias_shape(layer.module), dtype=torch.float64)
    count = 0
    for y_q, y_f in zip(ys_q, ys_f):
        axes = channel_axes(layer, y_f)
        total += (y_f - y_q).sum(dim=axes)
        count += y_f.numel() // total.numel()
    shift = (total / max(count, 1)).to(torch.float32)

    def error(s: torch.Tensor) -> float:
        num, n = 0.0, 0
        for y_q, y_f in zip(ys_q, ys_f):
            d = y_q + channel_view(layer, s.to(torch.float64), y_q.dim()) - y_f
            num += float((d * d).sum())
            n += d.numel()
        return num / max(n, 1)

    before = error(old if old.numel() else torch.zeros_like(shift))
    q.set_bias_shift(shift, layer.module)
    return LayerResult(layer.name, before, error(shift), int((shift != 0).sum()), shift.numel())

