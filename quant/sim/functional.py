"""Functional quantization: ``quantize``, ``dequantize`` and ``fake_quantize``.

Arithmetic contract (float scales; the datapath-exact variants live in the reference)::

    inv = 1 / s                        (in the dtype of x, correctly rounded; float32 for a
                                        float16 / bfloat16 x, whose result is cast back)
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
point (learned quantizers are in ``quant.sim.learned``).

Idempotence: ``fake_quantize`` applied twice equals applied once for the round-to-nearest
modes, and for every mode when ``s`` is a power of two. With ``floor`` and another scale,
``((q - z) * s) * fl(1/s)`` can land just below ``q - z`` in floating point, so a second
application may drop one step: the reciprocal multiplication is the contract (it is what
PyTorch and FBGEMM compute), not exact rational division.

>>> import torch
>>> spec = QuantSpec(bits=4)
>>> quantize(torch.tensor([-1.0, 0.26, 0.25, 9.0]), torch.tensor(0.5), torch.tensor(0), spec).tolist()
[-2, 1, 0, 7]
>>> fake_quantize(torch.tensor([-1.0, 0.26, 9.0]), torch.tensor(0.5), torch.tensor(0), spec).tolist()
[-1.0, 0.5, 3.5]
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from quant.reference.rounding import round_to_integer
from quant.sim.fused import StraightThrough, fake_quantize_fused, fused_applies
from quant.contract.spec import QuantSpec

__all__ = [
    "QParams",
    "broadcast_qparams",
    "check_qparams",
    "group_view",
    "normalized_axis",
    "relative_code_bounds",
    "rounded_codes",
    "qparams_shape",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_values",
]

QParams = tuple[torch.Tensor, torch.Tensor]


def normalized_axis(x_dim: int, spec: QuantSpec) -> int:
    """``spec.axis`` as a non-negative index into ``x_dim`` dimensions (ValueError if out of range)."""
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
    axis = normalized_axis(len(shape), spec)
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
    zmin, zmax = (0, 0) if spec.symmetric else spec.code_range
    if z.dtype == torch.bool or z.is_complex():
        raise ValueError(f"zero_point must be an integer tensor in [{zmin}, {zmax}], got dtype {z.dtype}")
    if z.is_floating_point():
        if not bool(torch.all(torch.isfinite(z))):
            bad = float(z[~torch.isfinite(z)].reshape(-1)[0])
            raise ValueError(f"zero_point must be a finite integer in [{zmin}, {zmax}], got {bad}")
        if not bool(torch.all(z == torch.round(z))):
            raise ValueError(f"zero_point must be integer-valued (an integer in [{zmin}, {zmax}])")
    if bool(torch.any((z < zmin) | (z > zmax))):
        what = "0 for a symmetric spec" if spec.symmetric else f"within the code range [{zmin}, {zmax}]"
        raise ValueError(f"zero_point must be {what}, got values in [{int(z.min())}, {int(z.max())}]")
    return scale.reshape(shape).to(fdtype), zero_point.reshape(shape).to(torch.int32)


def broadcast_qparams(t: torch.Tensor, x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View ``t`` (of :func:`qparams_shape`) so it broadcasts against ``group_view(x)``."""
    if spec.granularity == "tensor":
        return t.reshape(())
    axis = normalized_axis(x.dim(), spec)
    if spec.granularity == "channel":
        return t.reshape((-1,) + (1,) * (x.dim() - axis - 1))
    return t.unsqueeze(axis + 1)


def group_view(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``x`` with the group axis split into ``(n_groups, group_size)`` (a view)."""
    if spec.granularity != "group":
        return x
    axis = normalized_axis(x.dim(), spec)
    assert spec.group_size is not None
    n_groups = x.shape[axis] // spec.group_size
    return x.reshape(x.shape[:axis] + (n_groups, spec.group_size) + x.shape[axis + 1 :])


def rounded_codes(
    x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, spec: QuantSpec, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unclamped rounded codes ``round(x * inv) + z`` (float) and clamped codes (float)."""
    if spec.is_binary:
        q = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        q = torch.where(torch.isnan(x), x, q)
        return x * torch.reciprocal(s), q
    r = round_to_integer(x * torch.reciprocal(s), spec.rounding, generator) + z.to(x.dtype)
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
    if x.dtype in _HALF_DTYPES:  # computed in float32 (see fake_quantize)
        x = x.to(torch.float32)
    s, z = check_qparams(x, scale, zero_point, spec)
    if not bool(torch.all(torch.isfinite(x))):
        raise ValueError("quantize: input contains NaN or Inf; no integer code represents it")
    xg = group_view(x, spec)
    _, q = rounded_codes(xg, broadcast_qparams(s, x, spec), broadcast_qparams(z, x, spec), spec, generator)
    return q.to(torch.int32).reshape(x.shape)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Real values ``(q - z) * s`` in the dtype of ``scale`` (float32 if it is not floating).

    ``q`` is an integer tensor of codes; codes outside the spec's range raise ``ValueError``.
    """
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"dequantize expects integer codes (an integer dtype), got {q.dtype}")
    if q.numel() and (int(q.min()) < spec.qmin or int(q.max()) > spec.qmax):
        raise ValueError(f"codes outside the range [{spec.qmin}, {spec.qmax}] of {spec.describe()}")
    if spec.is_binary and bool(torch.any(q == 0)):
        raise ValueError("binary codes must be -1 or +1, found 0")
    fdtype = scale.dtype if isinstance(scale, torch.Tensor) and scale.is_floating_point() else torch.float32
    s, z = check_qparams(q.to(fdtype), scale, zero_point, spec)
    qg = group_view(q, spec)
    out = (qg - broadcast_qparams(z, q, spec)).to(fdtype) * broadcast_qparams(s, q, spec)
    return out.reshape(q.shape)


def relative_code_bounds(
    z: torch.Tensor, spec: QuantSpec, dtype: torch.dtype
) -> tuple[Union[float, torch.Tensor], Union[float, torch.Tensor]]:
    """``(qmin - z, qmax - z)``: the bounds of ``round(x/s)`` that keep ``round(x/s) + z``
    in the code range. Plain numbers when ``z`` is known on the host without a device
    synchronization (symmetric specs: ``z = 0``; a single zero point in CPU memory),
    else tensors in ``dtype`` broadcasting like ``z``.

    >>> relative_code_bounds(torch.tensor(3), QuantSpec(bits=4, signed=False, symmetric=False), torch.float32)
    (-3.0, 12.0)
    """
    if spec.symmetric:
        return float(spec.qmin), float(spec.qmax)
    if z.numel() == 1 and z.device.type == "cpu":
        zi = int(z.reshape(()))
        return float(spec.qmin - zi), float(spec.qmax - zi)
    zf = z.to(dtype)
    return float(spec.qmin) - zf, float(spec.qmax) - zf


def fake_quantize_values(
    x: torch.Tensor,
    s: torch.Tensor,
    z: torch.Tensor,
    spec: QuantSpec,
    generator: Optional[torch.Generator],
    need_mask: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The values of :func:`fake_quantize` on grouped ``x`` with broadcastable ``s``/``z`` (already checked)
    and, when ``need_mask``, its straight-through gradient mask (0/1 in ``x``'s dtype): the torch path."""
    mask: Optional[torch.Tensor] = None
    if spec.is_binary:
        r, q = rounded_codes(x, s, z, spec, generator)
        if need_mask:
            mask = torch.empty_like(x)
            torch.le(r.abs(), 1.0, out=mask)
        return q * s, mask
    lo, hi = relative_code_bounds(z, spec, x.dtype)
    scaled = x * torch.reciprocal(s)
    r = scaled.round_() if spec.rounding == "half_even" else round_to_integer(scaled, spec.rounding, generator)
    q = torch.clamp(r, lo, hi)  # type: ignore[arg-type]
    if need_mask:
        mask = torch.empty_like(x)
        torch.eq(q, r, out=mask)
    return q.mul_(s), mask


#: Input dtypes simulated in float32 (their scales and reciprocals would not be finite in their own dtype).
_HALF_DTYPES = (torch.float16, torch.bfloat16)


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

    Differentiable with the masked straight-through estimator (see the module doc). A CPU float32
    call goes to the one-pass C loops of :mod:`quant.sim.fused` where they take it (the same values,
    a one-byte mask); otherwise one autograd Function serves every granularity and rounding mode,
    bit-identical to PyTorch's
    ``fake_quantize_per_tensor_affine``/``fake_quantize_per_channel_affine`` under
    ``half_even`` (up to the sign of zero). Pass ``validate=False`` only with parameters
    already returned by :func:`check_qparams`. A float16 or bfloat16 ``x`` is quantized in float32
    and the result cast back to its dtype.
    """
    if not x.is_floating_point():
        raise TypeError(f"fake_quantize expects a floating tensor, got {x.dtype}")
    if x.dtype in _HALF_DTYPES:
        # float16 / bfloat16: in float32, result cast back. In the input's own dtype a small scale's
        # reciprocal overflows (zeros become NaN) and the products round differently from float32.
        s32 = scale.to(torch.float32) if isinstance(scale, torch.Tensor) else scale
        out32 = fake_quantize(x.to(torch.float32), s32, zero_point, spec, generator=generator, validate=True)
        return out32.to(x.dtype)
    if validate:
        scale, zero_point = check_qparams(x, scale, zero_point, spec)
    if fused_applies(x, scale, spec):  # one pass in C, the same values (quant.sim.fused)
        if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
            fused: torch.Tensor = StraightThrough.apply(  # type: ignore[no-untyped-call]
                x, lambda t: fake_quantize_fused(t, scale, zero_point, spec, need_mask=True), scale
            )
            return fused
        return fake_quantize_fused(x, scale, zero_point, spec, need_mask=False)[0]
    if scale.dtype != x.dtype:
        scale = scale.to(x.dtype)
    args = (group_view(x, spec), broadcast_qparams(scale, x, spec), broadcast_qparams(zero_point, x, spec), spec, generator)
    out: torch.Tensor
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        xg, s, z = args[0], args[1], args[2]
        out = StraightThrough.apply(  # type: ignore[no-untyped-call]
            xg, lambda t: fake_quantize_values(t, s, z, spec, generator, need_mask=True), s
        )
    else:  # inference: no mask to compute or keep
        out, _ = fake_quantize_values(*args, need_mask=False)
    return out.reshape(x.shape)
