"""Fast-mode quantization of ``nn.LSTM``/``nn.GRU`` (unrolled, every time step quantized the same way) and
of ``nn.LSTMCell``/``nn.GRUCell`` (each call is one step).

PyTorch runs a recurrent layer as one fused kernel, so hooks see neither its gates nor its states. With
quantizers attached, the module's forward becomes the unrolled recurrence below (PyTorch's equations,
gate order ``i, f, g, o`` for the LSTM and ``r, z, n`` for the GRU), with one quantizer per site and per
layer and direction, shared by every time step:

=========  ============================================================================================
``weight``  each ``weight_ih_l{k}[_reverse]`` and ``weight_hh_l{k}[_reverse]`` (its own quantizer; a
            per-channel scheme on axis 0 is per gate row)
``input``   the sequence the module receives
``gates``   the gate pre-activations: the LSTM's ``addmm(x W_ih^T + (b_ih + b_hh), h, W_hh^T)``; the GRU's two
            products ``x W_ih^T + b_ih`` and ``h W_hh^T + b_hh`` (two quantizers), before the reset gate
            scales the hidden part of ``n``
``cell``    the LSTM's cell state ``c_t`` (TFLite's integer LSTM keeps it in 16 bits)
``hidden``  the hidden state ``h_t``: the next step's matmul operand and the layer's output
``output``  the output sequence (the last layer's ``h_t``)
=========  ============================================================================================

``hidden`` takes the ``input`` scheme when the recipe does not set it (it is a matmul operand, like the
input); ``gates`` and ``cell`` stay float unless set, as accumulators do. ``num_layers``, ``bidirectional``,
``batch_first``, ``bias``, inter-layer ``dropout``, unbatched inputs and initial states are supported;
``proj_size > 0`` and packed sequences are refused (at attach and at call). With every quantizer disabled
the output equals the fused module's to float rounding (the order of the sums differs).

On CPU float32 data an LSTM layer runs as one autograd node (the fused recurrence): the same sites and
quantizers, the gates' activations and the cell update computed by the C loops of
:func:`quant.sim.fused.lstm_pointwise_at` (their sigmoid and tanh are within 3 ulp of the exact functions, and are
the ones of training and inference alike), and the backward through time written out, with the
straight-through gradient (LSQ's at its sites) at every site and step. Its steps write into buffers of
the whole sequence; the hidden site, when its quantizer can run in C (:meth:`Quantizer.host_site`: min-max
or moving-average observers, or an LSQ step), is part of the step's one C call. PACT quantizers, other
devices and dtypes, and the GRU take the unrolled form in torch ops.

A cell (``LSTMCell``, ``GRUCell``) has the same sites without layers or an ``output`` role (it returns its
states); its caller's loop is the recurrence, so its quantizers see one tensor per call and per step.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from quant.sim import fused
from quant.sim.modes import ModuleAttachment
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig

__all__ = ["RECURRENT_MODULES", "RECURRENT_QUANTIZERS", "RecurrentAttachment", "attach_recurrent", "check_recurrent"]

#: The submodule (an ``nn.ModuleDict``) that holds the activation quantizers.
RECURRENT_QUANTIZERS = "recurrent_quantizers"
Recurrent = Union[nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell]
CELLS = (nn.LSTMCell, nn.GRUCell)
#: The modules this file quantizes.
RECURRENT_MODULES = (nn.LSTM, nn.GRU, *CELLS)


def _suffixes(module: Recurrent) -> list[str]:
    if isinstance(module, CELLS):
        return [""]
    dirs = ["", "_reverse"] if module.bidirectional else [""]
    return [f"_l{layer}{d}" for layer in range(module.num_layers) for d in dirs]


def _weight_names(module: Recurrent) -> list[str]:
    return [f"weight_{kind}{sfx}" for sfx in _suffixes(module) for kind in ("ih", "hh")]


def _is_lstm(module: Recurrent) -> bool:
    return isinstance(module, (nn.LSTM, nn.LSTMCell))


def _sites(module: Recurrent) -> list[tuple[str, str]]:
    """(quantizer key, role) of every activation site, per layer and direction (a cell: one step, no output)."""
    out = [("input", "input")] if isinstance(module, CELLS) else [("input", "input"), ("output", "output")]
    for sfx in _suffixes(module):
        if _is_lstm(module):
            out += [(f"gates{sfx}", "gates"), (f"cell{sfx}", "cell")]
        else:
            out += [(f"gates_input{sfx}", "gates"), (f"gates_hidden{sfx}", "gates")]
        out.append((f"hidden{sfx}", "hidden"))
    return out


def _config(configs: Mapping[str, QuantizerConfig], role: str) -> Optional[QuantizerConfig]:
    if role == "hidden":
        return configs.get("hidden") or configs.get("input")
    return configs.get(role)


def check_recurrent(name: str, module: Recurrent, configs: Mapping[str, QuantizerConfig]) -> None:
    """``ValueError`` naming the module for what the unrolled recurrence cannot take."""
    kind = type(module).__name__
    if isinstance(module, nn.LSTM) and module.proj_size > 0:
        raise ValueError(f"attach: module {name!r} ({kind}): proj_size={module.proj_size} is not supported")
    if RECURRENT_QUANTIZERS in module._modules or hasattr(module, RECURRENT_QUANTIZERS):
        raise ValueError(f"attach: module {name!r} already has an attribute {RECURRENT_QUANTIZERS!r}")
    if not _is_lstm(module) and "cell" in configs:
        raise ValueError(f"attach: module {name!r} ({kind}): a GRU has no cell state; its roles are weight, input, "
                         "gates, hidden, output")  # fmt: skip
    for _, role in _sites(module):
        config = _config(configs, role)
        if config is not None and config.spec.granularity != "tensor":
            raise ValueError(f"attach: module {name!r} ({kind}): the {role} role takes per-tensor schemes only, got "
                             f"{config.spec.describe()}")  # fmt: skip


def _lstm_step(xwb: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: Any, q: Any, sfx: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from the input's projection with both biases, ``xwb = x W_ih^T + (b_ih + b_hh)``: the gate
    pre-activations are ``addmm(xwb, h, W_hh^T)``, as in the fused recurrence."""
    gates = q(f"gates{sfx}", torch.addmm(xwb, h, w_hh.t()))
    i, f, g, o = gates.chunk(4, dim=-1)
    c = q(f"cell{sfx}", torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g))
    h = q(f"hidden{sfx}", torch.sigmoid(o) * torch.tanh(c))
    return h, c


class _Site:
    """One quantization site of the fused recurrence: the quantizer (None: the site stays float) and what the
    hand-written backward needs of its calls, either recorded call by call from Python
    (:meth:`Quantizer.forward_parts`) or written by C into ``(T, rows, n)`` buffers (a site run by
    :class:`quant.sim.fused.HostSite`): the straight-through masks, LSQ's derivatives and gradient scale."""

    __slots__ = ("quantizer", "masks", "d_scales", "grad_scale", "mask_buffer", "d_scale_buffer")

    def __init__(self, quantizer: Optional[Quantizer]) -> None:
        self.quantizer = quantizer
        self.masks: list[Optional[torch.Tensor]] = []
        self.d_scales: list[Optional[torch.Tensor]] = []
        self.grad_scale = 0.0  # LSQ's, the same at every step (every call has the same shape)
        self.mask_buffer: Optional[torch.Tensor] = None
        self.d_scale_buffer: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        if q is None:
            return x
        out, mask, d_scale = q.forward_parts(x)
        self.masks.append(mask)
        self.d_scales.append(d_scale)
        if d_scale is not None:
            self.grad_scale = q.lsq_grad_scale(x)
        return out

    def addresses(self, order: range, ones: torch.Tensor) -> tuple[list[int], list[int]]:
        """Per time step ``t`` (``order[k]`` is the ``k``-th call): the address of its mask as bytes (``ones``'
        for a float site or a pass-through) and of its LSQ derivative (0: not LSQ). A converted mask or
        derivative replaces the recorded one, so the site holds every tensor whose address the backward hands
        to C until the backward is over."""
        steps = len(order)
        if self.mask_buffer is not None:
            per_step = self.mask_buffer[0].numel()
            base = self.mask_buffer.data_ptr()
            masks = [base + t * per_step for t in range(steps)]
            d = self.d_scale_buffer
            return masks, ([0] * steps if d is None else [d.data_ptr() + 4 * t * per_step for t in range(steps)])
        masks, d_scales = [ones.data_ptr()] * steps, [0] * steps
        if self.quantizer is None:
            return masks, d_scales
        for k, t in enumerate(order):
            mask = self.masks[k]
            if mask is not None and (mask.dtype != torch.uint8 or not mask.is_contiguous()):
                self.masks[k] = mask = mask.to(torch.uint8).contiguous()
            if mask is not None:
                masks[t] = mask.data_ptr()
            d = self.d_scales[k]
            if d is not None and not d.is_contiguous():
                self.d_scales[k] = d = d.contiguous()
            if d is not None:
                d_scales[t] = d.data_ptr()
        return masks, d_scales


class _FusedLSTMLayer(torch.autograd.Function):
    """One layer and direction of the quantized LSTM on CPU float32 data, in training and inference alike:
    per step, ``pre = addmm(x W_ih^T + (b_ih + b_hh), h, W_hh^T)``, the gates site, the pointwise step of
    :func:`quant.sim.fused.lstm_pointwise_at` (the activations and ``c``), the cell site, its second part
    (``tanh(c)`` and ``h``), the hidden site; no autograd node per
    operation, and the backward through time written out (:func:`~quant.sim.fused.lstm_backward_at`: the
    straight-through or LSQ gradient at every site, one C pass and one product with ``W_hh`` per step).
    Every step writes into buffers of the whole sequence, by address; a hidden site that
    :meth:`Quantizer.host_site` can run in C (observers updating or LSQ) and float gates and cell make the
    step one ``addmm`` and one C call. Inputs: the input projection with both biases ``xw`` ``(T, B, 4H)``,
    ``h0``, ``c0``, ``w_hh``, the three sites (gates, cell, hidden), the direction, then the sites' LSQ steps
    (to receive their gradients). Outputs: the hidden states ``(T, B, H)`` in time order, and the last ``h``,
    ``c``."""

    @staticmethod
    def forward(ctx: Any, xw: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_hh: torch.Tensor,
                sites: tuple[_Site, _Site, _Site], reverse: bool, *steps: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        gates_site, cell_site, hidden_site = sites
        length, rows, hidden = xw.shape[0], h0.shape[0], w_hh.shape[1]
        h0, c0 = h0.contiguous(), c0.contiguous()
        for state in (h0, c0):
            fused.check_lstm_buffer(state, rows, hidden)
        r = int(reverse)
        order = range(length - 1, -1, -1) if reverse else range(length)
        # step t reads the cell at slot t + r of c_all and writes slot t + 1 - r; h_t goes to hs[t]
        hs = xw.new_empty(length, rows, hidden)
        c_all = xw.new_empty(length + 1, rows, hidden)
        c_all[length * r] = c0
        act, tanh_c = xw.new_empty(length, rows, 4 * hidden), xw.new_empty(length, rows, hidden)
        pre_buffer, h_scratch = xw.new_empty(rows, 4 * hidden), xw.new_empty(rows, hidden)
        small, wide = 4 * rows * hidden, 16 * rows * hidden  # bytes per step
        xs, hs_steps, c_steps, act_steps = xw.unbind(0), hs.unbind(0), c_all.unbind(0), act.unbind(0)
        at_c, at_act, at_tanh, at_hs = c_all.data_ptr(), act.data_ptr(), tanh_c.data_ptr(), hs.data_ptr()
        # the hidden site, the one every recipe sets, observes and quantizes in the step's C call when it can
        host = hidden_site.quantizer.host_site() if hidden_site.quantizer is not None else None
        at_mask = at_d_scale = 0
        if host is not None and not host.quantizing:  # observing only: the values pass through
            hidden_site.masks, hidden_site.d_scales = [None] * length, [None] * length
        if host is not None and host.quantizing:
            hidden_site.mask_buffer = torch.empty(length, rows, hidden, dtype=torch.uint8)
            at_mask = hidden_site.mask_buffer.data_ptr()
            if host.lsq:
                hidden_site.d_scale_buffer = xw.new_empty(length, rows, hidden)
                at_d_scale = hidden_site.d_scale_buffer.data_ptr()
                assert hidden_site.quantizer is not None
                hidden_site.grad_scale = hidden_site.quantizer.lsq_grad_scale(h_scratch)
        w_t = w_hh.t()
        h = h0
        with_cell = cell_site.quantizer is None  # the C call computes the cell too
        quantizing = host is not None and host.quantizing
        try:
            for t in order:
                pre = torch.addmm(xs[t], h, w_t, out=pre_buffer)
                if gates_site.quantizer is not None:
                    pre = gates_site(pre)
                    fused.check_lstm_buffer(pre, rows, hidden)
                c_prev, c_new = at_c + (t + r) * small, at_c + (t + 1 - r) * small
                if not with_cell:  # the cell site in Python, between the two pointwise parts
                    c_raw = torch.empty_like(h0)
                    fused.lstm_pointwise_at(1, rows, hidden, pre.data_ptr(), c_prev, act_steps[t].data_ptr(),
                                            c_raw.data_ptr(), 0, 0)  # fmt: skip
                    c_steps[t + 1 - r].copy_(cell_site(c_raw))
                at_h = at_hs + t * small
                if host is not None:
                    host.lstm_step_at(with_cell, rows, hidden, pre.data_ptr(), c_prev, at_act + t * wide, c_new,
                                      at_tanh + t * small, h_scratch.data_ptr() if quantizing else at_h,
                                      at_h if quantizing else 0, at_mask + t * rows * hidden if quantizing else 0,
                                      at_d_scale + t * small if at_d_scale else 0)  # fmt: skip
                elif hidden_site.quantizer is None:
                    fused.lstm_pointwise_at(3 if with_cell else 2, rows, hidden, pre.data_ptr(), c_prev,
                                            at_act + t * wide, c_new, at_tanh + t * small, at_h)  # fmt: skip
                else:
                    h_raw = torch.empty_like(h0)
                    fused.lstm_pointwise_at(3 if with_cell else 2, rows, hidden, pre.data_ptr(), c_prev,
                                            at_act + t * wide, c_new, at_tanh + t * small, h_raw.data_ptr())  # fmt: skip
                    hs_steps[t].copy_(hidden_site(h_raw))
                h = hs_steps[t]
        finally:
            if host is not None:
                assert hidden_site.quantizer is not None
                hidden_site.quantizer.end_host_site(host)
        ctx.save_for_backward(hs, c_all, act, tanh_c, h0, w_hh)
        ctx.sites, ctx.order, ctx.reverse = sites, order, r
        ctx.lsq_sites = [site for site in sites if site.quantizer is not None and site.quantizer.learn == "lsq"]
        assert len(ctx.lsq_sites) == len(steps)
        return hs, hs[order[-1]].clone(), c_all[length * (1 - r)].clone()

    @staticmethod
    def backward(ctx: Any, g_hs: torch.Tensor, g_h: torch.Tensor, g_c: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        gates_site, cell_site, hidden_site = ctx.sites
        hs, c_all, act, tanh_c, h0, w_hh = ctx.saved_tensors
        order: range = ctx.order
        length, rows, hidden = hs.shape
        r: int = ctx.reverse
        g_hs = g_hs.contiguous()
        d_pre = g_hs.new_empty(length, rows, 4 * hidden)
        # the step's buffers by address: every saved tensor was checked when it was made (forward), these here
        dh = [g_h.contiguous(), torch.empty_like(g_h, memory_format=torch.contiguous_format)]
        dc = [g_c.clone(memory_format=torch.contiguous_format), torch.empty_like(g_c, memory_format=torch.contiguous_format)]
        for buf in (g_hs, d_pre, *dh, *dc):
            fused.check_lstm_buffer(buf, rows, hidden)
        site_order = (hidden_site, cell_site, gates_site)
        (m_h, d_h), (m_c, d_c), (m_g, d_g) = (site.addresses(order, ones) for site, ones in
                                              zip(site_order, fused.lstm_ones(rows, hidden)))  # fmt: skip
        lsq = [(i, site.grad_scale) for i, site in enumerate(site_order) if site in ctx.lsq_sites]
        sums = [0.0, 0.0, 0.0]  # hidden, cell, gates
        small, wide = 4 * rows * hidden, 16 * rows * hidden
        at_g, at_pre, at_act, at_tanh, at_c = g_hs.data_ptr(), d_pre.data_ptr(), act.data_ptr(), tanh_c.data_ptr(), c_all.data_ptr()
        at_dh, at_dc = [b.data_ptr() for b in dh], [b.data_ptr() for b in dc]
        d_pre_steps = d_pre.unbind(0)
        cur = 0
        for t in reversed(order):  # the backward runs the steps in the opposite order
            step_sums = fused.lstm_backward_at(rows, hidden, at_g + t * small, at_dh[cur], at_dc[cur], at_act + t * wide,
                                               at_tanh + t * small, at_c + (t + r) * small, m_h[t], m_c[t], m_g[t],
                                               d_h[t], d_c[t], d_g[t], at_pre + t * wide, at_dc[1 - cur])  # fmt: skip
            for i, grad_scale in lsq:
                sums[i] += step_sums[i] * grad_scale
            torch.mm(d_pre_steps[t], w_hh, out=dh[1 - cur])
            cur = 1 - cur
        # W_hh's gradient: the sum over t of d_pre[t]^T h_{t-1} (the h step t read)
        h_read = torch.cat((hs[1:], h0[None])) if r else torch.cat((h0[None], hs[:-1]))
        g_w = d_pre.reshape(-1, 4 * hidden).t() @ h_read.reshape(-1, hidden)
        scale_grads = []
        for site in ctx.lsq_sites:
            step = site.quantizer.scale
            scale_grads.append(torch.full(step.shape, sums[site_order.index(site)], dtype=step.dtype))
        return (d_pre, dh[cur], dc[cur], g_w, None, None, *scale_grads)


def _gru_step(xw: torch.Tensor, h: torch.Tensor, w_hh: Any, b_hh: Any, q: Any, sfx: str) -> torch.Tensor:
    """One GRU step from the input's projection ``xw = x W_ih^T + b_ih``."""
    gi = q(f"gates_input{sfx}", xw)
    gh = q(f"gates_hidden{sfx}", F.linear(h, w_hh, b_hh))
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    out: torch.Tensor = q(f"hidden{sfx}", (1 - z) * n + z * h)
    return out


def _fusable(quantizers: nn.ModuleDict, sfx: str, x: torch.Tensor) -> bool:
    """Whether the layer ``sfx`` of an LSTM runs as :class:`_FusedLSTMLayer`: CPU float32 data, and each of its
    sites float or with a straight-through or LSQ quantizer whose step exists (PACT's recurrence, LSQ's first
    batch and other devices stay unrolled in torch ops, one autograd node per operation)."""
    if not fused.lstm_step_applies(x):
        return False
    for role in ("gates", "cell", "hidden"):
        q = quantizers._modules.get(f"{role}{sfx}")
        if q is not None and (not isinstance(q, Quantizer) or q.learn not in ("none", "lsq")):
            return False
        if q is not None and q.learn == "lsq" and q.scale.numel() != 1:  # LSQ's step is set by the first batch
            return False
    return True


def _quantized_recurrent_forward(self: Union[nn.LSTM, nn.GRU], input: Any, hx: Any = None) -> tuple[torch.Tensor, Any]:
    """The unrolled recurrence of ``self`` with its sites fake-quantized (module doc)."""
    kind = parametrize.type_before_parametrizations(self).__name__
    if isinstance(input, PackedSequence):
        raise TypeError(f"quantized {kind}: packed sequences are not supported; pass a padded tensor")
    quantizers = self._modules[RECURRENT_QUANTIZERS]
    assert isinstance(quantizers, nn.ModuleDict)

    def q(key: str, t: torch.Tensor) -> torch.Tensor:
        quantizer = quantizers._modules.get(key)
        return quantizer(t) if quantizer is not None else t

    lstm = _is_lstm(self)
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
    steps, batch = x.shape[0], x.shape[1]
    if steps == 0:  # as the float module
        raise ValueError(f"quantized {kind}: the sequence length must be larger than 0, got an input of shape "
                         f"{tuple(input.shape)}")  # fmt: skip
    dirs = 2 if self.bidirectional else 1
    zeros = torch.zeros(self.num_layers * dirs, batch, self.hidden_size, dtype=x.dtype, device=x.device)
    if hx is None:
        h0, c0 = zeros, zeros
    else:
        h0, c0 = hx if lstm else (hx, zeros)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    layer_input = q("input", x)
    h_n, c_n = [], []
    for layer in range(self.num_layers):
        outputs = []
        for d in range(dirs):
            sfx = f"_l{layer}{'_reverse' if d else ''}"
            w_ih, w_hh = getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}")
            b_ih, b_hh = (getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}")) if self.bias else (None, None)
            # every step's input projection in one product, as cuDNN does (unbind: one backward node, not T selects)
            # an LSTM's two biases are one: x W_ih^T + (b_ih + b_hh)
            projected = F.linear(layer_input, w_ih, b_ih + b_hh if lstm and b_ih is not None else b_ih)
            h, c = h0[layer * dirs + d], c0[layer * dirs + d]
            if lstm and _fusable(quantizers, sfx, layer_input):
                sites = (_Site(quantizers._modules.get(f"gates{sfx}")), _Site(quantizers._modules.get(f"cell{sfx}")),  # type: ignore[arg-type]
                         _Site(quantizers._modules.get(f"hidden{sfx}")))  # type: ignore[arg-type]  # fmt: skip
                learned = [site.quantizer.scale for site in sites if site.quantizer is not None and site.quantizer.learn == "lsq"]
                ys_d, h, c = _FusedLSTMLayer.apply(projected, h, c, w_hh, sites, bool(d), *learned)  # type: ignore[no-untyped-call]
                outputs.append(ys_d)
                h_n.append(h)
                c_n.append(c)
                continue
            xw = projected.unbind(0)  # one backward node, not T selects
            ys: list[torch.Tensor] = [x[0]] * steps
            for t in (reversed(range(steps)) if d else range(steps)):
                if lstm:
                    h, c = _lstm_step(xw[t], h, c, w_hh, q, sfx)
                else:
                    h = _gru_step(xw[t], h, w_hh, b_hh, q, sfx)
                ys[t] = h
            outputs.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=-1) if dirs == 2 else outputs[0]
        if self.dropout and self.training and layer < self.num_layers - 1:
            layer_input = F.dropout(layer_input, p=self.dropout, training=True)
    out = q("output", layer_input)
    out = out.squeeze(1) if unbatched else (out.transpose(0, 1) if self.batch_first else out)
    hn, cn = torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        hn, cn = hn.squeeze(1), cn.squeeze(1)
    return out, ((hn, cn) if lstm else hn)


def _quantized_cell_forward(self: Union[nn.LSTMCell, nn.GRUCell], input: torch.Tensor, hx: Any = None) -> Any:
    """One step of ``self`` with its sites fake-quantized; every call of the cell is a time step."""
    quantizers = self._modules[RECURRENT_QUANTIZERS]
    assert isinstance(quantizers, nn.ModuleDict)

    def q(key: str, t: torch.Tensor) -> torch.Tensor:
        quantizer = quantizers._modules.get(key)
        return quantizer(t) if quantizer is not None else t

    unbatched = input.dim() == 1
    x = q("input", input.unsqueeze(0) if unbatched else input)
    zeros = torch.zeros(x.shape[0], self.hidden_size, dtype=x.dtype, device=x.device)
    if isinstance(self, nn.LSTMCell):
        xwb = F.linear(x, self.weight_ih, None if self.bias_ih is None else self.bias_ih + self.bias_hh)
        h, c = (zeros, zeros) if hx is None else ((hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if unbatched else hx)
        h, c = _lstm_step(xwb, h, c, self.weight_hh, q, "")
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)
    h = zeros if hx is None else (hx.unsqueeze(0) if unbatched else hx)
    h = _gru_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh, q, "")
    return h.squeeze(0) if unbatched else h


@dataclass
class RecurrentAttachment(ModuleAttachment):
    """The fast-mode wiring of one LSTM/GRU: weight parametrizations, the site quantizers (submodule
    :data:`RECURRENT_QUANTIZERS`) and the instance ``forward``; ``parameter_order`` as before."""

    parameter_order: tuple[str, ...] = field(default=())

    def remove(self) -> None:
        from quant.sim.fast import remove_tensor_quantizer, restore_parameter_order

        module = self.module
        assert isinstance(module, RECURRENT_MODULES)
        for tensor in _weight_names(module):
            q = self.quantizers.get(tensor)
            if q is not None:
                remove_tensor_quantizer(module, q, tensor)
        if module.__dict__.get("forward") is not None:
            del module.__dict__["forward"]
        module._modules.pop(RECURRENT_QUANTIZERS, None)
        restore_parameter_order(module, self.parameter_order)
        if isinstance(module, (nn.LSTM, nn.GRU)):
            module.flatten_parameters()


def attach_recurrent(name: str, module: Recurrent, configs: Mapping[str, QuantizerConfig], build: Any) -> RecurrentAttachment:
    """Wire ``configs`` into ``module`` (``build(config) -> Quantizer`` makes each quantizer)."""
    quantizers: dict[str, Quantizer] = {}
    weight = configs.get("weight")
    if weight is not None:
        for tensor in _weight_names(module):
            quantizers[tensor] = build(weight)
    effective: dict[str, QuantizerConfig] = {"weight": weight} if weight is not None else {}
    for key, role in _sites(module):
        config = _config(configs, role)
        if config is not None:
            q = build(config)
            q.per_step = isinstance(module, CELLS) or role in ("gates", "cell", "hidden")
            quantizers[key] = q
            effective[role] = config
    attachment = RecurrentAttachment(name, module, effective, quantizers, tuple(module._parameters))
    try:
        for tensor in _weight_names(module):
            if tensor in quantizers:
                parametrize.register_parametrization(module, tensor, quantizers[tensor], unsafe=True)
        module.add_module(RECURRENT_QUANTIZERS, nn.ModuleDict({k: q for k, q in quantizers.items() if not k.startswith("weight")}))
        forward = _quantized_cell_forward if isinstance(module, CELLS) else _quantized_recurrent_forward
        module.forward = types.MethodType(forward, module)  # type: ignore[method-assign]
    except BaseException:
        attachment.remove()
        raise
    return attachment
