"""A2Q: accumulator-aware weight quantization (Colbert et al. 2023), the arithmetic of ``learn="a2q"``.

A2Q trains weights whose integer codes can never overflow a ``P``-bit accumulator for any input codes
in range: with ``T`` the L1 limit of the target (:class:`quant.contract.accumulator.AccumulatorTarget`,
``T = floor((2^(P-1) - 1) / D)``, ``D`` the largest input offset ``|x - z_x|``: ``2^N - 1`` for N-bit
unsigned inputs or inputs with a zero point, ``2^(N-1)`` for signed inputs without one), every output
channel's symmetric codes satisfy ``||q||_1 <= T``, so ``|sum_k (x_k - z_x) q_k| <= D T <= 2^(P-1) - 1``
(a layer's bias is added into the same accumulator on top; :func:`quant.sim.accumulator.accumulator_bound`
reports the total). Per output channel ``c`` (the spec's axis), with ``v`` the float weight (the module's
own parameter), ``s`` the learned step and ``g`` the learned norm (both of qparams shape ``(C,)``)::

    s'   = max(s, eps)   (rounded up to a power of two for scale="pow2" specs)      as LSQ's step
    g'   = clamp(g, 0, s' T)                                                       the paper's norm cap
    u_k  = (v_k / ||v_c||_1) * (g' / s')        (0 for an all-zero channel)         weight normalization
    q_k  = clamp(trunc(u_k), qmin, qmax)                                            round toward zero
    w^_k = q_k * s'

``sum_k |u_k| = g' / s' <= T``, and rounding toward zero and clamping to the symmetric code range only
shrink magnitudes, so ``||q||_1 <= sum_k |u_k| <= T`` by construction. ``g' / s'`` is computed as
``clamp(g / s', 0, T)``, which is exactly ``T`` where the cap binds, so a channel of one weight gets the code
``T`` itself (when ``T <= qmax``). The codes are computed in float64
(:func:`a2q_codes`): the relative error of the computed ``sum |u_k|`` is then below ``(K + 4) 2^-53`` for
``K`` codes per channel, so ``sum_k |trunc(u_k)| <= floor(T (1 + (K + 4) 2^-53)) = T`` whenever
``T (K + 4) < 2^53``: for every limit (``T < 2^31``) and any channel of fewer than ``2^22`` codes.
:meth:`quant.sim.quantizer.Quantizer.codes` checks it exactly all the same. The spec's rounding mode is not used (A2Q
needs truncation), so only the default ``half_even`` is accepted; weights must be signed, symmetric and per
output channel (:func:`check_a2q_spec`).

Gradients (straight-through through ``trunc``, as LSQ): ``w^ = q s' + (clamp(u) - clamp(u)|detached) s'``
has the value ``q s'`` exactly and the gradients of ``clamp(u) s'``: to ``v`` through the weight
normalization (``g' v / ||v||_1``), to ``g`` where ``0 < g < s' T`` (none where the cap binds: there
``u = T v / ||v||_1`` does not depend on ``g`` or ``s``), and to ``s`` LSQ's ``q - u`` inside the code range
and ``q`` outside (and where the cap binds), scaled by ``grad_scale``
(``1 / sqrt(K qmax)``, :func:`quant.sim.learned.lsq_grad_scale`).

Initialization (:meth:`quant.sim.quantizer.Quantizer.compute_qparams`): ``s`` from the observer (min-max
per channel by default), ``g = ||v||_1`` of the observed weight, so ``g' v / ||v||_1 = v`` wherever the cap
does not bind.

>>> import torch
>>> from quant.contract.spec import QuantSpec
>>> spec = QuantSpec(bits=4, granularity="channel", axis=0)
>>> v = torch.tensor([[0.9, -0.6, 0.3, 0.2], [0.05, 0.0, -0.1, 0.0]])
>>> s, g = torch.tensor([0.1, 0.1]), a2q_l1(v, spec)        # g = ||v||_1 = [2.0, 0.15]
>>> a2q_codes(v, s, g, spec, limit=12).tolist()             # row 0 capped at ||u||_1 = 12: u = 5.4 -3.6 1.8 1.2
[[5.0, -3.0, 1.0, 1.0], [0.0, 0.0, -1.0, 0.0]]
"""

from __future__ import annotations

from typing import Optional

import torch

from quant.contract.spec import QuantSpec
from quant.sim.functional import broadcast_qparams
from quant.sim.learned import lsq_effective_scale
from quant.sim.observers import reduce_to_qparams_shape

__all__ = ["check_a2q_spec", "a2q_l1", "a2q_codes", "a2q_fake_quantize"]


def check_a2q_spec(spec: QuantSpec, owner: str) -> None:
    """``ValueError`` naming ``owner`` and the field unless ``spec`` is signed, symmetric, per channel, at least 2
    bits and has the default rounding (A2Q rounds toward zero)."""
    bad: Optional[str] = None
    if not spec.signed:
        bad = "QuantSpec.signed=False; A2Q needs signed weight codes (signed=True)"
    elif not spec.symmetric:
        bad = "QuantSpec.symmetric=False; A2Q needs symmetric weights (zero point 0: symmetric=True)"
    elif spec.bits < 2:
        bad = f"QuantSpec.bits={spec.bits}; A2Q needs at least 2 bits (binary codes cannot be 0)"
    elif spec.granularity != "channel":
        bad = (f"QuantSpec.granularity={spec.granularity!r}; A2Q bounds the L1 norm of each output channel: "
               "use granularity='channel' (axis=0, or 1 for transposed convolutions)")  # fmt: skip
    elif spec.rounding != "half_even":
        bad = (f"QuantSpec.rounding={spec.rounding!r}; A2Q rounds toward zero by construction, so the spec's mode "
               "would be ignored: leave it at the default 'half_even'")  # fmt: skip
    if bad is not None:
        raise ValueError(f"{owner}: learn='a2q' cannot take {spec.describe()}: {bad}")


def a2q_l1(v: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``||v_c||_1`` per output channel (qparams shape, ``v``'s dtype; differentiable)."""
    return reduce_to_qparams_shape(v.abs(), spec, "sum")


def _normalized(v: torch.Tensor, ratio: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``(v / ||v_c||_1) * ratio_c`` (0 for an all-zero channel, whose ``v`` is 0)."""
    l1 = a2q_l1(v, spec)
    safe = torch.where(l1 > 0, l1, torch.ones_like(l1))
    return (v / broadcast_qparams(safe, v, spec)) * broadcast_qparams(ratio, v, spec)


@torch.no_grad()
def _codes(v: torch.Tensor, scale: torch.Tensor, norm: torch.Tensor, spec: QuantSpec, limit: int) -> torch.Tensor:
    v64, s64, g64 = v.detach().to(torch.float64), scale.detach().to(torch.float64), norm.detach().to(torch.float64)
    u = _normalized(v64, torch.clamp(g64 / s64, 0.0, float(limit)), spec)  # g' / s' (module doc)
    return torch.trunc(u).clamp_(spec.qmin, spec.qmax)


def a2q_codes(v: torch.Tensor, scale: torch.Tensor, norm: torch.Tensor, spec: QuantSpec, limit: int) -> torch.Tensor:
    """The A2Q codes of ``v`` (float64, ``v``'s shape): ``clamp(trunc(g' v / (s ||v||_1)), qmin, qmax)`` with
    ``g' = clamp(norm, 0, scale * limit)`` (module doc). ``scale`` is the effective step (``s'``, positive;
    qparams shape), ``norm`` the learned norm; every channel's L1 norm is at most ``limit``. ``ValueError`` for
    non-finite weights or parameters."""
    for name, t in (("weight", v), ("step", scale), ("norm", norm)):
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"a2q_codes: the {name} must be finite")
    return _codes(v, scale, norm, spec, limit)


def a2q_fake_quantize(
    v: torch.Tensor, scale: torch.Tensor, norm: torch.Tensor, spec: QuantSpec, limit: int, grad_scale: float
) -> torch.Tensor:
    """A2Q fake quantization of ``v`` (module doc): the value ``q * s'`` with ``q = a2q_codes(...)``, in ``v``'s
    dtype; straight-through gradients to ``v``, ``scale`` (the learned step, raw) and ``norm``."""
    s_eff = lsq_effective_scale(scale, spec).to(v.dtype)
    s_g = s_eff.detach() + (s_eff - s_eff.detach()) * grad_scale  # the value s' exactly, the gradient scaled (LSQ)
    ratio = torch.clamp(norm.to(v.dtype) / s_g, 0.0, float(limit))  # g' / s': no gradient where the cap binds
    u = torch.clamp(_normalized(v, ratio, spec), spec.qmin, spec.qmax)
    q = _codes(v, s_eff, norm, spec, limit).to(v.dtype)  # no host synchronization
    s_b = broadcast_qparams(s_g, v, spec)
    return q * s_b + (u - u.detach()) * s_b.detach()
