"""How much each layer suffers from narrow weights: output SQNR and the HAWQ-v2 Hessian measure, per width.

For a float ``model``, calibration batches ``x_1 .. x_K`` (tensors, tuples or dicts, as
:mod:`quant.ptq.calibration` calls them), their float outputs ``y_k = model(x_k)``, and every candidate width
``b`` of every weight layer ``l`` (``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` that run
on the batches, in ``named_modules()`` order):

* **output SQNR**: ``handle_factory(model, {l: b})`` attaches a handle that quantizes ``l``'s weights at
  ``b`` bits; every other quantizer it may have added is turned off (the rest of the model stays float);
  the handle is calibrated on the batches and the model run again, giving ``y_k(l, b)``; then
  ``sqnr_db[l][b] = quant.sqnr_db(cat_k y_k, cat_k y_k(l, b))`` (float64 sums over every output
  element); the handle is removed, which restores the float model bit for bit. ``noise[l][b] =
  10^(-sqnr_db / 10) = ||y(l, b) - y||^2 / ||y||^2`` is the relative output noise power that the layer
  adds; under independent errors the noise of several layers adds up, which is what
  :func:`quant.mixed.allocation.allocate_bits` minimises for ``objective="sqnr"``;
* **Hessian trace** (HAWQ-v2, Dong et al. 2020): the loss ``L(W) = mean over every output element of
  (model(x_k) - y_k)^2`` over all batches (the MSE to the float outputs: no labels needed, and a tuple
  batch stays the model's arguments), at the float weights. Its Hessian w.r.t. ``W_l`` (``n_l`` elements)
  has its trace estimated by Hutchinson's estimator, ``tr(H) ~ (1/m) sum_i v_i^T H v_i`` over
  ``m = hessian_samples`` Rademacher vectors (entries +-1, drawn from a generator seeded with ``seed``),
  each ``H v`` a Hessian-vector product by double backward (``grad((grad L) . v)``), summed over batches.
  HAWQ-v2's sensitivity of width ``b`` is then ``hessian[l][b] = tr(H) / n_l * ||Q_b(W_l) - W_l||^2``,
  with ``Q_b(W_l)`` the calibrated weight quantizer's fake-quantized weight.

At the float weights the residual is zero, so ``H = (2 / #outputs) sum_k J_k^T J_k`` (Gauss-Newton),
positive semi-definite; for a lone ``nn.Linear`` on inputs ``X`` (``N x in``) with ``out`` outputs,
``H = 2 / (N out) I_out (x) X^T X`` and ``tr(H) = 2 ||X||_F^2 / N``.

The factory: ``handle_factory(model, bits_by_layer) -> QuantHandle`` attaches to ``model`` (the same object)
and returns the handle, uncalibrated or calibrated (``sensitivity`` calibrates it again on the batches);
``bits_by_layer`` always names one layer. It must give that layer a weight quantizer of that width
(``ValueError`` otherwise); anything else it attaches is turned off while measuring.

>>> import torch, torch.nn as nn
>>> import quant
>>> torch.manual_seed(0) and None
>>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
>>> def factory(m: nn.Module, bits: dict[str, int]) -> quant.QuantHandle:
...     return quant.attach(m, {name: {"weight": quant.QuantSpec(bits=b)} for name, b in bits.items()})
>>> s = sensitivity(model, factory, [torch.randn(64, 8)], [2, 8], hessian_samples=8, progress=False)
>>> [(layer.name, layer.weight_elements, layer.macs) for layer in s.layers]
[('0', 128, 128), ('2', 64, 64)]
>>> all(layer.sqnr_db[2] < layer.sqnr_db[8] and layer.hessian(2) > layer.hessian(8) for layer in s.layers)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from tqdm import tqdm

from quant.mixed.cost import cost
from quant.ptq.calibration import call_model, checked_batches, eval_mode
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter
from quant.sim.metrics import sqnr_db

__all__ = ["HandleFactory", "LayerSensitivity", "Sensitivity", "SENSITIVITY_MODULES", "check_widths", "hutchinson_traces",
           "sensitivity"]  # fmt: skip

#: ``handle_factory(model, {layer name: weight bits}) -> QuantHandle`` attached to ``model``.
HandleFactory = Callable[[nn.Module, dict[str, int]], QuantHandle]

#: The layer types whose weight sensitivity is measured (one ``weight`` tensor each).
SENSITIVITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class LayerSensitivity:
    """One weight layer's measurements, per candidate width (see the module docstring)."""

    name: str
    #: The module's type name, e.g. ``"Conv2d"``.
    kind: str
    #: Elements of the layer's weight (``n_l``).
    weight_elements: int
    #: Multiply-accumulates of one sample (:func:`quant.mixed.cost.cost`).
    macs: int
    #: Hutchinson's estimate of ``tr(H)`` of the MSE loss w.r.t. the layer's weight.
    hessian_trace: float
    #: Width -> output SQNR in dB with only this layer's weights quantized.
    sqnr_db: Mapping[int, float] = field(default_factory=dict)
    #: Width -> ``||Q_b(W) - W||^2`` (float64 sum).
    perturbation: Mapping[int, float] = field(default_factory=dict)

    @property
    def mean_hessian_trace(self) -> float:
        """``tr(H) / n``: HAWQ-v2's average Hessian trace."""
        return self.hessian_trace / self.weight_elements

    def noise(self, bits: int) -> float:
        """``10^(-sqnr_db / 10)``: the relative output noise power at ``bits`` (0 for an exact output)."""
        return math.pow(10.0, -self.sqnr_db[bits] / 10.0)

    def hessian(self, bits: int) -> float:
        """HAWQ-v2's sensitivity at ``bits``: ``tr(H) / n * ||Q_b(W) - W||^2``."""
        return self.mean_hessian_trace * self.perturbation[bits]


@dataclass(frozen=True)
class Sensitivity:
    """Every measured layer (``named_modules()`` order) at every candidate width (ascending)."""

    candidates: tuple[int, ...]
    layers: tuple[LayerSensitivity, ...]
    #: Calibration samples (the first dim of each batch's first tensor, summed) and Hutchinson vectors used.
    samples: int
    hessian_samples: int
    seed: int

    def layer(self, name: str) -> LayerSensitivity:
        """The measurements of layer ``name``; ``KeyError`` listing the layers otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no measured layer {name!r}; layers: {[layer.name for layer in self.layers]}")

    def table(self) -> str:
        """Markdown: one row per layer, the output SQNR (dB) and the HAWQ-v2 measure at each width."""
        head = " | ".join(f"SQNR W{b} dB" for b in self.candidates) + " | " + " | ".join(f"HAWQ W{b}" for b in self.candidates)
        rows = [f"| layer | type | weights | MACs | tr(H)/n | {head} |", "|---|---|---|---|---|" + "---|" * (2 * len(self.candidates))]
        for s in self.layers:
            sq = " | ".join(f"{s.sqnr_db[b]:.2f}" for b in self.candidates)
            hw = " | ".join(f"{s.hessian(b):.3g}" for b in self.candidates)
            rows.append(f"| {s.name} | {s.kind} | {s.weight_elements} | {s.macs} | {s.mean_hessian_trace:.3g} | {sq} | {hw} |")
        return "\n".join(rows)


def check_widths(widths: Iterable[object], where: str) -> tuple[int, ...]:
    """``widths`` sorted ascending without repeats; ``ValueError`` naming ``where`` for none, a non-integer or one
    outside 1..8."""
    out: set[int] = set()
    for b in widths:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 8:
            raise ValueError(f"{where}: width {b!r} must be an integer in 1..8")
        out.add(b)
    if not out:
        raise ValueError(f"{where}: no candidate widths; give at least one in 1..8")
    return tuple(sorted(out))


def sensitivity(model: nn.Module, handle_factory: HandleFactory, calibration: Iterable[object], candidates: Iterable[int], *,
                hessian_samples: int = 32, seed: int = 0, layers: Optional[Sequence[str]] = None,
                progress: bool = True) -> Sensitivity:  # fmt: skip
    """Per weight layer and candidate width: output SQNR and HAWQ-v2 sensitivity (see the module docstring).

    ``layers``: measure these (in model order) instead of every weight layer that runs. ``ValueError`` before
    any work for no batches or candidates, a width outside 1..8, ``hessian_samples < 1``, a named layer that
    is not a weight layer of the model or never runs; and from the factory's first handle if it does not
    quantize the layer's weight at the width asked. The model is left as it came (float, every handle
    removed, modes and ``requires_grad`` flags restored)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"sensitivity: model must be an nn.Module, got {type(model).__name__}")
    if not callable(handle_factory):
        raise TypeError(f"sensitivity: handle_factory must be callable, got {type(handle_factory).__name__}")
    batches = checked_batches(calibration, "sensitivity")
    widths = check_widths(candidates, "sensitivity: candidates")
    if isinstance(hessian_samples, bool) or not isinstance(hessian_samples, int) or hessian_samples < 1:
        raise ValueError(f"sensitivity: hessian_samples={hessian_samples!r} must be an integer >= 1")
    named = dict(model.named_modules())
    costs = {c.name: c for c in cost(model, None, batches[0]).layers}
    runnable = [n for n in costs if isinstance(named[n], SENSITIVITY_MODULES)]
    if layers is None:
        chosen = runnable
    else:
        for n in layers:
            if n not in named or not isinstance(named[n], SENSITIVITY_MODULES):
                raise ValueError(f"sensitivity: {n!r} is not a weight layer of the model "
                                 f"({', '.join(t.__name__ for t in SENSITIVITY_MODULES)}); weight layers: {runnable}")  # fmt: skip
            if n not in costs:
                raise ValueError(f"sensitivity: layer {n!r} never runs on the calibration batches")
        chosen = [n for n in runnable if n in set(layers)]
    if not chosen:
        raise ValueError(f"sensitivity: the model has no weight layer ({', '.join(t.__name__ for t in SENSITIVITY_MODULES)}) "
                         "that runs on the calibration batches")  # fmt: skip

    with eval_mode(model):
        with torch.no_grad():
            reference = [_output(call_model(model, b)).detach() for b in batches]
        sqnrs: dict[str, dict[int, float]] = {n: {} for n in chosen}
        perturbations: dict[str, dict[int, float]] = {n: {} for n in chosen}
        jobs = [(n, b) for n in chosen for b in widths]  # first: a factory that gets the width wrong stops at once
        for name, bits in tqdm(jobs, desc="sensitivity", disable=not progress, leave=False):
            sqnrs[name][bits], perturbations[name][bits] = _measure(model, handle_factory, name, bits, batches, reference)
        traces = _hessian_traces(model, [named[n] for n in chosen], batches, reference, hessian_samples, seed, progress)
    result = tuple(
        LayerSensitivity(name=n, kind=parametrize.type_before_parametrizations(named[n]).__name__,
                         weight_elements=int(original_parameter(named[n]).numel()), macs=costs[n].macs,
                         hessian_trace=traces[i], sqnr_db=sqnrs[n], perturbation=perturbations[n])  # fmt: skip
        for i, n in enumerate(chosen)
    )
    return Sensitivity(widths, result, _samples(batches), hessian_samples, seed)


def _output(out: object) -> torch.Tensor:
    """The tensor a model's output stands for: itself, a ``logits`` entry, or the first element of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        logits: torch.Tensor = out["logits"]
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        first: torch.Tensor = out[0]
        return first
    raise TypeError(f"sensitivity: the model returned a {type(out).__name__}; it must return a tensor, a tuple whose "
                    "first element is one, or a mapping with 'logits'")  # fmt: skip


def _samples(batches: Sequence[object]) -> int:
    total = 0
    for b in batches:
        items: Iterable[object] = b.values() if isinstance(b, dict) else b if isinstance(b, (tuple, list)) else (b,)
        first = next((x for x in items if isinstance(x, torch.Tensor) and x.dim() > 0), None)
        total += 0 if not isinstance(first, torch.Tensor) else int(first.shape[0])
    return total


def _measure(model: nn.Module, factory: HandleFactory, name: str, bits: int, batches: Sequence[object],
             reference: Sequence[torch.Tensor]) -> tuple[float, float]:  # fmt: skip
    """``(output SQNR dB, ||Q_b(W) - W||^2)`` with only ``name``'s weight at ``bits`` bits."""
    handle = factory(model, {name: bits})
    try:
        if not isinstance(handle, QuantHandle) or handle.removed or handle.model is not model:
            raise ValueError(f"sensitivity: handle_factory(model, {{{name!r}: {bits}}}) must return a live QuantHandle "
                             f"attached to the model it was given, got {type(handle).__name__}")  # fmt: skip
        config = handle.configs.get(name, {}).get("weight")
        if config is None or config.spec.bits != bits:
            got = "no weight quantizer" if config is None else f"a {config.spec.bits}-bit weight scheme"
            raise ValueError(f"sensitivity: handle_factory(model, {{{name!r}: {bits}}}) gave layer {name!r} {got}; "
                             f"it must quantize that layer's weight at {bits} bits")  # fmt: skip
        for layer, role, q in handle.quantizers():
            q.enabled = layer == name and role == "weight"
        with torch.no_grad():
            with handle.calibrate():
                for b in batches:
                    call_model(model, b)
            outputs = [_output(call_model(model, b)).detach() for b in batches]
            module = handle.modules[name]
            w = original_parameter(module).to(torch.float64)
            q_w = getattr(module, "weight").detach().to(torch.float64)
            perturbation = float(((q_w - w) ** 2).sum())
    finally:
        if isinstance(handle, QuantHandle):
            handle.remove()
    ref = torch.cat([r.reshape(-1) for r in reference])
    test = torch.cat([o.reshape(-1) for o in outputs])
    return sqnr_db(ref, test), perturbation


def _hessian_traces(model: nn.Module, modules: Sequence[nn.Module], batches: Sequence[object],
                    reference: Sequence[torch.Tensor], samples: int, seed: int, progress: bool) -> list[float]:  # fmt: skip
    """Hutchinson's ``tr(H)`` of the MSE to ``reference`` w.r.t. each module's ``weight`` (module docstring)."""
    weights: list[torch.Tensor] = []
    for m in modules:
        w = getattr(m, "weight")
        assert isinstance(w, nn.Parameter)
        weights.append(w)
    flags = [w.requires_grad for w in weights]
    total = sum(r.numel() for r in reference)
    try:
        for w in weights:
            w.requires_grad_(True)

        def loss_terms() -> Iterable[torch.Tensor]:
            for b, r in tqdm(list(zip(batches, reference)), desc="hessian trace", disable=not progress, leave=False):
                d = _output(call_model(model, b)) - r
                yield (d * d).sum() / total

        return hutchinson_traces(loss_terms, weights, samples, seed)
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)


def hutchinson_traces(loss_terms: Callable[[], Iterable[torch.Tensor]], weights: Sequence[torch.Tensor], samples: int,
                      seed: int) -> list[float]:  # fmt: skip
    """Per tensor ``W_j`` of ``weights``: ``(1/m) sum_i v_ij^T H_jj v_ij`` for ``m = samples`` Rademacher vectors
    ``v_ij`` (entries +-1, drawn from one CPU generator seeded with ``seed``, tensor by tensor), ``H_jj`` the
    Hessian of ``sum(loss_terms())`` w.r.t. ``W_j`` alone (the diagonal block). Each term is differentiated once
    (``g = grad(term, W, create_graph=True)``) and each vector's product ``H v = grad(g . v, W_j)`` taken from
    that graph, accumulated over the terms in float64. Unbiased; exact when the blocks are diagonal.

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> u = torch.tensor([1.0, 1.0], requires_grad=True)
    >>> hutchinson_traces(lambda: [3 * w[0] ** 2 + 5 * w[1] ** 2 + w[0] * u[1], (u ** 2).sum()], [w, u], 4, seed=0)
    [16.0, 4.0]
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"hutchinson_traces: samples={samples!r} must be an integer >= 1")
    gen = torch.Generator().manual_seed(seed)
    vectors = [[(torch.randint(0, 2, tuple(w.shape), generator=gen) * 2 - 1).to(w.dtype).to(w.device) for _ in range(samples)]
               for w in weights]  # fmt: skip
    sums = [torch.zeros(samples, dtype=torch.float64) for _ in weights]
    with torch.enable_grad():
        for term in loss_terms():
            grads = torch.autograd.grad(term, list(weights), create_graph=True, allow_unused=True)
            for j, (w, g) in enumerate(zip(weights, grads)):
                if g is None or not g.requires_grad:  # the term is at most linear in w: no curvature
                    continue
                sums[j] += _vector_products(g, w, vectors[j])
    return [float(s.mean()) for s in sums]


def _vector_products(g: torch.Tensor, w: torch.Tensor, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``v_i^T H v_i`` (float64, one per vector) with ``H v_i = grad(g . v_i, w)`` from ``g``'s graph: all vectors
    in one batched backward (``is_grads_batched``), one by one where an op of the graph has no batching rule."""
    stacked = torch.stack(list(vectors))
    try:
        (hv,) = torch.autograd.grad(g, w, grad_outputs=stacked, retain_graph=True, is_grads_batched=True, allow_unused=True)
    except RuntimeError:  # an op without a vmap rule: the same products one at a time
        rows = []
        for v in vectors:
            (h,) = torch.autograd.grad(g, w, grad_outputs=v, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(v) if h is None else h)
        hv = torch.stack(rows)
    if hv is None:
        return torch.zeros(len(vectors), dtype=torch.float64)
    return (hv.to(torch.float64) * stacked.to(torch.float64)).reshape(len(vectors), -1).sum(dim=1)
