"""``nn.LSTM`` and ``nn.GRU`` on the integer datapath: what their lowering and exact simulation both compute.

A quantized ``nn.LSTM`` (:mod:`quant.sim.recurrent`) becomes one ``lstm`` op (docs/arithmetic.md section 6.6)
per layer and direction, an ``nn.GRU`` one ``gru`` op (section 6.7, ``M_hq = s_h 2^15``), each reading the codes
the previous one writes:

* the first layer's input codes are the module's ``input`` quantizer's; every layer's output codes are its
  ``hidden`` quantizer's (the next step's operand, so the datapath's activation codes); a bidirectional
  layer is two ops (the second with ``reverse``), whose codes are requantized to qparams covering both
  and concatenated along the features;
* weight codes come from the ``weight_ih_l{k}`` / ``weight_hh_l{k}`` quantizers (one scale per gate row or
  per tensor), biases ``round(b_ih / (s_x s_ih))`` and ``round(b_hh / (s_h s_hh))``;
* ``M_ih = s_x s_ih 2^12`` and ``M_hh = s_h s_hh 2^12`` give Q3.12 gates whatever a ``gates`` scheme says (the
  datapath's gates are 16 bits), ``M_out = 2^-30 / s_h``;
* the cell state's scale is ``2^-k`` with the largest ``k <= 15`` whose int16 range covers the ``cell``
  quantizer's calibrated range, or ``k = 11`` (the range ``[-16, 16)``) without a cell quantizer.

Refused by name: ``batch_first=False`` (the program's tensors are batch first), ``proj_size``, initial states, a module in training mode with dropout, and a module without weight and
input schemes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from quant.contract.datapath import Datapath
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs
from quant.contract.spec import QuantSpec
from quant.lowering.attention import SiteQParams, _site
from quant.reference.rounding import rounding_fn
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter
from quant.sim.qparams import qparams_from_range

__all__ = ["LstmLayerPlan", "lstm_plan", "layer_attrs", "joined", "DEFAULT_CELL_SHIFT"]

#: The cell's scale ``2^-11`` (range ``[-16, 16)``) without a calibrated cell quantizer.
DEFAULT_CELL_SHIFT = 11


@dataclass(frozen=True)
class LstmLayerPlan:
    """One layer: input and hidden qparams, weight codes (int64) and zero points, bias codes, multipliers, ``k``."""

    x: SiteQParams
    h: SiteQParams
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    ih_zero_point: list[int]
    hh_zero_point: list[int]
    weight_spec: QuantSpec
    b_ih: Optional[torch.Tensor]
    b_hh: Optional[torch.Tensor]
    ih_multiplier: list[float]
    hh_multiplier: list[float]
    out_multiplier: float
    cell_shift: int  # the LSTM's cell scale 2^-k (0 for a GRU)
    reverse: bool = False
    hq_multiplier: float = 0.0  # the GRU's previous state to Q0.15, s_h 2^15 (0 for an LSTM)


def _cell_shift(handle: QuantHandle, name: str, key: str) -> int:
    """The largest ``k <= 15`` whose int16 cell of scale ``2^-k`` holds the ``key`` quantizer's range."""
    q = handle.quantizer(name, key)
    s, z = (float(t.reshape(-1)[0]) for t in q.effective_qparams())
    reach = max(abs((q.spec.qmin - z) * s), abs((q.spec.qmax - z) * s))
    if reach <= 0:
        return 15
    return max(0, min(15, math.floor(math.log2(32767.0 / reach))))


def _quantizer_keys(handle: QuantHandle, name: str) -> set[str]:
    return {role for n, role, _ in handle.quantizers() if n == name}


def layer_attrs(m: nn.Module, lp: LstmLayerPlan, dp: Datapath) -> Union[LstmAttrs, GruAttrs]:
    """The record of one layer and direction: an ``lstm`` for an ``nn.LSTM``, a ``gru`` for an ``nn.GRU``."""
    common: dict[str, Any] = dict(
        hidden=int(lp.w_hh.shape[1]), features=int(lp.w_ih.shape[1]), x_zero_point=lp.x.zero_point,
        h_zero_point=lp.h.zero_point, ih_zero_point=lp.ih_zero_point, hh_zero_point=lp.hh_zero_point,
        ih_multiplier=lp.ih_multiplier, hh_multiplier=lp.hh_multiplier, out_multiplier=lp.out_multiplier,
        reverse=lp.reverse, datapath=dp,
    )  # fmt: skip
    attrs: Union[LstmAttrs, GruAttrs]
    if isinstance(m, nn.LSTM):
        attrs = LstmAttrs.build(cell_shift=lp.cell_shift, **common)
    else:
        attrs = GruAttrs.build(hq_multiplier=lp.hq_multiplier, **common)
    attrs.check_biases(*(None if b is None else (b.numel(), int(b.min()), int(b.max())) for b in (lp.b_ih, lp.b_hh)))
    return attrs


def joined(sites: list[SiteQParams]) -> SiteQParams:
    """The qparams (of the first's spec) covering the real ranges of every one of ``sites``: the codes both
    directions of a bidirectional layer are concatenated in."""
    if len(sites) == 1:
        return sites[0]
    spec = sites[0].spec
    lo = min((spec.qmin - q.zero_point) * q.scale for q in sites)
    hi = max((spec.qmax - q.zero_point) * q.scale for q in sites)
    s, z = qparams_from_range(torch.tensor([lo]), torch.tensor([hi]), spec)
    return SiteQParams(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), spec)


def lstm_plan(m: nn.Module, handle: QuantHandle, name: str, dp: Datapath) -> list[list[LstmLayerPlan]]:
    """The integer parameters of every layer of ``m`` (an ``nn.LSTM`` or ``nn.GRU``, module ``name``) on ``dp``,
    one plan per direction; a layer after a bidirectional one reads both directions' codes joined
    (:func:`joined`). ``ValueError`` naming what cannot run."""
    assert isinstance(m, (nn.LSTM, nn.GRU))
    lstm = isinstance(m, nn.LSTM)
    if not m.batch_first:
        raise ValueError("batch_first=False: the program's tensors are batch first (build it with batch_first=True)")
    if lstm and m.proj_size > 0:
        raise ValueError(f"proj_size={m.proj_size} has no integer form here")
    if m.training and m.dropout > 0:
        raise ValueError("in training mode with dropout: lower the model in eval mode")
    configs = handle.configs.get(name, {})
    if "weight" not in configs or "input" not in configs:
        raise ValueError("needs a weight and an input scheme in the recipe")
    keys = _quantizer_keys(handle, name)
    layers: list[list[LstmLayerPlan]] = []
    x = _site(handle, name, "input")
    rnd = rounding_fn(dp.quantize_rounding)
    with torch.no_grad():
        for layer in range(m.num_layers):
            directions = []
            for sfx, reverse in ((f"_l{layer}", False), (f"_l{layer}_reverse", True))[: 2 if m.bidirectional else 1]:
                h = _site(handle, name, f"hidden{sfx}")
                codes, zeros, scales = [], [], []
                for kind in ("ih", "hh"):
                    wq = handle.quantizer(name, f"weight_{kind}{sfx}")
                    s_w, z_w = wq.effective_qparams()
                    codes.append(wq.codes(original_parameter(m, f"weight_{kind}{sfx}")))
                    zeros.append([int(v) for v in z_w.reshape(-1).tolist()])
                    scales.append(s_w.reshape(-1).to(torch.float64))
                    spec = wq.spec
                biases = []
                for kind, s_in, s_w in (("ih", x.scale, scales[0]), ("hh", h.scale, scales[1])):
                    b = getattr(m, f"bias_{kind}{sfx}", None) if m.bias else None
                    biases.append(None if b is None else rnd(b.detach().to(torch.float64) / (s_in * s_w)).to(torch.int64))
                cell_key = f"cell{sfx}"
                directions.append(LstmLayerPlan(
                    x=x, h=h, w_ih=codes[0], w_hh=codes[1], ih_zero_point=zeros[0], hh_zero_point=zeros[1],
                    weight_spec=spec, b_ih=biases[0], b_hh=biases[1],
                    ih_multiplier=(x.scale * scales[0] * 4096.0).tolist(),
                    hh_multiplier=(h.scale * scales[1] * 4096.0).tolist(), out_multiplier=2.0**-30 / h.scale,
                    cell_shift=(_cell_shift(handle, name, cell_key) if cell_key in keys else DEFAULT_CELL_SHIFT) if lstm else 0,
                    reverse=reverse, hq_multiplier=0.0 if lstm else h.scale * 2.0**15,
                ))  # fmt: skip
            layers.append(directions)
            x = joined([d.h for d in directions])
    return layers
