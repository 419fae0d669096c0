"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): each layer's weight codes chosen column by column, every column's rounding error
compensated on the columns not yet quantized through the inverse Hessian of the layer's inputs.

The qparams are the calibrated weight quantizer's, unchanged ("static groups"): GPTQ only chooses codes.
For a layer with weight ``W`` viewed as ``(out, K)`` (a Linear's ``(out, in)``; a convolution's
``(out, in * kh * kw)``, the column order of ``F.unfold``) and per-element scale ``s`` and zero point ``z``
(of ``W``'s shape, whatever the granularity):

    X      = the layer's input rows, (n, K): its inputs in the quantized model (earlier layers with the codes
             GPTQ chose for them, through the layer's own input quantizer), a Linear's reshaped to (-1, in),
             a convolution's im2col patches (N * output positions rows; a Conv1d as a (1, k) Conv2d)
    H      = 2 X^T X / n                                         (float64, accumulated over the batches)
    H_jj   = 1 where H_jj = 0                                     (dead inputs: those codes stay nearest)
    H     += damp * mean(diag(H)) * I
    U      = upper Cholesky factor of H^-1 (U^T U = H^-1)        (float64)

then, for the columns in blocks of ``block_size`` (in the order of descending ``diag(H)`` with
``act_order``, else in order), on a float64 copy of ``W``, for each column ``i`` of a block ``[b, e)``:

    code_i = clamp(round(w_i * (1/s_i)) + z_i, qmin, qmax)       (w_i as float32: the quantizer's own
                                                                  arithmetic and rounding mode)
    q_i    = (code_i - z_i) * s_i
    err_i  = (w_i - q_i) / U_ii
    W[:, i+1:e] -= err_i U[i, i+1:e]                              (within the block)

and after the block ``W[:, e:] -= Err[:, b:e] U[b:e, e:]`` (the lazy batch update; the same codes as
updating every column at once, up to float64 rounding). The codes go into the weight quantizer as code
offsets (:mod:`quant.sim.code_offsets`), never into the float weight, so ``handle.remove()`` restores
the float model bit for bit and the handle's ``state_dict`` carries the choice.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from quant.contract.spec import QuantSpec
from quant.ptq.calibration import (
    Layer,
    LayerResult,
    PTQReport,
    call_model,
    capture,
    checked_batches,
    eval_mode,
    layer_output,
    output_error,
    per_element_qparams,
    quantized_input,
    weight_layers,
)
from quant.sim.attach import QuantHandle
from quant.sim.code_offsets import offsets_for_codes
from quant.sim.functional import dequantize, quantize, rounded_codes

__all__ = ["gptq"]

#: A convolution's geometry as a 2-d one: ``(kernel, dilation, padding, stride)``, each ``(h, w)``.
_Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def gptq(model: nn.Module, handle: QuantHandle, calibration_batches: Iterable[object], *,
         layers: Optional[Sequence[str]] = None, block_size: int = 128, damp: float = 0.01, act_order: bool = False,
         progress: bool = True) -> PTQReport:  # fmt: skip
    """Choose the weight codes of the handle's Linear/Conv1d/Conv2d layers (``layers``: those only), in the
    model's order, by GPTQ (module doc) on ``calibration_batches``; the codes go into the weight quantizers
    as code offsets.

    ``block_size`` (>= 1) columns per lazy batch update, ``damp`` (> 0) the dampening as a fraction of the
    mean Hessian diagonal, ``act_order`` quantizes the columns in the order of descending Hessian diagonal.
    The handle must be calibrated; the qparams stay as they are. Every check runs before any quantizer
    changes: the arguments, the layers (:func:`~quant.ptq.calibration.weight_layers`; a spec with codes to
    choose; zero-padded convolutions with numeric padding; a finite weight) and, in one forward pass over
    the batches, that each layer gets at least as many input rows as its weight has columns. The model runs
    in eval mode and every module is put back in its mode afterwards; if a layer fails (a Hessian that is not positive
    definite), every layer's code offsets are put back as they were. Deterministic. Returns the report: per
    layer the output error (mean squared, on the layer's quantized inputs) with nearest and with the
    chosen codes, and how many codes moved.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"gptq: block_size={block_size!r} must be an integer >= 1")
    if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not math.isfinite(damp) or damp <= 0:
        raise ValueError(f"gptq: damp={damp!r} must be a finite number > 0 (a fraction of the mean Hessian "
                         "diagonal, typically 0.01)")  # fmt: skip
    batches = checked_batches(calibration_batches, "gptq", model, handle)
    skipped: list[str] = []
    chosen = weight_layers(handle, "gptq", layers, skipped)
    for layer in chosen:
        _check_layer(layer)
    options = dict(block_size=block_size, damp=float(damp), act_order=bool(act_order))
    report = PTQReport("gptq", options=options, skipped=skipped)
    start = time.perf_counter()
    with eval_mode(model):
        rows = _input_rows(model, chosen, batches)
        for layer in chosen:
            need = _columns(layer)
            if rows[layer.name] < need:
                raise ValueError(f"gptq: layer {layer.name!r} needs at least {need} input rows (samples x positions) "
                                 f"for its {need}-column Hessian, got {rows[layer.name]}: give more calibration "
                                 "data")  # fmt: skip
        saved = [(layer, layer.quantizer.get_buffer("code_offsets").clone()) for layer in chosen]
        try:
            for layer in chosen:  # every chosen layer starts from nearest: a second run gives the same codes
                layer.quantizer.clear_code_offsets()
            for layer in tqdm(chosen, desc="gptq", disable=not progress, leave=False):
                report.layers.append(_quantize_layer(model, handle, layer, batches, block_size, float(damp),
                                                     bool(act_order)))  # fmt: skip
        except BaseException:
            for layer, offsets in saved:
                if offsets.numel():
                    layer.quantizer.set_code_offsets(offsets)
                else:
                    layer.quantizer.clear_code_offsets()
            raise
    report.seconds = time.perf_counter() - start
    return report


def _check_layer(layer: Layer) -> None:
    """``ValueError`` naming the layer for what GPTQ cannot take: a spec without neighbouring codes to choose
    (binary, stochastic rounding), a convolution padded otherwise than with zeros or by a string, a weight
    that is not finite."""
    spec = layer.quantizer.spec
    if spec.is_binary or spec.rounding == "stochastic":
        raise ValueError(f"gptq: module {layer.name!r}'s weight spec {spec.describe()} has no codes to choose "
                         "(binary or stochastic rounding)")  # fmt: skip
    m = layer.module
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise ValueError(f"gptq: module {layer.name!r} pads with padding_mode={m.padding_mode!r}; only 'zeros' "
                             "is supported (keep it out with layers=[...])")  # fmt: skip
        if isinstance(m.padding, str):
            raise ValueError(f"gptq: module {layer.name!r} has padding={m.padding!r}; only numeric padding is "
                             "supported (keep it out with layers=[...])")  # fmt: skip
    if not bool(torch.isfinite(layer.weight).all()):
        raise ValueError(f"gptq: module {layer.name!r}'s weight contains NaN or Inf")


def _geometry(m: nn.Module) -> _Geometry:
    """A Conv1d's or Conv2d's ``(kernel, dilation, padding, stride)`` as a 2-d convolution's (a Conv1d's
    over ``(N, C, 1, L)`` with a ``(1, k)`` kernel)."""
    assert isinstance(m, (nn.Conv1d, nn.Conv2d)) and not isinstance(m.padding, str)

    def pair(v: tuple[int, ...]) -> tuple[int, int]:
        return (1 if isinstance(m, nn.Conv1d) else int(v[0]), int(v[-1]))

    padding = (0, int(m.padding[0])) if isinstance(m, nn.Conv1d) else (int(m.padding[0]), int(m.padding[1]))
    return pair(m.kernel_size), pair(m.dilation), padding, pair(m.stride)


def _columns(layer: Layer) -> int:
    """``K``: the columns of the layer's weight as a matrix (``in`` or ``in * kh * kw``)."""
    return int(layer.weight[0].numel())


def _as_images(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A convolution's input as a batch of 2-d images ``(N, C, H, W)`` (Conv1d: ``H = 1``; unbatched: ``N = 1``)."""
    spatial = 1 if isinstance(m, nn.Conv1d) else 2
    if x.dim() == spatial + 1:
        x = x.unsqueeze(0)
    return x.unsqueeze(2) if isinstance(m, nn.Conv1d) else x


def _row_count(layer: Layer, x: torch.Tensor) -> int:
    """How many rows of ``X`` the input ``x`` gives (without computing them)."""
    m = layer.module
    if isinstance(m, nn.Linear):
        return x.numel() // max(1, m.in_features)
    images = _as_images(m, x)
    kernel, dilation, padding, stride = _geometry(m)
    positions = 1
    for d in range(2):
        size = images.shape[2 + d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1
        positions *= max(0, size // stride[d] + 1)
    return int(images.shape[0]) * positions


def _rows(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` (``(n, K)``, ``x``'s dtype) of input ``x``, so that the layer's output without bias is
    ``X @ W.reshape(out, K).T`` (a convolution's per output position, positions last in each sample)."""
    m = layer.module
    if isinstance(m, nn.Linear):
        return x.reshape(-1, m.in_features)
    kernel, dilation, padding, stride = _geometry(m)
    cols = F.unfold(_as_images(m, x), kernel, dilation=dilation, padding=padding, stride=stride)  # (N, K, P)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@torch.no_grad()
def _input_rows(model: nn.Module, chosen: Sequence[Layer], batches: Sequence[object]) -> dict[str, int]:
    """Per layer, how many input rows one pass of ``batches`` gives it (the model as it is; nothing kept but
    the counts). ``ValueError`` for a layer the batches never reach."""
    counts = {layer.name: 0 for layer in chosen}
    calls = {layer.name: 0 for layer in chosen}
    hooks = []

    def counter(layer: Layer) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            calls[layer.name] += 1
            if args and isinstance(args[0], torch.Tensor):
                counts[layer.name] += _row_count(layer, args[0])

        return hook

    try:
        for layer in chosen:
            hooks.append(layer.module.register_forward_pre_hook(counter(layer), prepend=True))
        for batch in batches:
            call_model(model, batch)
    finally:
        for h in hooks:
            h.remove()
    for layer in chosen:
        if not calls[layer.name]:
            raise ValueError(f"gptq: layer {layer.name!r} never ran on the calibration batches")
    return counts


def _hessian(layer: Layer, xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``H = 2 X^T X / n`` over all the inputs' rows, float64 ``(K, K)``; ``ValueError`` when not finite."""
    k = _columns(layer)
    h = torch.zeros(k, k, dtype=torch.float64, device=layer.weight.device)
    n = 0
    for x in xs:
        rows = _rows(layer, x).to(torch.float64)
        h.addmm_(rows.T, rows)
        n += rows.shape[0]
    h.mul_(2.0 / max(n, 1))
    if not bool(torch.isfinite(h).all()):
        raise ValueError(f"gptq: layer {layer.name!r}'s inputs contain NaN or Inf (their Hessian is not finite)")
    return h


def _inverse_hessian_factor(h: torch.Tensor, damp: float, name: str) -> torch.Tensor:
    """``U``, the upper Cholesky factor of ``(H + damp mean(diag H) I)^-1`` (float64); ``H`` is dampened in
    place. ``ValueError`` naming the layer when a factorization fails."""
    diag = h.diagonal()
    diag.add_(damp * float(diag.mean()))
    lower, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        upper: torch.Tensor
        upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
        if int(info) == 0:
            return upper
    raise ValueError(f"gptq: layer {name!r}'s dampened Hessian is not positive definite (Cholesky failed); "
                     f"pass a larger damp than {damp}")  # fmt: skip


def _gptq_codes(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor, h: torch.Tensor, spec: QuantSpec,
                block_size: int, damp: float, act_order: bool, name: str) -> torch.Tensor:  # fmt: skip
    """The int64 codes ``(out, K)`` GPTQ chooses (module doc) for the float32 weight matrix ``w`` with
    per-element float32 ``s`` and ``z`` (``w``'s shape) and the float64 Hessian ``h`` (``(K, K)``, changed in
    place)."""
    k = w.shape[1]
    diag = h.diagonal()
    diag[diag == 0] = 1.0
    perm: Optional[torch.Tensor] = None
    if act_order:
        perm = torch.argsort(diag, descending=True, stable=True)
        w, s, z = w[:, perm], s[:, perm], z[:, perm]
        h = h[perm][:, perm]
    u = _inverse_hessian_factor(h, damp, name)
    work = w.to(torch.float64)  # a copy: the float weight itself is never written
    s64, z64 = s.to(torch.float64), z.to(torch.float64)
    codes = torch.empty_like(w)
    for b in range(0, k, block_size):
        e = min(b + block_size, k)
        block = work[:, b:e].clone()
        errs = torch.zeros_like(block)
        ub = u[b:e, b:e]
        for i in range(e - b):
            c = b + i
            _, code = rounded_codes(block[:, i].to(torch.float32), s[:, c], z[:, c], spec, None)
            codes[:, c] = code
            err = (block[:, i] - (code.to(torch.float64) - z64[:, c]) * s64[:, c]) / ub[i, i]
            block[:, i + 1 :] -= torch.outer(err, ub[i, i + 1 :])
            errs[:, i] = err
        work[:, e:] -= errs @ u[b:e, e:]
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes.to(torch.int64)


@torch.no_grad()
def _quantize_layer(model: nn.Module, handle: QuantHandle, layer: Layer, batches: Sequence[object], block_size: int,
                    damp: float, act_order: bool) -> LayerResult:  # fmt: skip
    """GPTQ on one layer: its codes set as the quantizer's code offsets, and its result."""
    q = layer.quantizer
    spec = q.spec
    xs = [quantized_input(handle, layer, x) for x in capture(model, layer, batches, quantized=True, handle=handle)]
    weight = layer.weight
    w = weight.to(torch.float32)
    s, z = q.effective_qparams()
    s_full, z_full = per_element_qparams(w, s, z, spec)
    out = w.shape[0]
    matrix = _gptq_codes(w.reshape(out, -1), s_full.reshape(out, -1), z_full.reshape(out, -1),
                         _hessian(layer, xs), spec, block_size, damp, act_order, layer.name)  # fmt: skip
    codes = matrix.reshape(w.shape)
    q.set_code_offsets(offsets_for_codes(w, s, z, codes, spec))
    nearest = quantize(w, s, z, spec).to(torch.int64)
    targets = [layer_output(layer, x, weight) for x in xs]
    rtn_error = output_error(layer, xs, targets, dequantize(nearest, s, z, spec).to(weight.dtype))
    error = output_error(layer, xs, targets, dequantize(codes, s, z, spec).to(weight.dtype))
    return LayerResult(layer.name, rtn_error, error, int((codes != nearest).sum()), codes.numel())
