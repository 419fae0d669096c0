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
``gates``   the gate pre-activations: the LSTM's ``x W_ih^T + b_ih + h W_hh^T + b_hh``; the GRU's two
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


def _lstm_step(xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: Any, b_hh: Any, q: Any, sfx: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from the input's projection ``xw = x W_ih^T + b_ih``."""
    gates = q(f"gates{sfx}", xw + F.linear(h, w_hh, b_hh))
    i, f, g, o = gates.chunk(4, dim=-1)
    c = q(f"cell{sfx}", torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g))
    h = q(f"hidden{sfx}", torch.sigmoid(o) * torch.tanh(c))
    return h, c


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
            xw = F.linear(layer_input, w_ih, b_ih).unbind(0)
            h, c = h0[layer * dirs + d], c0[layer * dirs + d]
            ys: list[torch.Tensor] = [x[0]] * steps
            for t in (reversed(range(steps)) if d else range(steps)):
                if lstm:
                    h, c = _lstm_step(xw[t], h, c, w_hh, b_hh, q, sfx)
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
    xw = F.linear(x, self.weight_ih, self.bias_ih)
    if isinstance(self, nn.LSTMCell):
        h, c = (zeros, zeros) if hx is None else ((hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if unbatched else hx)
        h, c = _lstm_step(xw, h, c, self.weight_hh, self.bias_hh, q, "")
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)
    h = zeros if hx is None else (hx.unsqueeze(0) if unbatched else hx)
    h = _gru_step(xw, h, self.weight_hh, self.bias_hh, q, "")
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
