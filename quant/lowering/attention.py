"""``nn.MultiheadAttention`` on the integer datapath: what its lowering and exact simulation both compute.

The attention of a quantized ``nn.MultiheadAttention`` (:mod:`quant.sim.attention`) becomes, for inputs
``(N, L, E)`` (``batch_first=True``, ``H`` heads of ``d = E / H``), every tensor in the qparams of the
quantizer of its role:

1. three ``linear`` in-projections (the rows of ``in_proj_weight``, or ``q/k/v_proj_weight``, as weight
   codes of the module's weight quantizers; biases ``round(b / (s_x s_w))``) to the ``query``, ``key`` and
   ``value`` codes, the query's ``1/sqrt(d)`` folded into its multiplier
   ``M_q = s_x s_w sqrt(1/d) / s_query`` (PyTorch scales ``Q`` by that factor before ``Q K^T``);
2. ``reshape``/``permute`` to heads: ``Q (N, H, L, d)``, ``K^T (N, H, d, S)``, ``V (N, H, S, d)``;
3. ``matmul`` to the ``scores`` codes, the integer ``softmax`` over the keys (codes of scale ``2^-b``),
   requantized to the ``attention`` codes when those differ, ``matmul`` by ``V`` to the ``context`` codes;
4. ``permute``/``reshape`` back to ``(N, L, E)`` and the out-projection ``linear`` (its weight quantizer on
   ``out_proj``) to the output's codes (the ``output`` quantizer, else the consumer's or the calibrated
   ones of the attention's output).

Refused by name: on a ``pow2`` datapath a head dimension that is not a power of 4 (``1/sqrt(d)`` is then
no power of two), ``batch_first=False`` (the program's tensors are batch first), masks and ``is_causal``
(an additive ``-inf`` has no code), ``bias_k``/``bias_v``, ``add_zero_attn``, a module in training mode with
dropout, and a module without weight and input schemes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec
from quant.reference.rounding import rounding_fn
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter

__all__ = ["Projection", "AttentionPlan", "attention_plan", "SiteQParams"]


@dataclass(frozen=True)
class SiteQParams:
    """The qparams of one attention tensor: scale, zero point and the quantizer's spec."""

    scale: float
    zero_point: int
    spec: QuantSpec


@dataclass(frozen=True)
class Projection:
    """One linear of the attention: int64 weight codes ``(out, in)``, their zero points and float64 scales (one
    or per output row), the int64 bias codes (or None) and the float64 multipliers to the output's codes."""

    codes: torch.Tensor
    zero_point: list[int]
    bias: Optional[torch.Tensor]
    multiplier: list[float]
    spec: QuantSpec


@dataclass(frozen=True)
class AttentionPlan:
    """Every integer parameter of one attention call (see the module doc)."""

    heads: int
    head_dim: int
    inputs: tuple[SiteQParams, SiteQParams, SiteQParams]  # query, key, value inputs
    sites: dict[str, SiteQParams]  # query, key, value, scores, attention, context
    projections: tuple[Projection, Projection, Projection]  # q, k, v
    out_projection: Projection


def _site(handle: QuantHandle, name: str, site: str) -> SiteQParams:
    q = handle.quantizer(name, site)
    s, z = q.effective_qparams()
    return SiteQParams(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), q.spec)


def _projection(codes: torch.Tensor, s_w: torch.Tensor, z_w: torch.Tensor, spec: QuantSpec, b: Optional[torch.Tensor],
                x: SiteQParams, y_scale: float, factor: float, dp: Datapath) -> Projection:  # fmt: skip
    """One projection of the attention from its weight codes (int64, the quantizer's: Quantizer.codes)."""
    s_wc = s_w.reshape(-1).to(torch.float64)
    bias = None
    if b is not None:
        bias = rounding_fn(dp.quantize_rounding)(b.detach().to(torch.float64) / (x.scale * s_wc)).to(torch.int64)
    multiplier = (x.scale * s_wc * factor / y_scale).reshape(-1).tolist()
    return Projection(codes, [int(v) for v in z_w.reshape(-1).tolist()], bias, multiplier, spec)


def attention_plan(
    m: nn.MultiheadAttention, handle: QuantHandle, name: str, dp: Datapath, *, same_key: bool, same_value: bool,
    output: SiteQParams,
) -> AttentionPlan:  # fmt: skip
    """The integer parameters of attention ``m`` (module ``name``) on ``dp``; ``same_key``/``same_value`` when
    the key/value inputs are the query's tensor (their codes are then the query's); ``output`` the output's
    qparams. ``ValueError`` naming what cannot run."""
    if not m.batch_first:
        raise ValueError("batch_first=False: the program's tensors are batch first (build it with batch_first=True)")
    if m.bias_k is not None or m.add_zero_attn:
        raise ValueError("bias_k/bias_v and add_zero_attn have no integer form here")
    if m.training and m.dropout > 0:
        raise ValueError("in training mode with dropout: lower the model in eval mode")
    configs = handle.configs.get(name, {})
    if "weight" not in configs or "input" not in configs:
        raise ValueError("needs a weight and an input scheme in the recipe")
    out_name = f"{name}.out_proj"
    if "weight" not in handle.configs.get(out_name, {}):
        raise ValueError(f"its out-projection {out_name!r} needs a weight scheme in the recipe")
    e, h = m.embed_dim, m.num_heads
    d = e // h
    if dp.requant == "pow2" and (d & (d - 1) or (d.bit_length() - 1) % 2):
        raise ValueError(f"the query's factor 1/sqrt({d}) is no power of two, which a pow2 datapath's multipliers "
                         "must be: the head dimension must be a power of 4")  # fmt: skip
    x_q = _site(handle, name, "input")
    x_k = x_q if same_key else _site(handle, name, "input_key")
    x_v = x_q if same_value else _site(handle, name, "input_value")
    sites = {s: _site(handle, name, s) for s in ("query", "key", "value", "scores", "attention", "context")}
    factors = (math.sqrt(1.0 / float(d)), 1.0, 1.0)
    outs = (sites["query"].scale, sites["key"].scale, sites["value"].scale)
    xs = (x_q, x_k, x_v)
    bias = m.in_proj_bias.detach() if m.in_proj_bias is not None else None
    projections = []
    with torch.no_grad():
        if m._qkv_same_embed_dim:
            wq = handle.quantizer(name, "weight")
            s_w, z_w = wq.effective_qparams()
            codes = wq.codes(original_parameter(m, "in_proj_weight"))
            for i in range(3):
                rows = slice(i * e, (i + 1) * e)
                s_i = s_w.reshape(-1)[rows].reshape(-1, 1) if s_w.numel() > 1 else s_w
                z_i = z_w.reshape(-1)[rows].reshape(-1, 1) if z_w.numel() > 1 else z_w
                spec = wq.spec
                projections.append(_projection(codes[rows], s_i, z_i, spec, None if bias is None else bias[rows], xs[i],
                                               outs[i], factors[i], dp))  # fmt: skip
        else:
            for i, (key, tensor) in enumerate((("weight", "q_proj_weight"), ("weight_k", "k_proj_weight"),
                                               ("weight_v", "v_proj_weight"))):  # fmt: skip
                wq = handle.quantizer(name, key)
                s_w, z_w = wq.effective_qparams()
                projections.append(_projection(wq.codes(original_parameter(m, tensor)), s_w, z_w, wq.spec,
                                               None if bias is None else bias[i * e:(i + 1) * e], xs[i], outs[i],
                                               factors[i], dp))  # fmt: skip
        oq = handle.quantizer(out_name, "weight")
        s_o, z_o = oq.effective_qparams()
        out_projection = _projection(oq.codes(original_parameter(m.out_proj, "weight")), s_o, z_o, oq.spec, m.out_proj.bias,
                                     sites["context"], output.scale, 1.0, dp)  # fmt: skip
    return AttentionPlan(h, d, (x_q, x_k, x_v), sites, (projections[0], projections[1], projections[2]), out_projection)
