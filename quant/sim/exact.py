"""Exact simulation: the model's own forward returns what the integer datapath computes.

``handle.set_mode("exact", datapath)`` makes every forward of the model compute, on its own
graph (traced with ``torch.fx``), integer codes with the contract's operations of
:mod:`quant.reference`, and return their dequantized values. It is a second implementation of
what :func:`quant.lower` produces, kept independent of the program on purpose:

* it walks the model's graph, not the program's nodes, with the live tensors of each call;
* it builds each layer's integer parameters itself from the module and its quantizers
  (docs/arithmetic.md section 9: weight codes, bias ``round(b / (s_x s_w))``, multipliers
  ``s_x s_w / s_y``, fused clamps) and calls the reference ops by their public keyword API;
* elementwise functions are evaluated directly, ``quantize(f(dequantize(q)))``, not looked up;
* a custom op runs its registered integer reference on the plan's qparams.

What it shares with the lowering is the *plan*: which scale and zero point each tensor has and
which activations are fused (the program's ``origins`` and tensor table, computed on the first
forward from that batch's shapes). So :func:`quant.verify` comparing exact simulation, the
program on the torch reference and the program on the C kernels proves the lowering faithful.

Gradients: in training the forward returns ``fast + (exact - fast).detach()``, so the values are
the datapath's and the gradient is fast mode's straight-through one; without gradients it
returns the exact values themselves.
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

import quant.reference as ref
from quant.contract.backend import get_backend
from quant.contract.datapath import Datapath
from quant.contract.matmul import MatmulAttrs, run_matmul
from quant.custom.registry import custom_attrs, custom_op_of
from quant.ir.program import IntegerProgram, TensorInfo
from quant.reference.custom import run_custom
from quant.reference.rounding import rounding_fn
from quant.sim.tracing import ModelTracer, constant_nodes, evaluate_constant

if TYPE_CHECKING:
    from quant.sim.attach import QuantHandle

__all__ = ["ExactSimulation"]

#: Ops that move codes without computing: run as they are on the codes themselves.
_LAYOUT = {torch.flatten, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose, "flatten", "view", "reshape",
           "squeeze", "unsqueeze", "permute", "transpose", "contiguous"}  # fmt: skip


#: Arithmetic whose one operand may be a number (``x * c``, ``c - x``, ``x / c``).
_ARITHMETIC = {operator.add, torch.add, "add", "__add__", operator.iadd, "add_", "__iadd__", operator.mul, torch.mul, "mul",
               "__mul__", operator.imul, "mul_", "__imul__", operator.sub, torch.sub, "sub", "__sub__", operator.isub,
               "sub_", "__isub__", "__rsub__", operator.truediv, torch.div, "div", "__truediv__", operator.itruediv,
               "div_", "__itruediv__"}  # fmt: skip


def _with_a_number(node: torch.fx.Node) -> bool:
    """Whether ``node`` is arithmetic of one graph tensor and one number (no keywords)."""
    if node.op not in ("call_function", "call_method") or len(node.args) != 2 or node.kwargs:
        return False
    try:
        if node.target not in _ARITHMETIC:
            return False
    except TypeError:  # an unhashable target
        return False
    kinds = [isinstance(a, torch.fx.Node) for a in node.args]
    numbers = [isinstance(a, (int, float)) and not isinstance(a, bool) for a in node.args]
    return sorted(kinds) == [False, True] and any(numbers)


def _dequantize(codes: torch.Tensor, info: TensorInfo) -> torch.Tensor:
    return (codes - info.zero_point).to(torch.float32) * torch.tensor(info.scale, dtype=torch.float32)


class ExactSimulation:
    """The exact-mode forward of one model (see the module docstring)."""

    def __init__(self, handle: "QuantHandle", datapath: Datapath, program: Optional[IntegerProgram] = None) -> None:
        if not isinstance(datapath, Datapath):
            raise TypeError(f"set_mode: datapath must be a Datapath, got {type(datapath).__name__}")
        if program is not None and program.datapath != datapath:
            raise ValueError(f"exact mode: the program is for datapath {program.datapath.name!r}, not {datapath.name!r}")
        self.handle = handle
        self.model = handle.model
        self.datapath = datapath
        self.program: Optional[IntegerProgram] = program
        self.graph: Optional[torch.fx.Graph] = ModelTracer().trace(self.model) if program is not None else None
        self.constants: set[torch.fx.Node] = constant_nodes(self.graph) if self.graph is not None else set()
        self._hook: Optional[RemovableHandle] = None
        self._busy = False

    # ------------------------------------------------------------------ wiring
    def install(self) -> None:
        """Attach the root forward hook that replaces the output by the exact one."""
        if self._hook is None:
            self._hook = self.model.register_forward_hook(self._replace_output)

    def remove(self) -> None:
        """Take the hook off; the model computes fast simulation again."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _replace_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self._busy:
            return output
        exact = self.run(*args)[0]
        if not torch.is_grad_enabled():
            return exact

        def straight_through(fast: Any, value: torch.Tensor) -> Any:
            if not isinstance(fast, torch.Tensor) or not fast.requires_grad:
                return value
            return fast + (value.to(fast.dtype) - fast).detach()

        if isinstance(output, tuple) and isinstance(exact, tuple):
            return tuple(straight_through(f, e) for f, e in zip(output, exact))
        return straight_through(output, exact)

    # ------------------------------------------------------------------ the plan
    def plan(self, example: tuple[Any, ...]) -> IntegerProgram:
        """The program whose tensor qparams and fusions exact simulation follows (built once)."""
        if self.program is None:
            from quant.lowering.lowerer import lower

            self._busy = True
            try:
                self.program = lower(self.model, self.handle, example, datapath=self.datapath)
            finally:
                self._busy = False
            tracer = ModelTracer()
            self.graph = tracer.trace(self.model)
            self.constants = constant_nodes(self.graph)
        return self.program

    # ------------------------------------------------------------------ the forward
    @torch.no_grad()
    def forward(self, *args: Any) -> torch.Tensor:
        """The dequantized output the datapath computes for ``args``."""
        out: torch.Tensor = self.run(*args)[0]
        return out

    @torch.no_grad()
    def trace_codes(self, *args: Any) -> dict[str, torch.Tensor]:
        """The codes of every program tensor that a graph node of the model computes, by tensor name."""
        _, codes = self.run(*args)
        origins = self.planned.origins
        return {origins[n.name]: c for n, c in codes.items()}

    def run(self, *args: Any) -> tuple[Any, dict[torch.fx.Node, torch.Tensor]]:
        """``(dequantized output, codes of every graph node)`` for ``args``."""
        program = self.plan(args)
        assert self.graph is not None  # set by plan()
        codes: dict[torch.fx.Node, torch.Tensor] = {}
        inputs = iter(args)
        result: Any = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                x = next(inputs)
                info = self.info(node)
                codes[node] = ref.quantize(x.detach().to(torch.float32), scale=info.scale, zero_point=info.zero_point,
                                           bits=info.bits, signed=info.signed, datapath=self.datapath)  # fmt: skip
            elif node.op == "output":
                out = node.args[0]
                outs = out if isinstance(out, (tuple, list)) else (out,)
                values = [_dequantize(codes[o], self.info(o)) for o in outs]
                result = values[0] if len(values) == 1 else tuple(values)
            elif node.name not in program.origins:
                continue  # shape arithmetic, parameters read by an op: no tensor of codes
            elif node in self.constants:
                codes[node] = self.constant(node, codes)
            elif self.is_alias(node):
                codes[node] = codes[node.args[0]]
            else:
                codes[node] = self.compute(node, codes)
        return result, codes

    @property
    def planned(self) -> IntegerProgram:
        """The plan (built by the first forward, or given)."""
        if self.program is None:
            raise RuntimeError("exact mode: no plan yet; run a forward first")
        return self.program

    def info(self, node: torch.fx.Node) -> TensorInfo:
        """The qparams of the tensor ``node`` computes, from the plan."""
        return self.planned.tensors[self.planned.origins[node.name]]

    def is_alias(self, node: torch.fx.Node) -> bool:
        """A fused activation or a no-op: the same tensor as its input."""
        origins = self.planned.origins
        src = node.args[0] if node.args else None
        return isinstance(src, torch.fx.Node) and origins.get(src.name) == origins[node.name]

    def fused_activation(self, node: torch.fx.Node) -> Optional[torch.fx.Node]:
        """The activation whose tensor ``node`` writes (its output shares ``node``'s tensor), if any."""
        origins = self.planned.origins
        mine = origins[node.name]
        cur = node
        while len(cur.users) == 1:
            (user,) = cur.users
            if origins.get(user.name) != mine:
                return None
            if not (user.op == "call_module" and isinstance(self.model.get_submodule(str(user.target)), (nn.Dropout, nn.Identity))):
                return user
            cur = user
        return None

    def clamp(self, act: Optional[torch.fx.Node], info: TensorInfo) -> tuple[Optional[int], Optional[int]]:
        """``(y_min, y_max)`` of a fused ReLU / ReLU6 / Hardtanh (docs/arithmetic.md section 9)."""
        if act is None:
            return None, None
        low, high = 0.0, None
        m = self.model.get_submodule(str(act.target)) if act.op == "call_module" else None
        if isinstance(m, nn.ReLU6) or act.target is F.relu6:
            high = 6.0
        elif isinstance(m, nn.Hardtanh):
            low, high = float(m.min_val), float(m.max_val)
        elif act.target is F.hardtanh:
            low = float(act.kwargs.get("min_val", act.args[1] if len(act.args) > 1 else -1.0))  # type: ignore[arg-type]
            high = float(act.kwargs.get("max_val", act.args[2] if len(act.args) > 2 else 1.0))  # type: ignore[arg-type]
        rnd = rounding_fn(self.datapath.quantize_rounding)
        lo = info.zero_point + int(rnd(torch.tensor(low / info.scale, dtype=torch.float64)))
        hi = None if high is None else info.zero_point + int(rnd(torch.tensor(high / info.scale, dtype=torch.float64)))
        qmin, qmax = (-(1 << (info.bits - 1)), (1 << (info.bits - 1)) - 1) if info.signed else (0, (1 << info.bits) - 1)
        return max(lo, qmin), None if hi is None else min(hi, qmax)

    def compute(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        info = self.info(node)
        dp = self.datapath
        if node.op == "call_module":
            m = self.model.get_submodule(str(node.target))
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                return self.layer(node, m, codes)
            if isinstance(m, nn.ConvTranspose2d):
                return self.conv_transpose(node, m, codes)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                return self.batchnorm(node, m, codes)
            if isinstance(m, nn.Softmax):
                return self.softmax(node, m.dim, codes)
            if isinstance(m, nn.LayerNorm):
                return self.layernorm(node, m, codes)
            if isinstance(m, nn.Flatten):
                return torch.flatten(codes[node.args[0]], m.start_dim, m.end_dim)  # type: ignore[index]
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool1d, nn.AvgPool1d,
                              nn.AdaptiveAvgPool1d)):  # fmt: skip
                return self.pool(node, codes)
            return self.elementwise(node, m, codes)
        x = node.args[0]
        if node.target is operator.getitem and isinstance(x, torch.fx.Node) and x.op == "call_module":
            m = self.model.get_submodule(str(x.target))
            if isinstance(m, nn.MultiheadAttention) and node.args[1] == 0:
                return self.attention(x, m, node, codes)
            if isinstance(m, (nn.LSTM, nn.GRU)) and node.args[1] == 0:
                return self.recurrent(x, m, node, codes)
        custom = custom_op_of(node.target) if node.op == "call_function" else None
        if custom is not None:  # the op's registered integer reference on the plan's qparams
            operands = [self.info(a).operand() for a in node.args]  # type: ignore[arg-type]
            attrs = custom_attrs(custom, operands, info.operand(), dp, node.kwargs)
            return run_custom(attrs, *(codes[a] for a in node.args))  # type: ignore[index]
        if _with_a_number(node):  # x * c, c - x, x / c, ...: the exact function, like any elementwise one
            return self.scalar_arithmetic(node, codes)
        if node.target in (operator.add, torch.add, "add", "__add__", operator.iadd, "add_", "__iadd__"):
            a, b = node.args[0], node.args[1]
            ia, ib = self.info(a), self.info(b)  # type: ignore[arg-type]
            y_min, y_max = self.clamp(self.fused_activation(node), info)
            return ref.add(codes[a], codes[b], a_zero_point=ia.zero_point, b_zero_point=ib.zero_point,  # type: ignore[index]
                           a_multiplier=ia.scale / info.scale, b_multiplier=ib.scale / info.scale,
                           y_zero_point=info.zero_point, y_bits=info.bits, y_signed=info.signed, y_min=y_min,
                           y_max=y_max, datapath=dp)  # fmt: skip
        if node.target in (operator.mul, torch.mul, "mul", "__mul__", operator.imul, "mul_", "__imul__"):
            a, b = node.args[0], node.args[1]
            qa, qb = codes[a], codes[b]  # type: ignore[index]
            ia, ib = self.info(a), self.info(b)  # type: ignore[arg-type]
            if qa.dim() == qb.dim() and qa.shape != qb.shape and all(x <= y for x, y in zip(qa.shape, qb.shape)):
                qa, qb, ia, ib = qb, qa, ib, ia  # the broadcast operand second
            y_min, y_max = self.clamp(self.fused_activation(node), info)
            return ref.mul(qa, qb, a_zero_point=ia.zero_point, b_zero_point=ib.zero_point,
                           multiplier=ia.scale * ib.scale / info.scale, y_zero_point=info.zero_point, y_bits=info.bits,
                           y_signed=info.signed, y_min=y_min, y_max=y_max, datapath=dp)  # fmt: skip
        if node.target in (operator.matmul, torch.matmul, torch.bmm, "matmul", "__matmul__", "bmm"):
            return self.matmul(node, codes)
        if node.target in (F.softmax, torch.softmax, "softmax"):
            return self.softmax(node, node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None), codes)
        if node.target is operator.getitem and isinstance(x, torch.fx.Node):  # slices and ints of the codes
            picked: torch.Tensor = codes[x][node.args[1]]  # type: ignore[index]
            return picked
        if node.target in _LAYOUT:
            fn: Any = node.target if callable(node.target) else getattr(torch.Tensor, str(node.target))
            out: torch.Tensor = fn(codes[x], *self.concrete(list(node.args[1:]), codes), **node.kwargs)  # type: ignore[index]
            return out
        if node.target in (torch.mean, "mean"):
            return self.mean(node, codes)
        if node.target in (torch.cat, torch.concat):
            parts = [self.as_codes_of(codes[p], self.info(p), info) for p in node.args[0]]  # type: ignore[union-attr, index, arg-type]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            return torch.cat(parts, dim=dim)  # type: ignore[arg-type]
        if node.target is F.pad:
            pads = node.kwargs.get("pad", node.args[1] if len(node.args) > 1 else None)
            padded: torch.Tensor = F.pad(codes[x], list(pads), value=self.info(x).zero_point)  # type: ignore[index, arg-type]
            return padded
        if node.target in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool1d, F.avg_pool1d,
                           F.adaptive_avg_pool1d):  # fmt: skip
            return self.pool(node, codes)
        return self.elementwise(node, None, codes)

    def matmul(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """``a @ b`` of two activation tensors (section 6.4) on the reference, with the plan's qparams."""
        a, b = node.args[0], node.args[1]
        ia, ib, info = self.info(a), self.info(b), self.info(node)  # type: ignore[arg-type]
        qa, qb = codes[a], codes[b]  # type: ignore[index]
        y_min, y_max = self.clamp(self.fused_activation(node), info)
        attrs = MatmulAttrs.build(k=int(qa.shape[-1]), n=int(qb.shape[-1]), a_zero_point=ia.zero_point,
                                  b_zero_point=ib.zero_point, multiplier=ia.scale * ib.scale / info.scale,
                                  y_zero_point=info.zero_point, y_bits=info.bits, y_signed=info.signed, y_min=y_min,
                                  y_max=y_max, datapath=self.datapath)  # fmt: skip
        dtype = np.int8 if ia.signed else np.uint8  # both operands are the datapath's activation codes
        y = run_matmul(get_backend("torch_ref"), attrs, qa.numpy().astype(dtype), qb.numpy().astype(dtype))
        return torch.from_numpy(y.astype(np.int64))

    def as_codes_of(self, q: torch.Tensor, src: TensorInfo, dst: TensorInfo) -> torch.Tensor:
        """``q`` (codes of ``src``) as codes of ``dst``: the contract's requantize unless the qparams agree."""
        if (src.scale, src.zero_point, src.bits, src.signed) == (dst.scale, dst.zero_point, dst.bits, dst.signed):
            return q
        return ref.requantize(q, in_zero_point=src.zero_point, multiplier=src.scale / dst.scale, y_zero_point=dst.zero_point,
                              y_bits=dst.bits, y_signed=dst.signed, datapath=self.datapath)  # fmt: skip

    def concrete(self, args: list[Any], codes: dict[torch.fx.Node, torch.Tensor]) -> list[Any]:
        """Arguments of a reshape, with graph values (``x.shape[0]``) evaluated on the codes' shapes."""
        out = []
        for a in args:
            if isinstance(a, torch.fx.Node):
                out.append(self.shape_value(a, codes))
            else:
                out.append(a)
        return out

    def shape_value(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> Any:
        if node.op == "call_function" and node.target is getattr:
            base = node.args[0]
            return getattr(codes[base], str(node.args[1]))  # type: ignore[index]
        if node.op == "call_function" and node.target is operator.getitem:
            return self.shape_value(node.args[0], codes)[node.args[1]]  # type: ignore[arg-type]
        if node.op == "call_method" and node.target == "size":
            t = codes[node.args[0]]  # type: ignore[index]
            return t.size(*node.args[1:])  # type: ignore[arg-type]
        raise ValueError(f"exact mode: cannot evaluate {node.name!r} ({node.target}) on codes")

    def layer(self, node: torch.fx.Node, m: nn.Module, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """A quantized Conv2d/Linear from its module, its quantizers and the plan (section 9)."""
        name = str(node.target)
        dp = self.datapath
        src = node.args[0]
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        iq, wq = self.handle.quantizer(name, "input"), self.handle.quantizer(name, "weight")
        s_in, z_in = (float(t.reshape(-1)[0]) for t in iq.effective_qparams())
        z_in = int(z_in)
        target = TensorInfo("input", x_info.shape, iq.spec.bits, iq.spec.signed, s_in, z_in)
        x = self.as_codes_of(x, x_info, target)
        from quant.sim.fast import original_parameter

        s_w, z_w = wq.effective_qparams()
        w_codes = wq.codes(original_parameter(m))
        s_w64 = s_w.reshape(-1).to(torch.float64)
        bias = None
        b = wq.layer_bias(getattr(m, "bias", None))
        if isinstance(b, torch.Tensor):
            bias = rounding_fn(dp.quantize_rounding)(b.detach().to(torch.float64) / (s_in * s_w64)).to(torch.int64)
        info = self.info(node)
        y_min, y_max = self.clamp(self.fused_activation(node), info)
        kw: dict[str, Any] = dict(x_zero_point=z_in, w_zero_point=z_w.reshape(-1).to(torch.int64),
                                  y_zero_point=info.zero_point, multiplier=(s_in * s_w64 / info.scale),
                                  y_bits=info.bits, y_signed=info.signed, y_min=y_min, y_max=y_max, datapath=dp)  # fmt: skip
        if isinstance(m, nn.Conv2d):
            return ref.conv2d(x, w_codes, bias, stride=m.stride, padding=m.padding, dilation=m.dilation,  # type: ignore[arg-type]
                              groups=m.groups, **kw)  # fmt: skip
        if isinstance(m, nn.Conv1d):  # the contract's conv2d over (N, C, 1, L) with a (1, k) kernel
            pad = int(m.padding[0])  # a str padding is refused by the lowering
            y = ref.conv2d(x.unsqueeze(2), w_codes.unsqueeze(2), bias, stride=(1, m.stride[0]), padding=(0, pad),
                           dilation=(1, m.dilation[0]), groups=m.groups, **kw)  # fmt: skip
            return y.squeeze(2)
        rows = ref.linear(x.reshape(-1, x.shape[-1]), w_codes, bias, **kw)  # leading dimensions as rows
        return rows.reshape((*x.shape[:-1], rows.shape[-1]))

    def conv_transpose(self, node: torch.fx.Node, m: nn.ConvTranspose2d, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """A ``ConvTranspose2d`` with kernel == stride: the 1x1 conv2d of its weight rows, then depth-to-space."""
        from quant.lowering.lowerer import transposed_as_conv

        name = str(node.target)
        src = node.args[0]
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        iq = self.handle.quantizer(name, "input")
        s_in, z_in = (float(t.reshape(-1)[0]) for t in iq.effective_qparams())
        target = TensorInfo("input", x_info.shape, iq.spec.bits, iq.spec.signed, s_in, int(z_in))
        x = self.as_codes_of(x, x_info, target)
        rows, s_w, z_w, _ = transposed_as_conv(m, self.handle, name)
        kh, kw = m.kernel_size
        bias = None
        if m.bias is not None:
            b = m.bias.detach().to(torch.float64).repeat_interleave(kh * kw)
            bias = rounding_fn(self.datapath.quantize_rounding)(b / (s_in * s_w)).to(torch.int64)
        info = self.info(node)
        y_min, y_max = self.clamp(self.fused_activation(node), info)
        y = ref.conv2d(x, rows, bias, x_zero_point=int(z_in), w_zero_point=torch.tensor(z_w), y_zero_point=info.zero_point,
                       multiplier=(s_in * s_w / info.scale), y_bits=info.bits, y_signed=info.signed, y_min=y_min,
                       y_max=y_max, datapath=self.datapath)  # fmt: skip
        n, _, h, w = y.shape
        return y.reshape(n, -1, kh, kw, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, -1, h * kh, w * kw)

    def batchnorm(self, node: torch.fx.Node, m: nn.modules.batchnorm._BatchNorm,
                  codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """An unfolded BatchNorm: ``a_c x + b_c`` as a depthwise 1x1 conv2d with exact weight codes (section 9)."""
        from quant.lowering.lowerer import batchnorm_affine, exact_affine_weights

        src = node.args[0]
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        a, b = batchnorm_affine(m)
        w_codes, s_w = exact_affine_weights(a, self.datapath)
        info = self.info(node)
        y_min, y_max = self.clamp(self.fused_activation(node), info)
        bias = rounding_fn(self.datapath.quantize_rounding)(b / (x_info.scale * s_w)).to(torch.int64)
        c = x.shape[1]
        x4 = x if x.dim() == 4 else x.reshape(x.shape[0], c, 1, -1)
        y = ref.conv2d(x4, w_codes.reshape(c, 1, 1, 1), bias, x_zero_point=x_info.zero_point, w_zero_point=0,
                       y_zero_point=info.zero_point, multiplier=x_info.scale * s_w / info.scale, groups=c,
                       y_bits=info.bits, y_signed=info.signed, y_min=y_min, y_max=y_max, datapath=self.datapath)  # fmt: skip
        return y.reshape(x.shape)

    def constant(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """A value no input reaches, quantized with the plan's qparams, the same for every sample of the batch."""
        value = evaluate_constant(node, self.model, {})
        info = self.info(node)
        q = ref.quantize(value.to(torch.float32), scale=info.scale, zero_point=info.zero_point, bits=info.bits,
                         signed=info.signed, datapath=self.datapath)  # fmt: skip
        batch = next(c for n, c in codes.items() if n.op == "placeholder").shape[0]
        return q.expand(batch, *q.shape).clone()

    def recurrent(self, node: torch.fx.Node, m: nn.Module, out_node: torch.fx.Node,
                  codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """A quantized ``nn.LSTM`` / ``nn.GRU`` (:mod:`quant.lowering.recurrent`): the contract's lstm / gru per layer
        and direction on the reference, then the output sequence in the plan's qparams."""
        from quant.contract.lstm import LstmAttrs
        from quant.lowering.recurrent import layer_attrs, lstm_plan
        from quant.reference.gru import run_gru
        from quant.reference.lstm import run_lstm

        src = node.kwargs.get("input", node.args[0])
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        plan = lstm_plan(m, self.handle, str(node.target), self.datapath)
        first = plan[0][0].x
        info = TensorInfo("input", x_info.shape, first.spec.bits, first.spec.signed, first.scale, first.zero_point)
        x = self.as_codes_of(x, x_info, info)
        out_info = self.info(out_node)
        for i, directions in enumerate(plan):
            results = []
            for lp in directions:
                attrs = layer_attrs(m, lp, self.datapath)
                h = TensorInfo("hidden", info.shape, lp.h.spec.bits, lp.h.spec.signed, lp.h.scale, lp.h.zero_point)
                run = run_lstm if isinstance(attrs, LstmAttrs) else run_gru
                results.append((run(attrs, x, lp.w_ih, lp.w_hh, lp.b_ih, lp.b_hh), h))  # type: ignore[arg-type]
            if len(results) == 1:
                x, info = results[0]
                continue
            nxt = plan[i + 1][0].x if i + 1 < len(plan) else None
            info = out_info if nxt is None else TensorInfo("joined", info.shape, nxt.spec.bits, nxt.spec.signed,
                                                           nxt.scale, nxt.zero_point)  # fmt: skip
            x = torch.cat([self.as_codes_of(c, h, info) for c, h in results], dim=2)
        return self.as_codes_of(x, info, out_info)

    def attention(self, node: torch.fx.Node, m: nn.MultiheadAttention, out_node: torch.fx.Node,
                  codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:  # fmt: skip
        """A quantized ``nn.MultiheadAttention`` (:mod:`quant.lowering.attention`) on the reference, each tensor in
        its role's qparams, the output in the plan's."""
        from quant.contract.attrs import softmax_table
        from quant.lowering.attention import Projection, SiteQParams, attention_plan

        name = str(node.target)
        query, key, value = (node.kwargs.get(k, node.args[i] if len(node.args) > i else None)
                             for i, k in enumerate(("query", "key", "value")))  # fmt: skip
        info = self.info(out_node)
        spec = self.handle.quantizer(name, "input").spec.with_(bits=info.bits, signed=info.signed)
        plan = attention_plan(m, self.handle, name, self.datapath, same_key=key is query, same_value=value is query,
                              output=SiteQParams(info.scale, info.zero_point, spec))  # fmt: skip
        dp = self.datapath

        def as_site(q: torch.Tensor, src: TensorInfo, site: SiteQParams) -> tuple[torch.Tensor, TensorInfo]:
            dst = TensorInfo("site", src.shape, site.spec.bits, site.spec.signed, site.scale, site.zero_point)
            return self.as_codes_of(q, src, dst), dst

        def project(x: torch.Tensor, x_site: SiteQParams, p: Projection, out: TensorInfo) -> torch.Tensor:
            rows = ref.linear(x.reshape(-1, x.shape[-1]), p.codes, p.bias, x_zero_point=x_site.zero_point,
                              w_zero_point=torch.tensor(p.zero_point), y_zero_point=out.zero_point,
                              multiplier=p.multiplier, y_bits=out.bits, y_signed=out.signed, datapath=dp)  # fmt: skip
            return rows.reshape(*x.shape[:-1], rows.shape[-1])

        def site_info(site: SiteQParams) -> TensorInfo:
            return TensorInfo("site", (), site.spec.bits, site.spec.signed, site.scale, site.zero_point)

        def product(a: torch.Tensor, ia: TensorInfo, b: torch.Tensor, ib: TensorInfo, out: TensorInfo) -> torch.Tensor:
            attrs = MatmulAttrs.build(k=int(a.shape[-1]), n=int(b.shape[-1]), a_zero_point=ia.zero_point,
                                      b_zero_point=ib.zero_point, multiplier=ia.scale * ib.scale / out.scale,
                                      y_zero_point=out.zero_point, y_bits=out.bits, y_signed=out.signed, datapath=dp)  # fmt: skip
            dtype = np.int8 if ia.signed else np.uint8
            y = run_matmul(get_backend("torch_ref"), attrs, a.numpy().astype(dtype), b.numpy().astype(dtype))
            return torch.from_numpy(y.astype(np.int64))

        h, d = plan.heads, plan.head_dim
        projected = []
        for arg, x_site, p, label in zip((query, key, value), plan.inputs, plan.projections, ("query", "key", "value")):
            x, _ = as_site(codes[arg], self.info(arg), x_site)  # type: ignore[index, arg-type]
            projected.append(project(x, x_site, p, site_info(plan.sites[label])))
        n = projected[0].shape[0]
        q = projected[0].reshape(n, -1, h, d).permute(0, 2, 1, 3)
        k = projected[1].reshape(n, -1, h, d).permute(0, 2, 3, 1)
        v = projected[2].reshape(n, -1, h, d).permute(0, 2, 1, 3)
        iq, ik, iv, i_scores = (site_info(plan.sites[s]) for s in ("query", "key", "value", "scores"))
        scores = product(q.contiguous(), iq, k.contiguous(), ik, i_scores)
        p_codes = ref.softmax(scores, axis=3, x_bits=i_scores.bits, x_signed=i_scores.signed,
                              table=softmax_table(i_scores.scale, i_scores.bits), y_bits=dp.a_bits,
                              y_signed=dp.a_signed, datapath=dp)  # fmt: skip
        i_p = TensorInfo("softmax", (), dp.a_bits, dp.a_signed, 2.0**-dp.a_bits,
                         -(1 << (dp.a_bits - 1)) if dp.a_signed else 0)  # fmt: skip
        i_att = site_info(plan.sites["attention"])
        p_codes = self.as_codes_of(p_codes, i_p, i_att)
        i_ctx = site_info(plan.sites["context"])
        ctx = product(p_codes, i_att, v.contiguous(), iv, i_ctx)
        merged = ctx.permute(0, 2, 1, 3).reshape(n, -1, h * d)
        return project(merged, plan.sites["context"], plan.out_projection, info)

    def layernorm(self, node: torch.fx.Node, m: nn.LayerNorm, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """The contract's integer LayerNorm (section 6.5) of the input codes as its input quantizer sees them."""
        from quant.contract.layernorm import LAYERNORM_FRACTION_BITS, layernorm_eps_term
        from quant.lowering.lowerer import layernorm_parameters

        name = str(node.target)
        src = node.args[0]
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        if "input" in self.handle.configs.get(name, {}):
            iq = self.handle.quantizer(name, "input")
            s_in, z_in = (float(t.reshape(-1)[0]) for t in iq.effective_qparams())
            target = TensorInfo("input", x_info.shape, iq.spec.bits, iq.spec.signed, s_in, int(z_in))
            x, x_info = self.as_codes_of(x, x_info, target), target
        length = int(np.prod(m.normalized_shape))
        gamma, z_g, s_g, bias = layernorm_parameters(m, self.handle, name, self.datapath)
        info = self.info(node)
        y_min, y_max = self.clamp(self.fused_activation(node), info)
        rows = x.reshape(*x.shape[: x.dim() - len(m.normalized_shape)], length)
        y = ref.layernorm(rows, x_bits=x_info.bits, x_signed=x_info.signed,
                          eps_term=layernorm_eps_term(float(m.eps), x_info.scale, length),
                          multiplier=(s_g / (2**LAYERNORM_FRACTION_BITS * info.scale)).tolist(), y_zero_point=info.zero_point,
                          gamma=gamma, gamma_zero_point=z_g, bias=bias, y_bits=info.bits, y_signed=info.signed,
                          y_min=y_min, y_max=y_max, datapath=self.datapath)  # fmt: skip
        return y.reshape(x.shape)

    def softmax(self, node: torch.fx.Node, dim: Any, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """The contract's integer softmax (section 6.3) with the exponentials of the input's scale."""
        from quant.contract.attrs import softmax_table

        src = node.args[0]
        x, x_info = codes[src], self.info(src)  # type: ignore[index, arg-type]
        info = self.info(node)
        return ref.softmax(x, axis=int(dim) % x.dim(), x_bits=x_info.bits, x_signed=x_info.signed,
                           table=softmax_table(x_info.scale, x_info.bits), y_bits=info.bits, y_signed=info.signed,
                           datapath=self.datapath)  # fmt: skip

    def pool(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        from quant.lowering.lowerer import _Lowering

        x = codes[node.args[0]]  # type: ignore[index]
        parser = _Lowering(self.model, self.handle, self.datapath)
        one_d = x.dim() == 3
        if one_d:  # the contract's 2-D pools over (N, C, 1, L)
            kind, kernel, stride, padding, dilation = parser.pool1d_args(node, x.shape[2])
            x = x.unsqueeze(2)
        else:
            kind, kernel, stride, padding, dilation = parser.pool_args(node, tuple(x.shape))
        if kind == "max":
            y = ref.max_pool2d(x, kernel, stride, padding, dilation)
        else:
            y = ref.avg_pool2d(x, kernel, stride, padding, zero_point=self.info(node.args[0]).zero_point,  # type: ignore[arg-type]
                               datapath=self.datapath)  # fmt: skip
        return y.squeeze(2) if one_d else y

    def mean(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """The contract's global average pool of the codes with the kept dimensions first, then the reduced ones."""
        from quant.lowering.lowerer import mean_dims

        x = codes[node.args[0]]  # type: ignore[index]
        dims = mean_dims(node, x.dim())
        kept = [d for d in range(1, x.dim()) if d not in dims]
        grouped = x.permute(0, *kept, *dims).reshape(x.shape[0], -1, math.prod(x.shape[d] for d in dims), 1)
        y = ref.avg_pool2d(grouped, None, zero_point=self.info(node.args[0]).zero_point, datapath=self.datapath)  # type: ignore[arg-type]
        return y.reshape(x.shape[0], *(int(d or 0) for d in self.info(node).shape[1:]))

    def scalar_arithmetic(self, node: torch.fx.Node, codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """``quantize(x op c)`` (or ``c op x``) on the dequantized tensor operand, the number as it is."""
        args = [_dequantize(codes[a], self.info(a)) if isinstance(a, torch.fx.Node) else a for a in node.args]
        if node.op == "call_method":
            y = getattr(args[0], str(node.target))(*args[1:])
        else:
            y = node.target(*args)  # type: ignore[operator]
        info = self.info(node)
        return ref.quantize(y.to(torch.float32), scale=info.scale, zero_point=info.zero_point, bits=info.bits,
                            signed=info.signed, datapath=self.datapath)  # fmt: skip

    def elementwise(self, node: torch.fx.Node, m: Optional[nn.Module], codes: dict[torch.fx.Node, torch.Tensor]) -> torch.Tensor:
        """``quantize(f(dequantize(q)))`` with ``f`` the module or function itself."""
        src = node.args[0]
        x = _dequantize(codes[src], self.info(src))  # type: ignore[index, arg-type]
        if m is not None:
            y = m.forward(x)  # the module's own function, without its hooks
        elif node.op == "call_method":
            y = getattr(x, str(node.target))(*node.args[1:], **node.kwargs)
        else:  # a parameter argument (F.prelu's slopes) is read from the model
            from quant.lowering.lowerer import constant_tensor

            extra = [constant_tensor(self.model, a) if isinstance(a, torch.fx.Node) else a for a in node.args[1:]]
            y = node.target(x, *extra, **node.kwargs)  # type: ignore[operator]
        info = self.info(node)
        return ref.quantize(y.to(torch.float32), scale=info.scale, zero_point=info.zero_point, bits=info.bits,
                            signed=info.signed, datapath=self.datapath)  # fmt: skip
