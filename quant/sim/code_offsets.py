"""Chosen codes: a quantizer's per-element code offsets, the result of post-training rounding algorithms.

Round-to-nearest gives each weight the code ``clamp(round(w/s) + z, qmin, qmax)``; AdaRound picks the
other neighbour for some weights, GPTQ moves codes further to compensate the errors of the columns it has
already quantized. Such a choice is held as an integer ``offset`` per element, relative to the spec's
rounding of ``w/s``, so that the float weight stays untouched (``handle.remove()`` restores it bit for bit)
and further QAT can still move it:

    r      = round(w * (1/s))                         (the spec's rounding; float32 products)
    code   = clamp(r + z + offset, qmin, qmax)
    value  = (code - z) * s                           (what the forward returns)
    mask   = (r + offset inside [qmin - z, qmax - z])  (the straight-through gradient's)

With ``offset = 0`` the code and the value are exactly those of :func:`quant.sim.functional.quantize`
and :func:`~quant.sim.functional.fake_quantize`. :func:`offsets_for_codes` is the inverse: the offsets that
make ``codes`` (integers in the code range) the ones chosen for ``w``.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> spec = QuantSpec(bits=4)                               # int4 symmetric, codes -8..7
>>> w, s, z = torch.tensor([0.26, -0.74, 0.5]), torch.tensor(0.25), torch.tensor(0, dtype=torch.int32)
>>> offset = torch.tensor([1, 0, -1], dtype=torch.int32)  # round up the first, down the last
>>> quantize_with_offsets(w, s, z, offset, spec).tolist()
[2, -3, 1]
>>> offsets_for_codes(w, s, z, torch.tensor([2, -3, 1]), spec).tolist()
[1, 0, -1]
"""

from __future__ import annotations

import torch

from quant.contract.spec import QuantSpec
from quant.sim.functional import broadcast_qparams, group_view, rounded_codes
from quant.sim.fused import StraightThrough

#: The largest offset magnitude: far beyond any code range, and small enough that ``r + offset`` stays exact
#: in float32 (2^22 < 2^24) for every ``r`` a code range can reach.
MAX_OFFSET = 1 << 22

__all__ = ["MAX_OFFSET", "check_code_offsets", "fake_quantize_with_offsets", "quantize_with_offsets", "offsets_for_codes"]


def check_code_offsets(offsets: torch.Tensor, shape: tuple[int, ...], spec: QuantSpec, owner: str) -> torch.Tensor:
    """``offsets`` as a contiguous int32 tensor after checking it fits a tensor of ``shape`` under ``spec``:
    integer dtype, the same shape, and a spec whose codes have neighbours to choose (not binary, a
    deterministic rounding). ``ValueError``/``TypeError`` naming ``owner`` otherwise."""
    if not isinstance(offsets, torch.Tensor) or offsets.is_floating_point() or offsets.is_complex() or offsets.dtype == torch.bool:
        what = offsets.dtype if isinstance(offsets, torch.Tensor) else type(offsets).__name__
        raise TypeError(f"{owner}: code offsets must be an integer tensor, got {what}")
    if tuple(offsets.shape) != tuple(shape):
        raise ValueError(f"{owner}: code offsets of shape {tuple(offsets.shape)} do not fit a tensor of shape {tuple(shape)}")
    if spec.is_binary:
        raise ValueError(f"{owner}: a binary spec ({spec.describe()}) has one code per sign: no offsets to choose")
    if spec.rounding == "stochastic":
        raise ValueError(f"{owner}: code offsets are relative to a deterministic rounding, not {spec.rounding!r}")
    if offsets.numel() and (int(offsets.min()) < -MAX_OFFSET or int(offsets.max()) > MAX_OFFSET):
        raise ValueError(f"{owner}: code offsets in [{int(offsets.min())}, {int(offsets.max())}] exceed "
                         f"+-{MAX_OFFSET}, beyond any code of {spec.describe()}")  # fmt: skip
    return offsets.to(torch.int32).contiguous()


def _offset_codes(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor, offsets: torch.Tensor, spec: QuantSpec
                  ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Grouped ``(r + z + offset, clamp(r + z + offset))`` in ``x``'s dtype for checked qparams."""
    xg = group_view(x, spec)
    s_b, z_b = broadcast_qparams(s.to(x.dtype), x, spec), broadcast_qparams(z, x, spec)
    unclamped, _ = rounded_codes(xg, s_b, z_b, spec, None)
    shifted = unclamped + group_view(offsets, spec).to(x.dtype)
    return shifted, torch.clamp(shifted, spec.qmin, spec.qmax)


def quantize_with_offsets(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, offsets: torch.Tensor,
                          spec: QuantSpec) -> torch.Tensor:  # fmt: skip
    """The int32 codes ``clamp(round(x/s) + z + offset, qmin, qmax)`` (module doc) of a finite float ``x``;
    ``scale``/``zero_point`` in the qparams shape of ``spec``, ``offsets`` of ``x``'s shape."""
    from quant.sim.functional import check_qparams

    x32 = x.detach().to(torch.float32)
    if not bool(torch.isfinite(x32).all()):
        raise ValueError("quantize_with_offsets: input contains NaN or Inf; no integer code represents it")
    s, z = check_qparams(x32, scale, zero_point, spec)
    _, codes = _offset_codes(x32, s, z, offsets, spec)
    return codes.to(torch.int32).reshape(x.shape)


def fake_quantize_with_offsets(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, offsets: torch.Tensor,
                               spec: QuantSpec) -> torch.Tensor:  # fmt: skip
    """The values ``(code - z) * s`` of :func:`quantize_with_offsets` with the straight-through gradient
    (``grad`` where ``r + offset`` lies inside the code range, else 0); ``scale``/``zero_point`` already
    checked (:func:`quant.sim.functional.check_qparams`)."""

    def compute(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s_b, z_b = broadcast_qparams(scale.to(t.dtype), t, spec), broadcast_qparams(zero_point, t, spec)
        shifted, codes = _offset_codes(t, scale, zero_point, offsets, spec)
        values = ((codes - z_b.to(t.dtype)) * s_b).reshape(t.shape)
        return values, (codes == shifted).to(t.dtype).reshape(t.shape)

    if x.dtype in (torch.float16, torch.bfloat16):  # in float32, as fake_quantize and quantize_with_offsets
        return fake_quantize_with_offsets(x.to(torch.float32), scale.to(torch.float32), zero_point, offsets, spec).to(x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        out: torch.Tensor = StraightThrough.apply(x, compute, scale)  # type: ignore[no-untyped-call]
        return out
    return compute(x.detach())[0]


def offsets_for_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, codes: torch.Tensor,
                      spec: QuantSpec) -> torch.Tensor:  # fmt: skip
    """The int32 offsets that make ``codes`` (integers within ``[qmin, qmax]``) the codes of ``x``:
    ``codes - (round(x/s) + z)``, so that :func:`quantize_with_offsets` gives ``codes`` back exactly."""
    from quant.sim.functional import check_qparams

    if codes.is_floating_point():
        if not bool(torch.equal(codes, codes.round())):
            raise ValueError("offsets_for_codes: codes must be integers")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < spec.qmin or int(c.max()) > spec.qmax):
        raise ValueError(f"offsets_for_codes: codes in [{int(c.min())}, {int(c.max())}] outside the code range "
                         f"[{spec.qmin}, {spec.qmax}] of {spec.describe()}")  # fmt: skip
    x32 = x.detach().to(torch.float32)
    s, z = check_qparams(x32, scale, zero_point, spec)
    unclamped, _ = _offset_codes(x32, s, z, torch.zeros(x.shape, dtype=torch.int32), spec)
    return (c - unclamped.reshape(x.shape).to(torch.int64)).to(torch.int32)
