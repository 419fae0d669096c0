"""``accumulator_bound(handle, datapath)``: the worst-case accumulator of every weight layer, exactly.

A conv2d or linear output of the datapath accumulates (docs/arithmetic.md section 4, in canonical order:
the bias first, then the products) ::

    acc[c] = b[c] + sum_k (x_k - z_x) (q[c, k] - z_w[c])

with the weight codes ``q`` of the layer's weight quantizer (:meth:`quant.sim.quantizer.Quantizer.codes` of
the float weight, the codes the lowering puts into the program), the bias codes
``b = round(bias / (s_x s_w[c]))`` as the lowering makes them (``Datapath.quantize_rounding``, with a
post-training bias shift), the input zero point ``z_x`` of the layer's input quantizer and input codes
``x`` anywhere in ``[lo, hi]``: the datapath's activation operand range (``inputs="datapath"``, what the
hardware accepts) or the input scheme's code range (``inputs="scheme"``, what the program feeds the layer).
With ``u = q - z_w``, ``P[c] = sum of the positive u``, ``M[c] = sum of |negative u|`` (so
``||u||_1 = P + M``), ``a = z_x - lo`` and ``e = hi - z_x`` (both >= 0)::

    acc_max[c] = b[c] + e P[c] + a M[c]        (x_k = hi where u > 0, lo where u < 0)
    acc_min[c] = b[c] - a P[c] - e M[c]        (x_k = lo where u > 0, hi where u < 0)

Both are reached by the input named, and no input in range goes beyond them: every term
``(x_k - z_x) u_k`` lies in ``[-max(a u, -e u), max(e u, -a u)]``, an interval around 0 (binary inputs
``{-1, +1}``: ``[-|u|, |u|]``), so every prefix sum of the canonical order is inside ``[acc_min, acc_max]``
too and the accumulator saturates, wraps or refuses (``overflow``) for some input exactly when this
interval leaves ``[-2^(A-1), 2^(A-1) - 1]`` (``fits``). For a convolution this is the output position
that reads the whole kernel (any input at least the kernel's dilated extent, padding aside: padded taps hold
``z_x`` and add 0). Grouped convolutions sum over their group's ``C_in / groups`` channels; a
``ConvTranspose2d`` with kernel == stride (the one the lowering runs) accumulates each output from one input
pixel, ``C_in`` products per (channel, kernel offset), and its channel's bound is the widest of its
``kh kw`` offsets.

Layers: Linear, Conv1d, Conv2d (any groups) and ConvTranspose2d (kernel == stride, no padding, dilation or
groups) with a weight and an input scheme; any other module with a weight quantizer is listed in
:attr:`AccumulatorReport.skipped` with the reason. A datapath that cannot run a layer's schemes (weight bits
wider than ``w_bits``, asymmetric activations without zero points, ...) or a handle not calibrated is a
``ValueError`` naming the layer before anything is computed.

>>> import torch, quant
>>> from torch import nn
>>> from quant.sim.recipe import datapath_recipe
>>> fc = nn.Linear(4, 2, bias=False)
>>> fc.weight.data = torch.tensor([[-0.1, 0.7, -0.5, 0.4], [-0.4, 0.5, 0.7, 0.7]])
>>> dp = quant.Datapath.preset("w4a4_acc16_sat").with_(acc_bits=8, bias_bits=8)
>>> handle = quant.attach(fc, datapath_recipe(dp))
>>> with handle.calibrate():
...     _ = fc(torch.rand(8, 4))                      # inputs >= 0: the zero point is 0
>>> report = accumulator_bound(handle, dp)
>>> layer = report[""]
>>> layer.codes.tolist(), layer.input_zero_point      # u = q: P = 7 + 4, M = 1 + 5; a = 0, e = 15 (row 0)
([[-1, 7, -5, 4], [-4, 5, 7, 7]], 0)
>>> layer.acc_min.tolist(), layer.acc_max.tolist(), layer.acc_range, layer.fits   # 15 * 11 = 165 > 127
([-90, -60], [165, 285], (-128, 127), False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from quant.contract.datapath import Datapath
from quant.reference.rounding import rounding_fn
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter
from quant.sim.quantizer import Quantizer

__all__ = ["LayerAccumulatorBound", "AccumulatorReport", "accumulator_bound", "product_sum_extremes", "bits_needed"]

InputRange = Literal["datapath", "scheme"]
_BOUNDED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def product_sum_extremes(u: torch.Tensor, lo: int, hi: int, zero_point: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min, max)`` per row of ``sum_k (x_k - z) u[r, k]`` over every ``x`` in ``[lo, hi]^K``: int64 ``(R,)``
    for int64 weight offsets ``u (R, K)`` (module doc, without the bias). ``lo <= zero_point <= hi``.

    >>> product_sum_extremes(torch.tensor([[3, -2, 0]]), 0, 15, 4)    # e = 11, a = 4: 33 + 8, -(12 + 22)
    (tensor([-34]), tensor([41]))
    """
    if not lo <= zero_point <= hi:
        raise ValueError(f"product_sum_extremes: zero_point={zero_point} is outside the input range [{lo}, {hi}]")
    a, e = zero_point - lo, hi - zero_point
    pos = u.clamp(min=0).sum(dim=1)
    neg = (-u).clamp(min=0).sum(dim=1)
    return -(a * pos + e * neg), e * pos + a * neg


def bits_needed(lo: int, hi: int) -> int:
    """The narrowest two's-complement width (at least 1) holding every integer in ``[lo, hi]``.

    >>> bits_needed(-32768, 32767), bits_needed(-90, 285), bits_needed(0, 0)
    (16, 10, 1)
    """
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


@dataclass(frozen=True, eq=False)
class LayerAccumulatorBound:
    """One layer's accumulator extremes, per output channel (int64 tensors of ``(C_out,)``).

    ``acc_min``/``acc_max``: the smallest and largest accumulator any input in range gives, the bias
    included; ``l1``: ``||q - z_w||_1`` of each channel's weight codes (a ConvTranspose2d: the largest of
    its ``kh kw`` offsets'); ``bias``: the bias codes (None without a bias); ``codes``: the weight codes
    the bound is of (the layer's weight shape); ``acc_range``: the datapath's accumulator range;
    ``input_range`` and ``input_zero_point``: the input codes assumed.
    """

    name: str
    kind: str
    acc_min: torch.Tensor
    acc_max: torch.Tensor
    l1: torch.Tensor
    bias: Optional[torch.Tensor]
    codes: torch.Tensor
    acc_range: tuple[int, int]
    input_range: tuple[int, int]
    input_zero_point: int

    @property
    def worst_min(self) -> int:
        """The smallest accumulator of any channel."""
        return int(self.acc_min.min()) if self.acc_min.numel() else 0

    @property
    def worst_max(self) -> int:
        """The largest accumulator of any channel."""
        return int(self.acc_max.max()) if self.acc_max.numel() else 0

    @property
    def worst(self) -> int:
        """The worst-case accumulator magnitude ``max(|acc_min|, |acc_max|)`` over the channels."""
        return max(-self.worst_min, self.worst_max)

    @property
    def overflowing_channels(self) -> list[int]:
        """The output channels some input in range makes leave the accumulator range."""
        lo, hi = self.acc_range
        return [int(c) for c in ((self.acc_min < lo) | (self.acc_max > hi)).nonzero().reshape(-1).tolist()]

    @property
    def fits(self) -> bool:
        """True when no input in range can take any channel's accumulator out of ``acc_range``."""
        lo, hi = self.acc_range
        return lo <= self.worst_min and self.worst_max <= hi

    @property
    def bits_needed(self) -> int:
        """The narrowest accumulator that holds every channel's extremes."""
        return bits_needed(min(self.worst_min, 0), max(self.worst_max, 0))


@dataclass(frozen=True, eq=False)
class AccumulatorReport:
    """:func:`accumulator_bound`'s result: one :class:`LayerAccumulatorBound` per bounded layer, in the
    handle's module order, and ``skipped``: ``(name, reason)`` of the weight layers it does not bound."""

    datapath: Datapath
    inputs: str
    layers: tuple[LayerAccumulatorBound, ...]
    skipped: tuple[tuple[str, str], ...]

    def __getitem__(self, name: str) -> LayerAccumulatorBound:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no bounded layer {name!r}; layers: {', '.join(repr(x.name) for x in self.layers)}")

    @property
    def fits(self) -> bool:
        """True when no layer can overflow."""
        return all(layer.fits for layer in self.layers)

    @property
    def overflowing(self) -> list[str]:
        """The names of the layers some input in range makes overflow."""
        return [layer.name for layer in self.layers if not layer.fits]

    def table(self) -> str:
        """A Markdown table, one row per layer."""
        lines = [
            f"accumulator bound on {self.datapath.describe()} (inputs: {self.inputs} range)",
            "",
            "| layer | type | channels | max L1 | acc min | acc max | acc range | bits needed | fits |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for x in self.layers:
            l1 = int(x.l1.max()) if x.l1.numel() else 0
            lines.append(f"| {x.name or '(model)'} | {x.kind} | {x.l1.numel()} | {l1} | {x.worst_min} | {x.worst_max} "
                         f"| [{x.acc_range[0]}, {x.acc_range[1]}] | {x.bits_needed} | {'yes' if x.fits else 'NO'} |")  # fmt: skip
        for name, reason in self.skipped:
            lines.append(f"| {name or '(model)'} | skipped: {reason} | | | | | | | |")
        return "\n".join(lines)


def _transposed_problem(m: nn.ConvTranspose2d, wq: Quantizer) -> Optional[str]:
    kh, kw = m.kernel_size
    if (tuple(m.stride) != (kh, kw) or any(p != 0 for p in m.output_padding) or isinstance(m.padding, str)
            or any(p != 0 for p in m.padding) or any(d != 1 for d in m.dilation) or m.groups != 1):  # fmt: skip
        return (f"a ConvTranspose2d with kernel {tuple(m.kernel_size)} != stride {tuple(m.stride)} or with padding, "
                "dilation or groups: the datapath runs only kernel == stride")  # fmt: skip
    spec = wq.spec
    if spec.granularity == "group" or (spec.granularity == "channel" and spec.axis not in (1, -3)):
        return f"its weight scheme {spec.describe()} is not per tensor or per output channel (axis=1)"
    return None


def _plan(handle: QuantHandle, datapath: Datapath) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, str]]]:
    """The layers to bound and the weight layers skipped, after every check (nothing computed yet)."""
    bounded: list[tuple[str, nn.Module]] = []
    skipped: list[tuple[str, str]] = []
    for name, m in handle.modules.items():
        roles = handle.configs[name]
        if "weight" not in roles:
            continue
        kind = parametrize.type_before_parametrizations(m).__name__
        if not isinstance(m, _BOUNDED):
            skipped.append((name, f"{kind} has no accumulator of products on the datapath"))
            continue
        if "input" not in roles:
            skipped.append((name, f"{kind} without an input scheme does not run on the datapath"))
            continue
        wq, iq = handle.quantizer(name, "weight"), handle.quantizer(name, "input")
        if isinstance(m, nn.ConvTranspose2d):
            problem = _transposed_problem(m, wq)
            if problem is not None:
                skipped.append((name, problem))
                continue
        for role, q in (("weight", wq), ("input", iq)):
            if not q.calibrated:
                raise ValueError(f"accumulator_bound: module {name!r} ({kind}): its {role} quantizer has no "
                                 "quantization parameters yet: calibrate the handle first")  # fmt: skip
        for role, spec in (("weight", wq.spec), ("activation", iq.spec)):
            if role == "weight" and isinstance(m, nn.ConvTranspose2d) and spec.granularity == "channel":
                spec = spec.with_(axis=0)  # per output channel: the rows of the conv2d it runs as (as the lowering)
            try:
                datapath.check_spec(spec, role)
            except ValueError as err:
                raise ValueError(f"accumulator_bound: module {name!r} ({kind}) cannot run on datapath "
                                 f"{datapath.name}: {err}") from None  # fmt: skip
        bounded.append((name, m))
    return bounded, skipped


@torch.no_grad()
def _layer_bound(name: str, m: nn.Module, handle: QuantHandle, datapath: Datapath, inputs: InputRange
                 ) -> LayerAccumulatorBound:  # fmt: skip
    wq, iq = handle.quantizer(name, "weight"), handle.quantizer(name, "input")
    codes = wq.codes(original_parameter(m))
    s_w, z_w = wq.effective_qparams()
    s_x_t, z_x_t = iq.effective_qparams()
    s_x, z_x = float(s_x_t.reshape(-1)[0]), int(z_x_t.reshape(-1)[0])
    transposed = isinstance(m, nn.ConvTranspose2d)
    channel_axis = 1 if transposed else 0
    zeros = z_w.reshape(-1).to(torch.int64)
    if zeros.numel() > 1:
        shape = [1] * codes.dim()
        shape[channel_axis] = -1
        u = codes - zeros.reshape(shape)
    else:
        u = codes - zeros.reshape(())
    blocks = 1
    if transposed:  # (C_in, C_out, kh, kw): one accumulator of C_in products per (channel, offset)
        blocks = codes.shape[2] * codes.shape[3]
        rows = u.permute(1, 2, 3, 0).reshape(codes.shape[1] * blocks, codes.shape[0])
    else:
        rows = u.reshape(codes.shape[0], -1)
    channels = rows.shape[0] // blocks
    s_wc = s_w.reshape(-1).to(torch.float64)
    if s_wc.numel() == 1:
        s_wc = s_wc.expand(channels)
    bias_float = wq.layer_bias(getattr(m, "bias", None))
    bias: Optional[torch.Tensor] = None
    if bias_float is not None:
        bias = rounding_fn(datapath.quantize_rounding)(bias_float.detach().to(torch.float64) / (s_x * s_wc))
        bias = bias.to(torch.int64)
    lo, hi = datapath.a_range if inputs == "datapath" else (iq.spec.qmin, iq.spec.qmax)  # binary: (-1, 1)
    low, high = product_sum_extremes(rows, lo, hi, z_x)
    l1 = rows.abs().sum(dim=1)
    if bias is not None:
        b = bias.repeat_interleave(blocks) if blocks > 1 else bias
        low, high = low + b, high + b
    if blocks > 1:
        low = low.reshape(channels, blocks).amin(dim=1)
        high = high.reshape(channels, blocks).amax(dim=1)
        l1 = l1.reshape(channels, blocks).amax(dim=1)
    kind = parametrize.type_before_parametrizations(m).__name__
    return LayerAccumulatorBound(name=name, kind=kind, acc_min=low, acc_max=high, l1=l1, bias=bias, codes=codes,
                                 acc_range=datapath.acc_range, input_range=(lo, hi), input_zero_point=z_x)  # fmt: skip


def accumulator_bound(handle: QuantHandle, datapath: Datapath, *, inputs: InputRange = "datapath") -> AccumulatorReport:
    """The worst-case accumulator of every weight layer of ``handle`` on ``datapath`` (module doc).

    ``inputs``: ``"datapath"`` (input codes anywhere in the datapath's activation operand range, the
    default) or ``"scheme"`` (in the layer's input scheme's code range). Every check runs first:
    ``ValueError`` naming the layer for a scheme the datapath cannot run or a quantizer without qparams.
    """
    if not isinstance(handle, QuantHandle):
        raise TypeError(f"accumulator_bound: handle must be a QuantHandle, got {type(handle).__name__}")
    if not isinstance(datapath, Datapath):
        raise TypeError(f"accumulator_bound: datapath must be a Datapath, got {type(datapath).__name__}")
    if inputs not in ("datapath", "scheme"):
        raise ValueError(f"accumulator_bound: inputs={inputs!r} is not one of 'datapath', 'scheme'")
    bounded, skipped = _plan(handle, datapath)
    layers = tuple(_layer_bound(name, m, handle, datapath, inputs) for name, m in bounded)
    return AccumulatorReport(datapath=datapath, inputs=inputs, layers=layers, skipped=tuple(skipped))

