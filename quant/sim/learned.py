"""Learned quantizers: LSQ (learned step size) and PACT (learned clipping level).

Both are fake quantizers whose forward is the arithmetic of
:func:`quant.sim.functional.fake_quantize` and whose backward gives a gradient to the
learned parameter, each as one ``torch.autograd.Function``. Below, ``v`` is an element
of ``x``, ``v/s`` means ``v * (1/s)`` computed as in the forward (multiplication by the
float reciprocal), ``round`` is the spec's rounding mode and ``g`` the incoming gradient.

**LSQ** (Esser et al. 2020, "Learned Step Size Quantization", eq. 3 and section 2.2),
:func:`lsq_fake_quantize`::

    forward   x^ = (clamp(round(v/s) + z, qmin, qmax) - z) * s      (= fake_quantize)
    inside    qmin <= v/s + z <= qmax                               (unrounded, as the paper's -Qn <= v/s <= Qp)
    dL/dv   = g                       inside, else 0
    dL/ds   = grad_scale * sum over the elements sharing s of
              g * (round(v/s) - v/s)    inside
              g * (qmin - z)            v/s + z < qmin
              g * (qmax - z)            v/s + z > qmax

with ``grad_scale = 1 / sqrt(N * Qp)`` (:func:`lsq_grad_scale`, ``N`` the number of
elements per scale, ``Qp = qmax``) and the scale initialized as ``2 * mean(|v|) /
sqrt(Qp)`` (:func:`lsq_init_scale`). The zero point is not learned. Binary specs
(codes {-1, +1}, ``x^ = q * s`` with ``q = +1`` iff ``v >= 0``) use ``dL/dv = g`` where
``|v/s| <= 1`` and ``dL/ds = grad_scale * sum g * q`` everywhere: the exact derivative
of ``q * s``, which is ``sign(v)`` inside and outside alike. A learned scale is used as
``max(s, eps)`` (and as ``2^ceil(log2 s)`` for ``scale="pow2"`` specs) with the
gradient passed straight through to ``s``.

**PACT** (Choi et al. 2018, "PACT: Parameterized Clipping Activation", eq. 1-3),
:func:`pact_fake_quantize`, with the zero point 0 and ``s = alpha / qmax``::

    unsigned  y = clamp(v, 0, alpha)        signed  y = clamp(v, -alpha, alpha)
    forward   x^ = clamp(round(y/s), qmin, qmax) * s
    dL/dv     = g where 0 <= v <= alpha (signed: -alpha <= v <= alpha), else 0
    dL/dalpha = sum of g where v >= alpha, minus (signed only) g where v <= -alpha

i.e. the straight-through estimator through the rounding, exactly the paper's eq. 3.

Non-finite inputs follow :func:`~quant.sim.functional.fake_quantize`: NaN stays NaN, +-Inf
saturate, with zero input gradient there; +-Inf count as clipped in the LSQ scale
gradient, NaN inputs make it NaN.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> x = torch.tensor([-1.0, 0.3, 0.74, 5.0], requires_grad=True)
>>> s = torch.tensor(0.5, requires_grad=True)
>>> y = lsq_fake_quantize(x, s, torch.tensor(0), QuantSpec(bits=3), grad_scale=1.0)
>>> y.tolist()
[-1.0, 0.5, 0.5, 1.5]
>>> y.sum().backward()
>>> x.grad.tolist(), round(s.grad.item(), 4)
([1.0, 1.0, 1.0, 0.0], 2.92)
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from quant.sim import fused
from quant.sim.functional import (
    broadcast_qparams,
    check_qparams,
    group_view,
    qparams_shape,
    relative_code_bounds,
    rounded_codes,
)
from quant.sim.observers import reduce_to_qparams_shape
from quant.sim.qparams import SCALE_EPS, pow2_ceil
from quant.reference.rounding import round_to_integer
from quant.contract.spec import QuantSpec

__all__ = [
    "lsq_grad_scale",
    "lsq_init_scale",
    "lsq_fake_quantize",
    "lsq_values",
    "lsq_effective_scale",
    "mean_abs_to_lsq_scale",
    "pact_fake_quantize",
    "pact_scale",
]


# --------------------------------------------------------------------------- LSQ
def lsq_grad_scale(numel_per_scale: int, qmax: int) -> float:
    """LSQ's gradient scale ``1 / sqrt(N * Qp)`` for ``N`` elements per scale and ``Qp = qmax``.

    >>> lsq_grad_scale(100, 7) == 1 / math.sqrt(700)
    True
    """
    for name, v in (("numel_per_scale", numel_per_scale), ("qmax", qmax)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"lsq_grad_scale: {name}={v!r} must be a positive integer")
    return 1.0 / math.sqrt(numel_per_scale * qmax)


def lsq_init_scale(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """LSQ's initial step size ``2 * mean(|x|) / sqrt(Qp)`` per tensor/channel/group.

    Returns a float32 tensor of :func:`~quant.sim.functional.qparams_shape`. A zero mean
    (all-zero data) gives 1.0 and any other value is at least ``SCALE_EPS``, as in
    :func:`quant.sim.qparams.qparams_from_range`; the result is not rounded to a power of
    two (LSQ applies ``scale="pow2"`` in the forward). NaN or Inf in ``x`` raises
    ``ValueError``.

    >>> import torch
    >>> lsq_init_scale(torch.tensor([[1.0, -3.0], [0.0, 0.0]]), QuantSpec(bits=3, granularity="channel", axis=0)).tolist()
    [2.309401035308838, 1.0]
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("lsq_init_scale: x must be a floating tensor")
    if x.numel() == 0:
        raise ValueError("lsq_init_scale: x is empty")
    mean_abs = reduce_to_qparams_shape(x.detach().abs(), spec, "mean").to(torch.float32)
    if not bool(torch.isfinite(mean_abs).all()):
        raise ValueError("lsq_init_scale: x contains NaN or Inf")
    return mean_abs_to_lsq_scale(mean_abs, spec)


def mean_abs_to_lsq_scale(mean_abs: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``2 * mean_abs / sqrt(qmax)``, 1.0 where it is 0, at least ``SCALE_EPS`` (float32)."""
    s = (2.0 * mean_abs.to(torch.float32)) / math.sqrt(spec.qmax)
    return torch.where(s == 0.0, torch.ones_like(s), torch.clamp(s, min=SCALE_EPS))


def lsq_effective_scale(scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The scale LSQ quantizes with: ``max(scale, SCALE_EPS)``, rounded up to a power of
    two for ``scale="pow2"`` specs; its gradient passes straight through to ``scale``.

    >>> import torch
    >>> lsq_effective_scale(torch.tensor([0.3, -1.0]), QuantSpec(scale="pow2")).tolist()
    [0.5, 1.1920928955078125e-07]
    """
    projected = torch.clamp(scale.detach(), min=SCALE_EPS)
    if spec.scale == "pow2":
        projected = pow2_ceil(projected)
    return scale + (projected - scale.detach())


def lsq_values(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec, generator: Optional[torch.Generator],
    need_s: bool,
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """LSQ's forward on grouped ``x`` with broadcastable effective ``s`` and ``z``: the values, the input
    gradient's 0/1 mask (``x``'s dtype) and, with ``need_s``, the per-element derivative of the values by
    ``s`` (the module doc's ``round(v/s) - v/s`` inside, the clamped bound outside)."""
    if spec.is_binary:
        scaled, q = rounded_codes(x, s, z, spec, generator)
        out = q * s
        inside = scaled.abs() <= 1.0
        ds = q if need_s else None
    else:
        # quant.sim.functional's arithmetic: round(x * (1/s)), then + z, clamp, - z. The
        # zero point is an integer, so clamping the rounded value to [qmin - z, qmax - z]
        # gives the same integers. Masks are written as 0/1 in x's dtype: on CPU a
        # comparison into a float tensor, and a product with one, cost a fraction of
        # their boolean counterparts.
        lo, hi = relative_code_bounds(z, spec, x.dtype)
        scaled = x * torch.reciprocal(s)
        q_rel = round_to_integer(scaled, spec.rounding, generator).clamp_(lo, hi)  # type: ignore[arg-type]
        out = q_rel * s
        clipped = torch.clamp(scaled, lo, hi)  # type: ignore[arg-type]
        inside = torch.empty_like(x)
        torch.eq(clipped, scaled, out=inside)
        # round(v/s) - v/s inside, the clamped bound outside (clipped is finite for +-Inf)
        ds = q_rel.addcmul_(clipped, inside, value=-1.0) if need_s else None  # q_rel is not needed any more
    return out, inside, ds


class _LSQFakeQuantize(torch.autograd.Function):
    """LSQ fake quantization on grouped ``x`` with broadcastable ``s`` and ``z``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        s: torch.Tensor,
        z: torch.Tensor,
        spec: QuantSpec,
        grad_scale: float,
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        out, inside, ds = lsq_values(x, s, z, spec, generator, need_s=ctx.needs_input_grad[1])  # type: ignore[attr-defined]
        if ds is None:
            ctx.save_for_backward(inside)
        else:
            ctx.save_for_backward(inside, ds)
        ctx.grad_scale = grad_scale  # type: ignore[attr-defined]
        ctx.s_shape = s.shape  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        gx = grad * saved[0] if ctx.needs_input_grad[0] else None  # type: ignore[attr-defined]
        gs = None
        if len(saved) == 2:
            s_shape = ctx.s_shape  # type: ignore[attr-defined]
            if math.prod(s_shape) == 1:  # one scale: a dot product, no temporary
                gs = torch.dot(grad.reshape(-1), saved[1].reshape(-1)).reshape(s_shape)
            else:
                gs = (grad * saved[1]).sum_to_size(s_shape)
            gs = gs * ctx.grad_scale  # type: ignore[attr-defined]
        return gx, gs, None, None, None, None


def lsq_fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    spec: QuantSpec,
    grad_scale: float,
    *,
    generator: Optional[torch.Generator] = None,
    validate: bool = True,
) -> torch.Tensor:
    """LSQ fake quantization (see the module doc): the forward equals
    :func:`~quant.sim.functional.fake_quantize` bit for bit; gradients go to ``x`` and ``scale``.

    ``scale`` (floating, usually an ``nn.Parameter``) and ``zero_point`` have
    :func:`~quant.sim.functional.qparams_shape` (or as many elements); ``grad_scale``
    multiplies the scale gradient. With ``validate=True`` the parameters are checked by
    :func:`~quant.sim.functional.check_qparams` (the pow2 constraint is applied in the
    forward, not required of ``scale``); ``validate=False`` skips the checks (no host
    synchronization) and needs a ``scale`` already of ``qparams_shape``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"lsq_fake_quantize expects a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if isinstance(grad_scale, bool) or not isinstance(grad_scale, (int, float)) or not math.isfinite(grad_scale):
        raise ValueError(f"lsq_fake_quantize: grad_scale={grad_scale!r} must be a finite number")
    if validate:
        scale, zero_point = check_qparams(x, scale, zero_point, spec.with_(scale="float"))
    if fused.fused_applies(x, scale, spec):  # one C pass each way, the same values (quant.sim.fused)
        s_eff = lsq_effective_scale(scale if torch.is_grad_enabled() else scale.detach(), spec).to(x.dtype)
        if not torch.is_grad_enabled() or not (x.requires_grad or s_eff.requires_grad):
            return fused.fake_quantize_fused(x, s_eff.detach(), zero_point, spec, need_mask=False)[0]
        fq: torch.Tensor = fused.FusedLSQ.apply(x, s_eff, zero_point, spec, float(grad_scale))  # type: ignore[no-untyped-call]
        return fq
    if not torch.is_grad_enabled():  # inference: the values only, no gradient terms
        s = lsq_effective_scale(scale.detach(), spec).to(x.dtype)
        values, _, _ = lsq_values(group_view(x, spec), broadcast_qparams(s, x, spec),
                                  broadcast_qparams(zero_point, x, spec), spec, generator, need_s=False)  # fmt: skip
        return values.reshape(x.shape)
    s = lsq_effective_scale(scale, spec).to(x.dtype)
    xg = group_view(x, spec)
    out: torch.Tensor = _LSQFakeQuantize.apply(  # type: ignore[no-untyped-call]
        xg, broadcast_qparams(s, x, spec), broadcast_qparams(zero_point, x, spec), spec, float(grad_scale), generator
    )
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- PACT
def pact_scale(alpha: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """PACT's scale ``max(alpha, SCALE_EPS) / qmax`` (rounded up to a power of two for
    ``scale="pow2"`` specs), detached from ``alpha``.

    >>> import torch
    >>> pact_scale(torch.tensor(6.0), QuantSpec(bits=4, signed=False)).item()
    0.4000000059604645
    """
    s = torch.clamp(alpha.detach(), min=SCALE_EPS) / float(spec.qmax)
    return pow2_ceil(s) if spec.scale == "pow2" else s


class _PACTFakeQuantize(torch.autograd.Function):
    """PACT clip-and-quantize on grouped ``x`` with a broadcastable ``alpha``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        alpha: torch.Tensor,
        spec: QuantSpec,
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        a = torch.clamp(alpha, min=SCALE_EPS)
        s = pact_scale(alpha, spec)
        # masks as 0/1 in x's dtype (cheaper than booleans on CPU, see _LSQFakeQuantize)
        if spec.signed:
            y = torch.clamp(x, min=-a, max=a)
        else:
            y = torch.clamp(x, max=a).clamp_(min=0.0)
        inside = torch.empty_like(x)
        torch.eq(y, x, out=inside)  # lo <= x <= alpha (0 for NaN)
        d_alpha = torch.empty_like(x)
        torch.ge(x, a, out=d_alpha)  # dy/dalpha: +1 above alpha ...
        if spec.signed:
            below = torch.empty_like(x)
            torch.le(x, -a, out=below)
            d_alpha.sub_(below)  # ... and -1 below -alpha
        if spec.is_binary:
            q = torch.where(y >= 0, 1.0, -1.0).to(x.dtype)
            q = torch.where(torch.isnan(y), y, q)
        else:
            q = round_to_integer(y * torch.reciprocal(s), spec.rounding, generator).clamp_(spec.qmin, spec.qmax)
        ctx.save_for_backward(inside, d_alpha)
        ctx.alpha_shape = alpha.shape  # type: ignore[attr-defined]
        return q.mul_(s)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        inside, d_alpha = ctx.saved_tensors  # type: ignore[attr-defined]
        gx = grad * inside if ctx.needs_input_grad[0] else None  # type: ignore[attr-defined]
        ga = None
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            shape = ctx.alpha_shape  # type: ignore[attr-defined]
            if math.prod(shape) == 1:
                ga = torch.dot(grad.reshape(-1), d_alpha.reshape(-1)).reshape(shape)
            else:
                ga = (grad * d_alpha).sum_to_size(shape)
        return gx, ga, None, None


def pact_fake_quantize(
    x: torch.Tensor, alpha: torch.Tensor, spec: QuantSpec, *, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """PACT fake quantization (see the module doc): clip to ``[0, alpha]`` (signed specs:
    ``[-alpha, alpha]``), quantize with ``s = alpha / qmax`` and zero point 0.

    ``alpha`` (floating, usually an ``nn.Parameter``) has
    :func:`~quant.sim.functional.qparams_shape` or as many elements; it is used as
    ``max(alpha, SCALE_EPS)`` with the gradient of eq. 3 passed to it unchanged.
    Unsigned narrow specs are refused (their code range excludes the zero point 0).

    >>> import torch
    >>> pact_fake_quantize(torch.tensor([-1.0, 0.5, 0.74, 9.0]), torch.tensor(3.0), QuantSpec(bits=2, signed=False)).tolist()
    [0.0, 0.0, 1.0, 3.0]
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"pact_fake_quantize expects a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(alpha, torch.Tensor) or not alpha.is_floating_point():
        raise TypeError("pact_fake_quantize: alpha must be a floating tensor")
    if not spec.signed and spec.narrow:
        raise ValueError("pact_fake_quantize: QuantSpec.narrow=True with signed=False excludes the zero point 0 PACT uses")
    shape = qparams_shape(x.shape, spec)
    if alpha.numel() != math.prod(shape):
        raise ValueError(
            f"pact_fake_quantize: alpha has {alpha.numel()} elements but granularity={spec.granularity!r} for input "
            f"of shape {tuple(x.shape)} needs shape {shape}"
        )
    if spec.granularity == "tensor" and fused.fused_applies(x, alpha, spec):  # one C pass each way, same values
        a_num = float(torch.clamp(alpha.detach(), min=SCALE_EPS).to(torch.float32))
        s_num = float(pact_scale(alpha, spec).to(torch.float32))
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            fq: torch.Tensor = fused.FusedPACT.apply(x, a_num, s_num, alpha, spec)  # type: ignore[no-untyped-call]
            return fq
        return fused.pact_forward(x.detach(), a_num, s_num, spec)
    a = alpha.reshape(shape).to(x.dtype)
    out: torch.Tensor = _PACTFakeQuantize.apply(  # type: ignore[no-untyped-call]
        group_view(x, spec), broadcast_qparams(a, x, spec), spec, generator
    )
    return out.reshape(x.shape)
