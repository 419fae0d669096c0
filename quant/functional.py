"""Functional quantization: ``quantize``, ``dequantize`` and ``fake_quantize``.

Arithmetic contract (float scales; the datapath-exact variants live in the reference)::

    inv = 1 / s                        (in the dtype of x, correctly rounded)
    q   = clamp(round(x * inv) + z, qmin, qmax)      integer codes
    x^  = (q - z) * s                                 fake-quantized value

The scale is applied as a multiplication by its reciprocal and the zero point is
added *after* rounding, exactly as PyTorch's fake-quant and FBGEMM's ``Quantize`` do,
so that with ``rounding="half_even"`` the result is bit-identical to
``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``.
Binary specs (``bits=1``, signed) map ``x >= 0`` to ``+1`` and ``x < 0`` to ``-1``.

Shapes of ``scale`` and ``zero_point`` by granularity (``x`` of shape ``S``):

* ``tensor``: one element (shape ``()`` or ``(1,)``);
* ``channel``: ``(S[axis],)``;
* ``group``: ``S`` with ``S[axis]`` replaced by ``S[axis] // group_size`` (group ``g``
  covers elements ``g*group_size .. (g+1)*group_size - 1`` along ``axis``).

Non-finite input policy: ``quantize`` raises ``ValueError`` (no code represents NaN);
``fake_quantize`` propagates NaN as NaN and saturates +-Inf to the clipping bounds
``(qmin - z) * s`` and ``(qmax - z) * s``, with zero gradient at those elements.

Gradients of ``fake_quantize`` (straight-through estimator): ``d x^ / d x = 1`` where
``qmin <= round(x * inv) + z <= qmax`` and ``0`` elsewhere; none for scale or zero
point (learned quantizers are in ``quant.learned``).

>>> import torch
>>> spec = QuantSpec(bits=4)
>>> quantize(torch.tensor([-1.0, 0.26, 0.25, 9.0]), torch.tensor(0.5), torch.tensor(0), spec).tolist()
[-2, 1, 0, 7]
>>> fake_quantize(torch.tensor([-1.0, 0.26, 9.0]), torch.tensor(0.5), torch.tensor(0), spec).tolist()
[-1.0, 0.5, 3.5]
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from quant.rounding import round_stochastic, rounding_fn
from quant.spec import QuantSpec

__all__ = [
    "QParams",
    "check_qparams",
    "qparams_shape",
    "quantize",
    "dequantize",
    "fake_quantize",
]

QParams = tuple[torch.Tensor, torch.Tensor]


def _normalized_axis(x_dim: int, spec: QuantSpec) -> int:
    assert spec.axis is not None
    if not -x_dim <= spec.axis < x_dim:
        raise ValueError(f"QuantSpec.axis={spec.axis} is out of range for a tensor with {x_dim} dimensions")
    return spec.axis % x_dim


def qparams_shape(x_shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> tuple[int, ...]:
    """Shape of ``scale``/``zero_point`` for a tensor of shape ``x_shape`` under ``spec``.

    >>> qparams_shape((8, 6), QuantSpec(granularity="group", axis=1, group_size=3))
    (8, 2)
    """
    shape = tuple(x_shape)
    if spec.granularity == "tensor":
        return ()
    axis = _normalized_axis(len(shape), spec)
    if spec.granularity == "channel":
        return (shape[axis],)
    assert spec.group_size is not None
    if shape[axis] % spec.group_size != 0:
        raise ValueError(
            f"QuantSpec.group_size={spec.group_size} does not divide dimension {axis} of size {shape[axis]}"
        )
    return shape[:axis] + (shape[axis] // spec.group_size,) + shape[axis + 1 :]


def check_qparams(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> QParams:
    """Validate ``scale`` and ``zero_point`` for ``x`` under ``spec``; return them normalized.

    Returns ``(scale, zero_point)`` reshaped to :func:`qparams_shape`, scale as a
    floating tensor in ``x``'s dtype (float32 for integer ``x``) and zero point as int32.
    Raises ``ValueError`` naming the problem: wrong number of elements, a scale that is
    not finite and positive, a non-power-of-two scale under ``scale="pow2"``, a zero
    point that is not an integer, lies outside the code range, or is non-zero for a
    symmetric spec.
    """
    if not isinstance(scale, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=torch.float32)
    if not isinstance(zero_point, torch.Tensor):
        zero_point = torch.as_tensor(zero_point)
    shape = qparams_shape(x.shape, spec)
    numel = math.prod(shape)
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if t.numel() != numel:
            raise ValueError(
                f"{name} has {t.numel()} elements but granularity={spec.granularity!r} for input of shape "
                f"{tuple(x.shape)} needs shape {shape}"
            )
    fdtype = x.dtype if x.is_floating_point() else torch.float32
    s = scale.detach()
    if not s.is_floating_point():
        raise ValueError(f"scale must be a floating tensor, got {scale.dtype}")
    if not bool(torch.all(torch.isfinite(s) & (s > 0))):
        raise ValueError(f"scale must be finite and > 0, got min {float(s.min())}")
    if spec.scale == "pow2":
        mant, _ = torch.frexp(s.double())
        if not bool(torch.all(mant == 0.5)):
            raise ValueError("scale must be a power of two when QuantSpec.scale='pow2'")
    z = zero_point.detach()
    if z.is_floating_point():
        if not bool(torch.all(z == torch.round(z))):
            raise ValueError("zero_point must be integer-valued")
    zmin, zmax = (0, 0) if spec.symmetric else spec.code_range
    if bool(torch.any((z < zmin) | (z > zmax))):
        what = "0 for a symmetric spec" if spec.symmetric else f"within the code range [{zmin}, {zmax}]"
        raise ValueError(f"zero_point must be {what}, got values in [{int(z.min())}, {int(z.max())}]")
    return scale.reshape(shape).to(fdtype), zero_point.reshape(shape).to(torch.int32)


def _broadcastable(t: torch.Tensor, x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View ``t`` (of :func:`qparams_shape`) so it broadcasts against ``_grouped(x)``."""
    if spec.granularity == "tensor":
        return t.reshape(())
    axis = _normalized_axis(x.dim(), spec)
    if spec.granularity == "channel":
        return t.reshape((-1,) + (1,) * (x.dim() - axis - 1))
    return t.unsqueeze(axis + 1)


def _grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``x`` with the group axis split into ``(n_groups, group_size)`` (a view)."""
    if spec.granularity != "group":
        return x
    axis = _normalized_axis(x.dim(), spec)
    assert spec.group_size is not None
    return x.unflatten(axis, (x.shape[axis] // spec.group_size, spec.group_size))


def _codes_float(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unclamped rounded codes ``round(x * inv) + z`` (float) and clamped codes (float)."""
    if spec.is_binary:
        q = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        q = torch.where(torch.isnan(x), x, q)
        return x * torch.reciprocal(s), q
    scaled = x * torch.reciprocal(s)
    if spec.rounding == "stochastic":
        r = round_stochastic(scaled, generator)
    else:
        r = rounding_fn(spec.rounding)(scaled)
    r = r + z.to(x.dtype)
    return r, torch.clamp(r, spec.qmin, spec.qmax)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    spec: QuantSpec,
    *,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(x * (1/s)) + z, qmin, qmax)`` as an int32 tensor.

    ``x`` is a floating tensor of any shape; the codes have the same shape. Raises
    ``ValueError`` on NaN or +-Inf input and on invalid quantization parameters.
    """
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating tensor, got {x.dtype}")
    s, z = check_qparams(x, scale, zero_point, spec)
    if not bool(torch.all(torch.isfinite(x))):
        raise ValueError("quantize: input contains NaN or Inf; no integer code represents it")
    xg = _grouped(x, spec)
    _, q = _codes_float(xg, _broadcastable(s, x, spec), _broadcastable(z, x, spec), spec, generator)
    return q.to(torch.int32).reshape(x.shape)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Real values ``(q - z) * s`` in the dtype of ``scale`` (float32 if it is not floating).

    ``q`` is an integer tensor of codes; codes outside the spec's range raise ``ValueError``.
    """
    if q.is_floating_point() or q.is_complex():
        raise TypeError(f"dequantize expects integer codes, got {q.dtype}")
    if q.numel() and (int(q.min()) < spec.qmin or int(q.max()) > spec.qmax):
        raise ValueError(f"codes outside the range [{spec.qmin}, {spec.qmax}] of {spec.describe()}")
    if spec.is_binary and bool(torch.any(q == 0)):
        raise ValueError("binary codes must be -1 or +1, found 0")
    fdtype = scale.dtype if isinstance(scale, torch.Tensor) and scale.is_floating_point() else torch.float32
    s, z = check_qparams(q.to(fdtype), scale, zero_point, spec)
    qg = _grouped(q, spec)
    out = (qg - _broadcastable(z, q, spec)).to(fdtype) * _broadcastable(s, q, spec)
    return out.reshape(q.shape)


class _FakeQuantizeSTE(torch.autograd.Function):
    """Fake quantization with a masked straight-through gradient (one Function, one mask)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        s: torch.Tensor,
        z: torch.Tensor,
        spec: QuantSpec,
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        r, q = _codes_float(x, s, z, spec, generator)
        if spec.is_binary:
            inside = r.abs() <= 1.0
            out = q * s
        else:
            inside = (r >= spec.qmin) & (r <= spec.qmax)
            out = (q - z.to(x.dtype)) * s
        ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        (inside,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * inside, None, None, None, None


def _uses_torch_kernel(x: torch.Tensor, spec: QuantSpec) -> bool:
    # torch's per-channel op refuses a zero point outside [qmin, qmax], which a symmetric
    # spec has when its code range excludes 0 (unsigned narrow: qmin = 1).
    return (
        spec.rounding == "half_even"
        and not spec.is_binary
        and x.dtype == torch.float32
        and (not spec.symmetric or spec.qmin <= 0)
    )


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    spec: QuantSpec,
    *,
    generator: Optional[torch.Generator] = None,
    validate: bool = True,
) -> torch.Tensor:
    """Quantize-dequantize ``x``: ``(clamp(round(x * (1/s)) + z, qmin, qmax) - z) * s``.

    Differentiable with the masked straight-through estimator (see the module doc).
    With ``rounding="half_even"`` and float32 input this runs PyTorch's fused
    fake-quant kernels (per tensor, per channel, and per group through a reshape to
    per channel); other modes and dtypes run one custom autograd Function. Pass
    ``validate=False`` only with parameters already returned by :func:`check_qparams`.
    """
    if not x.is_floating_point():
        raise TypeError(f"fake_quantize expects a floating tensor, got {x.dtype}")
    if validate:
        scale, zero_point = check_qparams(x, scale, zero_point, spec)
    if _uses_torch_kernel(x, spec):
        out = _fake_quantize_torch(x, scale, zero_point, spec)
    else:
        xg = _grouped(x, spec)
        out = _FakeQuantizeSTE.apply(
            xg, _broadcastable(scale, x, spec), _broadcastable(zero_point, x, spec), spec, generator
        ).reshape(x.shape)
    return _apply_nonfinite_policy(x, out, scale, zero_point, spec)


def _fake_quantize_torch(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if spec.granularity == "tensor":
        return torch.fake_quantize_per_tensor_affine(x, s.reshape(()), z.reshape(()), spec.qmin, spec.qmax)
    axis = _normalized_axis(x.dim(), spec)
    if spec.granularity == "channel":
        return torch.fake_quantize_per_channel_affine(x, s, z, axis, spec.qmin, spec.qmax)
    # per group: groups along `axis` become channels of a (n_rows, group_size) matrix.
    assert spec.group_size is not None
    moved = x.movedim(axis, -1)
    rows = moved.reshape(-1, spec.group_size)
    out = torch.fake_quantize_per_channel_affine(
        rows, s.movedim(axis, -1).reshape(-1), z.movedim(axis, -1).reshape(-1), 0, spec.qmin, spec.qmax
    )
    return out.reshape(moved.shape).movedim(-1, axis)


def _apply_nonfinite_policy(
    x: torch.Tensor, out: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec
) -> torch.Tensor:
    """NaN -> NaN, +Inf -> (qmax - z) * s, -Inf -> (qmin - z) * s, zero gradient there."""
    if x.numel() == 0:
        return out
    # One reduction instead of isfinite(x).all() (three passes on CPU): min and max
    # propagate NaN and show +-Inf, so both are finite exactly when every element is.
    x_min, x_max = torch.aminmax(x.detach())
    if bool(torch.isfinite(x_min) & torch.isfinite(x_max)):
        return out
    finite = torch.isfinite(x)
    lo = _grouped(torch.full_like(x, float(spec.qmin)), spec) - _broadcastable(z, x, spec)
    hi = _grouped(torch.full_like(x, float(spec.qmax)), spec) - _broadcastable(z, x, spec)
    sb = _broadcastable(s, x, spec).detach()
    lo = (lo * sb).reshape(x.shape)
    hi = (hi * sb).reshape(x.shape)
    if spec.is_binary:
        lo, hi = -sb.expand_as(_grouped(x, spec)).reshape(x.shape), sb.expand_as(_grouped(x, spec)).reshape(x.shape)
    xd = x.detach()
    fixed = torch.where(torch.isnan(xd), xd, torch.where(xd > 0, hi, lo))
    return torch.where(finite, out, fixed)
