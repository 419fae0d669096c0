"""What every post-training algorithm of :mod:`quant.ptq` shares: calling the model on a calibration batch,
picking the layers whose weights it rewrites, capturing a layer's inputs and outputs, and its report.

A calibration batch is whatever the model's forward takes: a tensor (``model(x)``), a tuple or list
(``model(*x)``) or a dict (``model(**x)``: a Hugging Face tokenizer's output as it is).

The algorithms change nothing but the handle's quantizer state (code offsets, :mod:`quant.sim.code_offsets`),
so ``handle.remove()`` restores the float model bit for bit and ``state_dict`` carries the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from quant.contract.spec import QuantSpec
from quant.sim.attach import QuantHandle
from quant.sim.functional import broadcast_qparams, group_view
from quant.sim.fast import original_parameter
from quant.sim.quantizer import Quantizer

__all__ = ["LayerResult", "PTQReport", "Layer", "call_model", "checked_batches", "weight_layers", "capture", "float_reference",
           "layer_output", "quantized_input", "per_element_qparams", "output_error", "eval_mode", "dequantized_weight",
           "channel_axes", "channel_view", "quantized_layer_output", "relative_error"]  # fmt: skip

#: The module types whose weights the algorithms rewrite (a product of the input with the weight).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class LayerResult:
    """One layer's outcome: its output error over the calibration inputs before the algorithm (``rtn_error``:
    round-to-nearest codes as calibrated) and after it (``error``), and how many of its ``codes`` the algorithm
    changed. AdaRound, GPTQ and bias correction measure the mean squared error against the target they minimize
    (AdaRound's and bias correction's the float model's layer output, GPTQ's the float weight's on the same
    inputs) and count moved codes (bias correction: shifted channels); equalization and smoothing, which rescale
    the output, the relative error of :func:`relative_error`, and change no code."""

    name: str
    rtn_error: float
    error: float
    changed_codes: int
    codes: int

    @property
    def improvement(self) -> float:
        """``rtn_error / error`` (>1: the algorithm's codes reproduce the float output better)."""
        return self.rtn_error / self.error if self.error > 0 else float("inf")


@dataclass
class PTQReport:
    """What one algorithm did, layer by layer, and how long it took."""

    algorithm: str
    layers: list[LayerResult] = field(default_factory=list)
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    #: Weight layers left at round-to-nearest, and why (e.g. grouped convolutions).
    skipped: list[str] = field(default_factory=list)
    #: What the layers' errors measure, and what their changed counts count.
    error_label: str = "output MSE"
    changed_label: str = "codes moved"

    def table(self) -> str:
        """The report as a Markdown table."""
        rows = [f"| layer | {self.error_label} before | {self.algorithm} | ratio | {self.changed_label} |",
                "|---|---|---|---|---|"]  # fmt: skip
        for r in self.layers:
            rows.append(f"| {r.name} | {r.rtn_error:.4g} | {r.error:.4g} | {r.improvement:.2f} | "
                        f"{r.changed_codes} / {r.codes} |")  # fmt: skip
        return "\n".join(rows)


def call_model(model: nn.Module, batch: object) -> object:
    """``model(batch)``, ``model(*batch)`` or ``model(**batch)`` for a tensor, tuple/list or dict batch."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    raise TypeError(f"a calibration batch must be a tensor, a tuple/list of arguments or a dict of keyword "
                    f"arguments, got {type(batch).__name__}")  # fmt: skip


def checked_batches(batches: Iterable[object], algorithm: str, model: Optional[nn.Module] = None,
                    handle: Optional[QuantHandle] = None) -> list[object]:  # fmt: skip
    """The calibration batches as a list (every algorithm reads them more than once); ``ValueError`` when
    there are none, ``TypeError`` naming a batch of another kind. With ``model`` and ``handle``: every batch is
    run once through the float model (:func:`float_reference`, no gradients, eval mode), and a batch the model
    cannot take (a wrong shape, a missing argument) is a ``ValueError`` naming it, before any work."""
    if isinstance(batches, (torch.Tensor, dict)):
        raise TypeError(f"{algorithm}: calibration_batches must be an iterable of batches (a list of tensors, "
                        "a DataLoader, ...), not one batch; wrap it in a list")  # fmt: skip
    out = list(batches)
    if not out:
        raise ValueError(f"{algorithm}: no calibration batches")
    for i, b in enumerate(out):
        if not isinstance(b, (torch.Tensor, tuple, list, dict)):
            raise TypeError(f"{algorithm}: calibration batch {i} is a {type(b).__name__}; a batch is a tensor, "
                            "a tuple/list of arguments or a dict of keyword arguments")  # fmt: skip
    if model is not None and handle is not None:
        with torch.no_grad(), eval_mode(model), float_reference(handle):
            for i, b in enumerate(out):
                try:
                    call_model(model, b)
                except (RuntimeError, ValueError, TypeError, IndexError) as err:
                    raise ValueError(f"{algorithm}: calibration batch {i} ({_describe_batch(b)}) does not run through "
                                     f"the model: {type(err).__name__}: {err}") from None  # fmt: skip
    return out


def _describe_batch(batch: object) -> str:
    """The shapes of a batch's tensors, for an error message."""
    if isinstance(batch, torch.Tensor):
        return f"shape {tuple(batch.shape)}"
    items = batch.items() if isinstance(batch, dict) else enumerate(batch)  # type: ignore[arg-type]
    return ", ".join(f"{k}: {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}" for k, v in items)


@dataclass(frozen=True)
class Layer:
    """A layer whose weight codes an algorithm chooses: its name, module and weight quantizer."""

    name: str
    module: nn.Module
    quantizer: Quantizer

    @property
    def weight(self) -> torch.Tensor:
        """The float weight whose codes the quantizer gives (detached): the original under the quantizer's
        parametrization, times its prescale factors when equalization or smoothing set them."""
        return self.quantizer.rescaled(original_parameter(self.module))

    @property
    def bias(self) -> Optional[torch.Tensor]:
        """The layer's bias in the rescaled float model (detached; times the bias factors, no bias shift)."""
        return self.quantizer.float_bias(getattr(self.module, "bias", None))


def weight_layers(handle: QuantHandle, algorithm: str, layers: Optional[Sequence[str]] = None,
                  skipped: Optional[list[str]] = None) -> list[Layer]:  # fmt: skip
    """The handle's layers with a weight quantizer the algorithm can take, in the model's order (``layers``:
    those names only). ``ValueError`` before any work for a named layer of another type, one without a weight
    quantizer, one whose quantizer has no qparams or learns its scale, or a grouped convolution; without
    ``layers``, grouped convolutions are left as they are and listed in ``skipped``."""
    modules = dict(handle.modules)
    skipped = [] if skipped is None else skipped
    names = list(modules) if layers is None else list(layers)
    out: list[Layer] = []
    for name in names:
        if name not in modules:
            raise ValueError(f"{algorithm}: {name!r} is not a quantized module of the handle; quantized: {sorted(modules)}")
        m = modules[name]
        if "weight" not in handle.configs[name]:
            if layers is None:
                continue
            raise ValueError(f"{algorithm}: module {name!r} has no weight quantizer")
        if not isinstance(m, WEIGHT_LAYERS):
            if layers is None:
                continue
            kind = parametrize.type_before_parametrizations(m).__name__
            raise ValueError(f"{algorithm}: module {name!r} is a {kind}; it rewrites the weights of "
                             f"{', '.join(t.__name__ for t in WEIGHT_LAYERS)}")  # fmt: skip
        if isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):  # a MultiheadAttention's out_proj
            if layers is None:
                skipped.append(f"{name} (an attention's output projection, which the attention computes itself)")
                continue
            raise ValueError(f"{algorithm}: module {name!r} is a MultiheadAttention's output projection, which the "
                             "attention computes from its weight without calling it")  # fmt: skip
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups != 1:
            if layers is None:
                skipped.append(f"{name} (grouped convolution)")
                continue
            raise ValueError(f"{algorithm}: module {name!r} is a grouped convolution (groups={m.groups}); only "
                             "groups=1 is supported (keep it out with layers=[...])")  # fmt: skip
        q = handle.quantizer(name, "weight")
        if q.learn != "none":
            raise ValueError(f"{algorithm}: module {name!r}'s weight quantizer learns its scale (learn={q.learn!r}); "
                             "post-training codes need fixed qparams")  # fmt: skip
        if not q.calibrated:
            raise ValueError(f"{algorithm}: module {name!r}'s weight quantizer has no qparams: calibrate the handle "
                             "first (handle.calibrate())")  # fmt: skip
        out.append(Layer(name, m, q))
    if not out:
        raise ValueError(f"{algorithm}: the handle quantizes the weights of no {', '.join(t.__name__ for t in WEIGHT_LAYERS)}")
    return out


@contextlib.contextmanager
def _hook_inputs(module: nn.Module, store: list[torch.Tensor]) -> Iterator[None]:
    """Append the first positional input of every call of ``module`` (detached) to ``store``."""
    def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"the layer's first argument is a {type(args[0]).__name__ if args else 'missing'}, not a tensor")
        store.append(args[0].detach())

    handle = module.register_forward_pre_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def capture(model: nn.Module, layer: Layer, batches: Sequence[object], *, quantized: bool,
            handle: QuantHandle) -> list[torch.Tensor]:  # fmt: skip
    """The inputs ``layer`` receives over ``batches`` (before its own input quantizer), in the quantized model
    (``quantized``) or in the float one: every quantizer passing its tensor through (``quantizing`` and
    ``observing`` off), which is the original float model with equalization's and smoothing's rescaling
    (:mod:`quant.sim.rescaling`) and without bias corrections. The quantizers' flags are put back afterwards."""
    with float_reference(handle, active=not quantized):
        inputs: list[torch.Tensor] = []
        with _hook_inputs(layer.module, inputs):
            for batch in batches:
                call_model(model, batch)
    if not inputs:
        raise ValueError(f"layer {layer.name!r} never ran on the calibration batches")
    return inputs


@contextlib.contextmanager
def float_reference(handle: QuantHandle, active: bool = True) -> Iterator[None]:
    """Inside: every quantizer of the handle passes its tensor through (``quantizing`` and ``observing`` off,
    ``enabled`` as it was), so the model is the rescaled float model (see :func:`capture`); the flags are put
    back afterwards. ``active=False``: nothing changes."""
    flags = [(q, q.observing, q.quantizing) for _, _, q in handle.quantizers()] if active else []
    try:
        for q, _, _ in flags:
            q.observing, q.quantizing = False, False
        yield
    finally:
        for q, observing, quantizing in flags:
            q.observing, q.quantizing = observing, quantizing


def layer_output(layer: Layer, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's output for input ``x`` with ``weight`` in place of its own (geometry its own, the bias of the
    rescaled float model: :attr:`Layer.bias`)."""
    m = layer.module
    bias = layer.bias
    if isinstance(m, nn.Linear):
        return F.linear(x, weight, bias)
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    out: torch.Tensor = m._conv_forward(x, weight, bias)
    return out


@torch.no_grad()
def quantized_input(handle: QuantHandle, layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """``x`` as the layer's product sees it: through the layer's input quantizer when it has one (with its
    current flags), else as it is."""
    if "input" not in handle.configs[layer.name]:
        return x
    out: torch.Tensor = handle.quantizer(layer.name, "input")(x)
    return out


def per_element_qparams(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor,
                        spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The scale (float32) and zero point (float32, integer-valued) of every element of ``w`` (its shape),
    from qparams in the spec's qparams shape (per tensor, channel or group)."""
    wg = group_view(w, spec)
    s_full = broadcast_qparams(s.to(torch.float32), w, spec).expand_as(wg).reshape(w.shape)
    z_full = broadcast_qparams(z.to(torch.float32), w, spec).expand_as(wg).reshape(w.shape)
    return s_full, z_full


@torch.no_grad()
def output_error(layer: Layer, xs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], weight: torch.Tensor) -> float:
    """Mean squared error (a float64 sum) of the layer's output with ``weight`` against ``targets``, over
    every output element."""
    total, count = 0.0, 0
    for x, y in zip(xs, targets):
        d = layer_output(layer, x, weight).to(torch.float64) - y.to(torch.float64)
        total += float((d * d).sum())
        count += d.numel()
    return total / max(count, 1)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (batch norms keep their statistics, dropout draws nothing), every module's own
    training flag put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def dequantized_weight(layer: Layer) -> torch.Tensor:
    """The weight the quantized layer computes with: ``(codes - z) s`` per element, float32 (the codes of
    :meth:`quant.sim.quantizer.Quantizer.codes`: rescaled, with chosen offsets)."""
    q = layer.quantizer
    w = layer.weight.to(torch.float32)
    s, z = q.effective_qparams()
    s_full, z_full = per_element_qparams(w, s, z, q.spec)
    codes = q.codes(original_parameter(layer.module)).to(torch.float32)
    return (codes - z_full) * s_full


def channel_axes(layer: Layer, y: torch.Tensor) -> tuple[int, ...]:
    """The axes of the layer's output ``y`` to average over for one value per output channel (all but axis 1
    of a convolution's output, all but the last of a Linear's)."""
    keep = 1 if isinstance(layer.module, (nn.Conv1d, nn.Conv2d)) else y.dim() - 1
    return tuple(d for d in range(y.dim()) if d != keep)


def channel_view(layer: Layer, v: torch.Tensor, ndim: int) -> torch.Tensor:
    """``v`` (one value per output channel) shaped to broadcast against an ``ndim``-dimensional output of the
    layer (along axis 1 of a convolution's output, the last of a Linear's)."""
    shape = [1] * ndim
    shape[1 if isinstance(layer.module, (nn.Conv1d, nn.Conv2d)) else -1] = -1
    return v.reshape(shape)


def quantized_layer_output(handle: QuantHandle, layer: Layer, x: torch.Tensor, weight: torch.Tensor,
                           shifted: bool = True) -> torch.Tensor:  # fmt: skip
    """What the quantized layer computes on its (unquantized) input ``x``: ``x`` through the layer's input
    quantizer, ``weight`` (its :func:`dequantized_weight`, computed once by the caller), and the bias with its
    shift (:meth:`Quantizer.layer_bias`; without the shift when not ``shifted``)."""
    out = layer_output(layer, quantized_input(handle, layer, x), weight)
    shift = layer.quantizer.bias_shift
    return out + channel_view(layer, shift, out.dim()) if shifted and shift.numel() else out


@torch.no_grad()
def relative_error(model: nn.Module, handle: QuantHandle, layer: Layer, batches: Sequence[object]) -> float:
    """``sum |y_q - y|^2 / sum |y|^2`` over the calibration batches: the quantized layer's output on the quantized
    model's inputs against the (rescaled) float model's layer output on its own inputs. Scale-free, so it
    compares a layer before and after a rescaling."""
    xs_q = capture(model, layer, batches, quantized=True, handle=handle)
    xs_f = capture(model, layer, batches, quantized=False, handle=handle)
    num = den = 0.0
    w, w_q = layer.weight, dequantized_weight(layer)
    for x_q, x_f in zip(xs_q, xs_f):
        y = layer_output(layer, x_f, w).to(torch.float64)
        d = quantized_layer_output(handle, layer, x_q, w_q).to(torch.float64) - y
        num += float((d * d).sum())
        den += float((y * y).sum())
    return num / den if den > 0 else 0.0
