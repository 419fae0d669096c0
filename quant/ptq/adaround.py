"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"): each weight
rounds up or down as learned from calibration data, layer by layer, instead of to the nearest code.

For a layer with weight ``W``, per-element scale ``s`` and zero point ``z`` (its calibrated weight
quantizer's, unchanged), and ``V`` a float32 tensor of ``W``'s shape:

    h(V)        = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)          zeta = 1.1, gamma = -0.1
    W_soft      = (clamp(floor(W / s) + z + h(V), qmin, qmax) - z) s     (W / s: W times the float32 1/s)
    loss        = mean over outputs of the sum over output channels of (f(X_q W_soft) - f(X W))^2
                  + lambda sum(1 - |2 h(V) - 1|^beta)

``f`` is the layer (its bias and geometry); ``X_q`` the layer's inputs in the quantized model (earlier layers
with their chosen codes, through the layer's own input quantizer), ``X`` the float model's. ``V`` starts
where ``h(V)`` equals the fractional part of ``W / s`` (``W_soft = W`` inside the code range); Adam
minimizes the loss over random minibatches, the regularizer off for the first ``warmup`` fraction of the
iterations and ``beta`` annealed linearly from ``beta_start`` to ``beta_end`` over the rest. The result is
the hard choice ``h = [V >= 0]``: the codes ``clamp(floor(W/s) + z + h, qmin, qmax)``, each within one of
the nearest code, stored as the quantizer's code offsets (:mod:`quant.sim.code_offsets`).
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
    checked_batches,
    eval_mode,
    layer_output,
    output_error,
    per_element_qparams,
    quantized_input,
    weight_layers,
)
from quant.reference.rounding import round_to_integer
from quant.sim.attach import QuantHandle
from quant.sim.code_offsets import offsets_for_codes

__all__ = ["adaround"]

ZETA, GAMMA = 1.1, -0.1


def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _per_element(layer: Layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w, s, z)`` of the layer's weight, float32, each of the weight's shape."""
    w = layer.weight.to(torch.float32)
    s, z = layer.quantizer.effective_qparams()
    return (w, *per_element_qparams(w, s, z, layer.quantizer.spec))


def _minibatch(xs: torch.Tensor, ys: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, xs.shape[0], (min(size, xs.shape[0]),), generator=generator)
    return xs[rows], ys[rows]


def adaround(model: nn.Module, handle: QuantHandle, calibration_batches: Iterable[object], *,
             layers: Optional[Sequence[str]] = None, iterations: int = 1000, batch_size: int = 64, lr: float = 1e-2,
             reg_weight: float = 0.01, beta_start: float = 20.0, beta_end: float = 2.0, warmup: float = 0.2,
             seed: int = 0, progress: bool = True) -> PTQReport:  # fmt: skip
    """Choose every weight code of the handle's Linear/Conv layers (``layers``: those only) by AdaRound (module
    doc) on ``calibration_batches``; the codes go into the weight quantizers as code offsets.

    ``batch_size`` rows of the cached inputs per Adam step (a Linear's input rows; a convolution's samples),
    ``iterations`` steps per layer, all of it deterministic for ``seed``. The handle must be calibrated; the
    layers' weight quantizers keep their qparams. Returns the report: per layer the output error with nearest
    and with the chosen codes on the calibration inputs, and how many codes moved.
    """
    if iterations < 1:
        raise ValueError(f"adaround: iterations={iterations} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"adaround: batch_size={batch_size} must be >= 1")
    if not lr > 0:
        raise ValueError(f"adaround: lr={lr} must be > 0")
    if reg_weight < 0:
        raise ValueError(f"adaround: reg_weight={reg_weight} must be >= 0")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"adaround: warmup={warmup} must lie in [0, 1)")
    if not beta_start >= beta_end > 0:
        raise ValueError(f"adaround: beta_start={beta_start}, beta_end={beta_end}: need beta_start >= beta_end > 0")
    batches = checked_batches(calibration_batches, "adaround", model, handle)
    skipped: list[str] = []
    chosen = weight_layers(handle, "adaround", layers, skipped)
    for layer in chosen:
        if layer.quantizer.spec.is_binary or layer.quantizer.spec.rounding == "stochastic":
            raise ValueError(f"adaround: module {layer.name!r}'s weight spec {layer.quantizer.spec.describe()} has "
                             "no up/down neighbours to choose between")  # fmt: skip
    options = dict(iterations=iterations, batch_size=batch_size, lr=lr, reg_weight=reg_weight, beta_start=beta_start,
                   beta_end=beta_end, warmup=warmup, seed=seed)  # fmt: skip
    report = PTQReport("adaround", options=options, skipped=skipped)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with eval_mode(model):
        for layer in tqdm(chosen, desc="adaround", disable=not progress, leave=False):
            report.layers.append(_round_layer(model, handle, layer, batches, generator, iterations, batch_size, lr,
                                              reg_weight, beta_start, beta_end, warmup))  # fmt: skip
    report.seconds = time.perf_counter() - start
    return report


def _round_layer(model: nn.Module, handle: QuantHandle, layer: Layer, batches: Sequence[object],
                 generator: torch.Generator, iterations: int, batch_size: int, lr: float, reg_weight: float,
                 beta_start: float, beta_end: float, warmup: float) -> LayerResult:  # fmt: skip
    q = layer.quantizer
    q.clear_code_offsets()  # a second run starts from nearest, and the inputs below are this layer's own
    xs_q = [quantized_input(handle, layer, x) for x in capture(model, layer, batches, quantized=True, handle=handle)]
    xs_f = capture(model, layer, batches, quantized=False, handle=handle)
    w, s, z = _per_element(layer)
    targets = [layer_output(layer, x, w).detach() for x in xs_f]
    spec = q.spec
    inv = torch.reciprocal(s)
    scaled = w * inv
    floor = torch.floor(scaled)
    nearest = round_to_integer(scaled, spec.rounding, None)

    def weight_of(h: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(floor + z + h, spec.qmin, spec.qmax) - z) * s

    rtn_error = output_error(layer, xs_q, targets, weight_of(nearest - floor))
    rest = (scaled - floor).clamp(0.0, 1.0)
    v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0))
    opt = torch.optim.Adam([v], lr=lr)
    x_all, y_all = torch.cat(xs_q), torch.cat(targets)
    channels = -1 if isinstance(layer.module, nn.Linear) else 1  # the output channels' dimension
    warm = int(warmup * iterations)
    for it in range(iterations):
        x, y = _minibatch(x_all, y_all, batch_size, generator)
        out = layer_output(layer, x, weight_of(_rectified_sigmoid(v)))
        loss = ((out - y) ** 2).sum(dim=channels).mean()
        if it >= warm and reg_weight > 0:
            beta = beta_end + (beta_start - beta_end) * (1.0 - (it - warm) / max(1, iterations - warm))
            loss = loss + reg_weight * (1.0 - (2.0 * _rectified_sigmoid(v) - 1.0).abs().pow(beta)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        hard = (v.detach() >= 0).to(torch.float32)
        codes = torch.clamp(floor + z + hard, spec.qmin, spec.qmax)
        s_q, z_q = q.effective_qparams()
        q.set_code_offsets(offsets_for_codes(w, s_q, z_q, codes, spec))
        error = output_error(layer, xs_q, targets, (codes - z) * s)
        moved = int((codes != torch.clamp(nearest + z, spec.qmin, spec.qmax)).sum())
    return LayerResult(layer.name, rtn_error, error, moved, w.numel())
