"""``lower(model, handle, example_input, datapath=...)``: a calibrated model as an :class:`IntegerProgram`.

The model is traced with ``torch.fx`` (its leaf modules as nodes) and shapes are propagated
with ``example_input``, which is used for nothing else: every scale comes from calibration.
Each graph node becomes integer ops on codes:

* every tensor the program materializes has one set of qparams: the ``input`` quantizer of
  the quantized Conv/Linear that consumes it (looking through ops that commute with
  quantization: reshapes, dropout, identity, max pooling), otherwise the statistics that
  ``handle.calibrate()`` collected for that node (:mod:`quant.sim.edges`, with the recipe's
  activation scheme; at 8 bits for a tensor the program only returns, which is no datapath
  operand). A consumer whose input quantizer has other qparams gets a ``requantize`` in front of it;
* Conv2d, Conv1d (as a conv2d over ``(N, C, 1, L)``) and Linear (on ``(..., K)``: the leading
  dimensions are rows), with weight and input schemes: weight codes from the weight
  quantizer (packed for 1, 2, 4 bits), bias ``round(b / (s_x s_w))`` in the datapath's input
  rounding (``Datapath.quantize_rounding``), multiplier ``s_x s_w / s_y`` in float64; a
  following ReLU, ReLU6 or Hardtanh (module or function) is fused as the output clamp;
* ``x + y`` (``operator.add``, ``torch.add``, ``Tensor.add``): the contract's ``add``, and
  ``x * y`` (a squeeze-excitation gate broadcast per channel too): the contract's ``mul``
  with ``M = s_a s_b / s_y``; both with a fused clamp as above;
* ``torch.matmul``, ``a @ b``, ``torch.bmm`` of two activation tensors ``(N, ..., M, K)`` and
  ``(N, ..., K, N')``: the contract's ``matmul`` (section 6.4) with ``M = s_a s_b / s_y``;
* max, average, adaptive-average (global or evenly dividing) pooling, 1-D and 2-D: the
  contract's 2-D pools, whose codes keep their input's qparams (average pooling counts only
  unpadded elements, so a padded average pool needs ``count_include_pad=False``);
* ``x.mean(dims)`` over dimensions after the batch: a global average pool of the codes viewed as
  ``(N, kept, reduced, 1)``, keeping their qparams;
* ``torch.cat``: every input requantized to the output's qparams (none where they agree), then
  the codes joined; ``F.pad`` with zeros: padding with the zero point;
* ``ConvTranspose2d`` with kernel == stride (U-Net upsampling): a 1x1 conv2d to ``C_out kh kw`` channels,
  then a depth-to-space of the codes (reshape, permute, reshape);
* a BatchNorm that did not fold (``quant.fold_bn`` folds those after a conv): its eval-mode
  affine ``a_c x + b_c`` as a depthwise 1x1 conv2d, weight codes ``sign(a_c) qmax`` with
  ``s_w = |a_c| / qmax`` (exact; the nearest power of two on ``pow2`` datapaths);
* ``x[...]`` with slices and ints after the batch (``x[:, -1]``): ``slice`` per narrowed dimension and a
  ``reshape`` for the ints;
* flatten, view, reshape, squeeze, unsqueeze: ``reshape``; permute, transpose: ``permute``
  (the batch stays first); dropout and identity: nothing;
* ``nn.LayerNorm``: the contract's integer LayerNorm (section 6.5) over its normalized elements, gamma
  as the int8 codes of its weight quantizer, ``M = s_g / (2^15 s_y)``, bias ``round(2^15 beta / s_g)``;
* softmax over a dimension: the contract's integer softmax (section 6.3), output codes of
  scale ``2^-b`` whatever the consumer (a consumer with other qparams reads it requantized);
* any other elementwise function of one tensor (sigmoid, tanh, hardswish, GELU, SiLU, a
  standalone ReLU, ...): an exact lookup table ``table[q] = Q_out(f(s_in (q - z_in)))`` over
  the input's ``2^b`` codes, computed with the module or function itself (arithmetic with a number,
  ``x * c``, ``x / c``, ``x + c``, ``c - x``, as attention's ``q / sqrt(d)``, likewise); PReLU with
  per-channel slopes (``nn.PReLU(C)``, ``F.prelu(x, weight)``): one table per channel; a function
  the user writes, marked with :func:`quant.elementwise`, likewise;
* ``nn.LSTM`` / ``nn.GRU`` (batch first, no initial state): one ``lstm`` / ``gru`` op per layer and
  direction (sections 6.6, 6.7, :mod:`quant.lowering.recurrent`), whose output codes are the layer's hidden
  state's, both directions concatenated;
* a value no input reaches (a learned position embedding ``self.positions(self.steps)``, a parameter added
  to a tensor): ``constant`` codes, the same for every sample, quantized once with its consumer's input
  scheme or the recipe's activation scheme over its own range (:mod:`quant.sim.tracing`);
* a custom op registered with :func:`quant.register_op`: one node of that op, its integer
  parameters from its ``integer_params`` on the operands' qparams and the call's options.

Anything else is a ``ValueError`` naming the op, the graph node and the source line.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union, cast

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn.utils import parametrize

from quant.contract.attrs import (
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    MulAttrs,
    RequantizeAttrs,
    SoftmaxAttrs,
    softmax_table,
)
from quant.contract.codes import PACKED_BITS, code_range
from quant.contract.custom import CustomOpDef
from quant.contract.datapath import Datapath
from quant.lowering.attention import Projection, SiteQParams, attention_plan
from quant.lowering.recurrent import layer_attrs, lstm_plan
from quant.contract.layernorm import LAYERNORM_FRACTION_BITS, LayerNormAttrs, layernorm_eps_term
from quant.contract.matmul import MatmulAttrs
from quant.custom.registry import custom_attrs, custom_op_of, elementwise_function_of
from quant.contract.spec import QuantSpec
from quant.ir.ops import ConcatAttrs, ConstantAttrs, PadAttrs, PermuteAttrs, ReshapeAttrs, SliceAttrs
from quant.sim.qparams import qparams_from_range
from quant.ir.program import IntegerProgram, Node, PackedTensor, TensorInfo
from quant.reference.packing import pack
from quant.reference.quantize import quantize as quantize_to_codes
from quant.reference.rounding import rounding_fn
from quant.sim.attach import QuantHandle
from quant.sim.edges import call_site, input_site, is_leaf_module, module_site
from quant.sim.fast import original_parameter
from quant.sim.tracing import ModelTracer, constant_nodes, evaluate_constant

__all__ = ["LoweringError", "lower"]

_ADD = {operator.add, torch.add, "add", "__add__", operator.iadd, "add_", "__iadd__"}
_MUL = {operator.mul, torch.mul, "mul", "__mul__", operator.imul, "mul_", "__imul__"}
_SUB = {operator.sub, torch.sub, "sub", "__sub__", operator.isub, "sub_", "__isub__", "__rsub__"}
_DIV = {operator.truediv, torch.div, "div", "__truediv__", operator.itruediv, "div_", "__itruediv__"}
_MATMUL = {operator.matmul, torch.matmul, torch.bmm, "matmul", "__matmul__", "bmm"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_NOOP_MODULES = (nn.Dropout, nn.Identity)
_CLAMP_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_CLAMP_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, "relu", "relu_"}
#: Elementwise modules and functions lowered to a lookup table when they are not fused.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.SiLU, nn.ELU,
    nn.LeakyReLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.PReLU,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardtanh, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardswish,
    F.hardsigmoid, F.gelu, F.silu, F.elu, F.leaky_relu, F.mish, F.softplus, "relu", "sigmoid", "tanh", "relu_",
}  # fmt: skip


class LoweringError(ValueError):
    """A model (or a part of it) that cannot become an integer program."""


class QParams(NamedTuple):
    """The qparams of a tensor of codes and where they come from (named in errors)."""

    scale: float
    zero_point: int
    spec: QuantSpec
    source: str


@dataclass
class _Edge:
    """A materialized tensor of codes: its program name and qparams."""

    name: str
    info: TensorInfo


#: Frames of a node's stack trace that are not the user's code: torch, the function a custom op calls through,
#: and the tracer's expansion of PyTorch's transformer encoder.
_NOT_USER = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1] / "custom" / "registry.py"),
             str(Path(__file__).parents[1] / "sim" / "tracing.py"))


def _where(node: torch.fx.Node) -> str:
    """``graph node 'x' at File "model.py", line 12: code`` (the last frame outside torch)."""
    lines = [ln.rstrip() for ln in (node.meta.get("stack_trace") or "").splitlines() if ln.strip()]
    frames = []
    for i, ln in enumerate(lines):
        if ln.strip().startswith("File "):
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File ") else ""
            frames.append((ln.strip(), code))
    user = [f for f in frames if not any(d in f[0] for d in _NOT_USER)]
    if not user:
        return f"graph node {node.name!r}"
    src, code = user[-1]
    return f"graph node {node.name!r} at {src}{': ' + code if code else ''}"


def _target_name(node: torch.fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return parametrize.type_before_parametrizations(model.get_submodule(str(node.target))).__name__
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _is(node: torch.fx.Node, targets: set[Any]) -> bool:
    if node.op == "call_function":
        return node.target in targets
    if node.op == "call_method":
        return node.target in targets
    return False


class _Lowering:
    def __init__(self, model: nn.Module, handle: QuantHandle, datapath: Datapath) -> None:
        self.model = model
        self.handle = handle
        self.dp = datapath
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: list[Node] = []
        self.env: dict[torch.fx.Node, _Edge] = {}
        self.done: set[torch.fx.Node] = set()
        self.constants: set[torch.fx.Node] = set()  # the nodes no input reaches (set by run)
        self.constant_values: dict[torch.fx.Node, Any] = {}
        self.inputs: list[torch.fx.Node] = []
        self.sites: dict[torch.fx.Node, str] = {}
        self.fused: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        self.quantized = dict(handle.modules)

    # ------------------------------------------------------------------ helpers
    def fail(self, node: torch.fx.Node, what: str) -> LoweringError:
        return LoweringError(f"lower: {what} ({_where(node)})")

    def module(self, node: torch.fx.Node) -> nn.Module:
        return self.model.get_submodule(str(node.target))

    def shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise self.fail(node, "the example input gave this node no tensor shape")
        return tuple(int(s) for s in meta.shape)

    def input_quantizer_qparams(self, name: str) -> Optional[QParams]:
        configs = self.handle.configs.get(name, {})
        if "input" not in configs:
            return None
        q = self.handle.quantizer(name, "input")
        s, z = q.effective_qparams()
        return QParams(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), q.spec, f"the input scheme of module {name!r}")

    def consumer_qparams(self, node: torch.fx.Node) -> Optional[QParams]:
        """The input quantizer of the first quantized Conv/Linear reached from ``node`` through code-keeping ops."""
        for user in node.users:
            if user.op == "call_module" and str(user.target) in self.quantized:
                found = self.input_quantizer_qparams(str(user.target))
                if found is not None and user.args and user.args[0] is node:
                    return found
            if self.keeps_codes(user):
                found = self.consumer_qparams(user)
                if found is not None:
                    return found
        return None

    def keeps_codes(self, node: torch.fx.Node) -> bool:
        """Ops through which a consumer's input quantizer may choose its producer's qparams: those that
        commute with quantization (reshapes, no-ops, max pooling), not averaging (which narrows the range)."""
        if node.op == "call_module":
            return isinstance(self.module(node), (*_NOOP_MODULES, nn.Flatten, nn.MaxPool2d, nn.MaxPool1d))
        if node.op in ("call_function", "call_method"):
            t = node.target
            return (t in (torch.flatten, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose, F.max_pool2d,
                          F.dropout, F.pad) or t in _RESHAPE_METHODS or t in ("contiguous", "permute", "transpose"))  # fmt: skip
        return False

    def observed_qparams(self, node: torch.fx.Node) -> QParams:
        edges = self.handle.edges
        config = self.handle.activation_config
        site = self.sites.get(node)
        if edges is None or config is None or site is None or not edges.has(site):
            raise self.fail(node, "no statistics for this tensor: run handle.calibrate() over data that reaches it "
                                  "(the recipe needs an input scheme, whose spec the tensors without a quantizer take)")
        if self.is_program_output(node):
            spec = config.spec.with_(bits=8)  # outputs feed no datapath operand: full 8-bit codes
            s, z = edges.qparams(site, spec)
            return QParams(s, z, spec, "the recipe's activation scheme at 8 bits (a program output)")
        s, z = edges.qparams(site)
        return QParams(s, z, config.spec, "the recipe's activation scheme")

    def is_program_output(self, node: torch.fx.Node) -> bool:
        """Whether ``node``'s value is only returned (consumed by no op), so its codes may be 8 bits wide."""
        return bool(node.users) and all(u.op == "output" for u in node.users)

    def qparams_for(self, node: torch.fx.Node) -> QParams:
        """The qparams of the tensor ``node`` produces (see the module docstring)."""
        found = self.consumer_qparams(node)
        return found if found is not None else self.observed_qparams(node)

    def unique(self, name: str) -> str:
        while name in self.tensors:
            name += "_"
        return name

    def new_tensor(self, node: torch.fx.Node, shape: Sequence[int], qp: QParams) -> _Edge:
        s, z, spec, source = qp
        try:
            if not self.is_program_output(node):  # an output is no operand: any width requantization gives
                self.dp.check_spec(spec, "activation")
        except ValueError as err:
            raise self.fail(node, f"{source}: {err}") from None
        name = self.unique(node.name)
        info = TensorInfo(name, (None, *shape[1:]), spec.bits, spec.signed, s, z)
        self.tensors[name] = info
        return _Edge(name, info)

    def same_codes(self, node: torch.fx.Node, x: _Edge) -> _Edge:
        """A new tensor for ``node``'s output holding codes of ``x``'s qparams (pooling, reshapes)."""
        name = self.unique(node.name)
        info = TensorInfo(name, (None, *self.shape(node)[1:]), x.info.bits, x.info.signed, x.info.scale,
                          x.info.zero_point)  # fmt: skip
        self.tensors[name] = info
        return _Edge(name, info)

    def emit(self, node: torch.fx.Node, op: str, inputs: Sequence[_Edge], out: _Edge, attrs: Any,
             params: Optional[dict[str, Any]] = None) -> _Edge:  # fmt: skip
        """Append the op writing ``out`` (named after the tensor it writes)."""
        self.nodes.append(Node(out.name, op, tuple(e.name for e in inputs), out.name, attrs, params or {}))
        return out

    def emit_reshaped(self, node: torch.fx.Node, op: str, inputs: Sequence[_Edge], shape: Sequence[int], out: _Edge,
                      attrs: Any, params: Optional[dict[str, Any]], suffix: str) -> None:  # fmt: skip
        """``op`` writing a tensor of ``out``'s qparams and per-sample ``shape`` (named ``<out>_<suffix>``), then
        the ``reshape`` of it to ``out`` (an op that computes in another layout than its result's)."""
        name = self.unique(f"{out.name}_{suffix}")
        info = TensorInfo(name, (None, *shape), out.info.bits, out.info.signed, out.info.scale, out.info.zero_point)
        self.tensors[name] = info
        inner = self.emit(node, op, inputs, _Edge(name, info), attrs, params)
        self.emit(node, "reshape", [inner], out, ReshapeAttrs.build(shape=out.info.shape[1:]))  # type: ignore[arg-type]

    def edge(self, node: torch.fx.Node, arg: Any) -> _Edge:
        if isinstance(arg, torch.fx.Node) and arg not in self.env and arg in self.constants:
            self.constant(node, arg)
        if not isinstance(arg, torch.fx.Node) or arg not in self.env:
            raise self.fail(node, f"an input of {_target_name(node, self.model)} is not a tensor the program computes")
        return self.env[arg]

    def constant(self, user: torch.fx.Node, node: torch.fx.Node) -> None:
        """The ``constant`` codes of ``node``, a value no input reaches (:mod:`quant.sim.tracing`), in the
        qparams of its consumer's input scheme or of its own range (the recipe's activation scheme)."""
        value = evaluate_constant(node, self.model, self.constant_values)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise self.fail(user, f"an input of {_target_name(user, self.model)} is a constant that is not a float tensor")
        config = self.handle.activation_config
        qp = self.consumer_qparams(node)
        if qp is None:
            if config is None:
                raise self.fail(user, "a constant operand needs the recipe's activation scheme for its codes")
            spec = config.spec
            s, z = qparams_from_range(value.amin().reshape(1).float(), value.amax().reshape(1).float(), spec)
            qp = QParams(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), spec, "the recipe's activation scheme over "
                         "the constant's own range")  # fmt: skip
        codes = quantize_to_codes(value.to(torch.float32), scale=qp.scale, zero_point=qp.zero_point, bits=qp.spec.bits,
                                  signed=qp.spec.signed, datapath=self.dp)  # fmt: skip
        if not self.inputs:
            raise self.fail(user, "a constant operand in a program without inputs")
        name = self.unique(node.name)
        info = TensorInfo(name, (None, *value.shape), qp.spec.bits, qp.spec.signed, qp.scale, qp.zero_point)
        self.tensors[name] = info
        self.env[node] = self.emit(node, "constant", [self.env[self.inputs[0]]], _Edge(name, info),
                                   ConstantAttrs.build(shape=tuple(value.shape)),
                                   {"codes": codes.numpy().astype(np.int8 if qp.spec.signed else np.uint8)})  # fmt: skip

    def requantize_to(self, node: torch.fx.Node, e: _Edge, qp: QParams) -> _Edge:
        """``e`` as codes of ``qp``: ``e`` itself when they already are, else the output of a requantize op."""
        s, z, spec, _ = qp
        if (e.info.scale, e.info.zero_point, e.info.bits, e.info.signed) == (s, z, spec.bits, spec.signed):
            return e
        name = self.unique(f"{e.name}_rq")
        info = TensorInfo(name, e.info.shape, spec.bits, spec.signed, s, z)
        self.tensors[name] = info
        attrs = RequantizeAttrs.build(in_zero_point=e.info.zero_point, multiplier=e.info.scale / s, y_zero_point=z,
                                      y_bits=spec.bits, y_signed=spec.signed, datapath=self.dp)  # fmt: skip
        return self.emit(node, "requantize", [e], _Edge(name, info), attrs)

    # ------------------------------------------------------------------ fusion of clamps
    def is_noop(self, node: torch.fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.module(node), _NOOP_MODULES)
        return node.op in ("call_function", "call_method") and (node.target is F.dropout or node.target == "contiguous")

    def fusable_clamp(self, node: torch.fx.Node) -> tuple[Optional[torch.fx.Node], list[torch.fx.Node]]:
        """The ReLU/ReLU6/Hardtanh that is ``node``'s only user (through no-ops such as a folded BatchNorm's
        Identity), if any, and the no-ops passed on the way."""
        passed: list[torch.fx.Node] = []
        cur = node
        while len(cur.users) == 1:
            (user,) = cur.users
            if self.is_noop(user):
                passed.append(user)
                cur = user
                continue
            if user.op == "call_module" and isinstance(self.module(user), _CLAMP_MODULES):
                return user, passed
            if _is(user, _CLAMP_FUNCTIONS) and user.args and user.args[0] is cur:
                return user, passed
            break
        return None, []

    def clamp_bounds(self, act: Optional[torch.fx.Node], s: float, z: int, spec: QuantSpec) -> tuple[int, int]:
        lo, hi = spec.qmin, spec.qmax
        if act is None:
            return lo, hi
        rnd = rounding_fn(self.dp.quantize_rounding)
        if act.op == "call_module":
            m = self.module(act)
            if isinstance(m, nn.ReLU6):
                low, high = 0.0, 6.0
            elif isinstance(m, nn.Hardtanh):
                low, high = float(m.min_val), float(m.max_val)
            else:
                low, high = 0.0, float("inf")
        elif act.target is F.relu6:
            low, high = 0.0, 6.0
        elif act.target is F.hardtanh:
            low = float(cast(float, act.kwargs.get("min_val", act.args[1] if len(act.args) > 1 else -1.0)))
            high = float(cast(float, act.kwargs.get("max_val", act.args[2] if len(act.args) > 2 else 1.0)))
        else:
            low, high = 0.0, float("inf")

        def code(v: float) -> int:
            return int(rnd(torch.tensor(v / s, dtype=torch.float64)).item()) + z

        lo = max(lo, code(low))
        if high != float("inf"):
            hi = min(hi, code(high))
        if lo > hi:
            raise self.fail(act, f"the clamp [{low}, {high}] leaves no code of the output range")
        return lo, hi

    def finish_fused(self, node: torch.fx.Node) -> tuple[Optional[torch.fx.Node], torch.fx.Node]:
        """The fused activation (or None) and the node whose output the op writes; the nodes it
        absorbs are marked done."""
        act, passed = self.fusable_clamp(node)
        if act is None:
            return None, node
        self.done.update(passed)
        self.done.add(act)
        self.fused[act] = passed
        return act, act

    def bind(self, node: torch.fx.Node, last: torch.fx.Node, out: _Edge) -> None:
        """``out`` is the tensor of ``node``, of the activation fused into it and of the no-ops between."""
        self.env[node] = self.env[last] = out
        for n in self.fused.get(last, []):
            self.env[n] = out

    # ------------------------------------------------------------------ ops
    def conv_or_linear(self, node: torch.fx.Node) -> None:
        name = str(node.target)
        m = self.module(node)
        configs = self.handle.configs.get(name, {})
        if "weight" not in configs or "input" not in configs:
            raise self.fail(node, f"{type(m).__name__} {name!r} needs a weight and an input scheme in the recipe "
                                  "to run on the integer datapath")  # fmt: skip
        wq, iq = self.handle.quantizer(name, "weight"), self.handle.quantizer(name, "input")
        for role, q in (("weight", wq), ("activation", iq)):
            try:
                self.dp.check_spec(q.spec, role)
            except ValueError as err:
                raise self.fail(node, f"module {name!r}: {err}") from None
        x = self.edge(node, node.args[0])
        x_qp = self.input_quantizer_qparams(name)
        assert x_qp is not None  # the recipe gives it an input scheme (checked above)
        s_x, z_x = x_qp.scale, x_qp.zero_point
        x = self.requantize_to(node, x, x_qp)
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        s_y, z_y, y_spec = y_qp.scale, y_qp.zero_point, y_qp.spec
        lo, hi = self.clamp_bounds(act, s_y, z_y, y_spec)
        with torch.no_grad():
            w = original_parameter(m)
            s_w, z_w = wq.effective_qparams()
            codes = wq.codes(w)
        s_wc = s_w.reshape(-1).to(torch.float64)
        bias = wq.layer_bias(getattr(m, "bias", None))
        b_codes = None
        if bias is not None:
            rnd = rounding_fn(self.dp.quantize_rounding)
            b_real = bias.detach().to(torch.float64) / (s_x * s_wc)
            b_codes = rnd(b_real).to(torch.int64)
            lo_b, hi_b = self.dp.bias_range
            if int(b_codes.min()) < lo_b or int(b_codes.max()) > hi_b:
                raise self.fail(node, f"module {name!r}: the bias needs {int(b_codes.abs().max())} in units of "
                                      f"s_x s_w, beyond Datapath.bias_bits={self.dp.bias_bits}")  # fmt: skip
        multiplier = (s_x * s_wc / s_y).tolist()
        zw = [int(v) for v in z_w.reshape(-1).tolist()]
        out_shape = self.shape(last)
        out = self.new_tensor(last, out_shape, y_qp)
        common: dict[str, Any] = dict(x_zero_point=z_x, w_zero_point=zw, y_zero_point=z_y, multiplier=multiplier, y_bits=y_spec.bits,
                      y_signed=y_spec.signed, y_min=lo, y_max=hi, datapath=self.dp)  # fmt: skip
        params: dict[str, Any] = {"weight": self.weight_param(codes, wq.spec)}
        if b_codes is not None:
            params["bias"] = b_codes.numpy().astype(np.int32)
        try:
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                if m.padding_mode != "zeros" or isinstance(m.padding, str):
                    raise self.fail(node, f"{type(m).__name__} {name!r}: padding={m.padding!r}, padding_mode="
                                          f"{m.padding_mode!r} (only explicit zero padding is lowered)")  # fmt: skip
                if isinstance(m, nn.Conv1d):  # a conv2d over (N, C, 1, L) with a (1, k) kernel
                    codes = codes.unsqueeze(2)
                    params["weight"] = self.weight_param(codes, wq.spec)
                    geometry: dict[str, Any] = dict(stride=(1, m.stride[0]), padding=(0, m.padding[0]),
                                                    dilation=(1, m.dilation[0]))  # fmt: skip
                    x = self.reshaped(node, x, (x.info.shape[1], 1, x.info.shape[2]))  # type: ignore[arg-type]
                else:
                    geometry = dict(stride=m.stride, padding=m.padding, dilation=m.dilation)
                attrs: Any = Conv2dAttrs.build(w_shape=tuple(codes.shape), groups=m.groups, **geometry, **common)
                op = "conv2d"
            else:
                attrs = LinearAttrs.build(w_shape=tuple(codes.shape), **common)
                op = "linear"
        except ValueError as err:
            raise self.fail(node, f"module {name!r}: {err}") from None
        if isinstance(m, nn.Conv1d):
            self.emit_reshaped(node, op, [x], (out_shape[1], 1, out_shape[2]), out, attrs, params, "2d")
        else:
            self.emit(node, op, [x], out, attrs, params)
        self.bind(node, last, out)

    def conv_transpose(self, node: torch.fx.Node, m: nn.ConvTranspose2d) -> None:
        """A ``ConvTranspose2d`` whose kernel equals its stride (no padding, dilation or groups): every output is
        one input pixel's products, so it is a 1x1 ``conv2d`` to ``C_out kh kw`` channels, then a depth-to-space
        of the codes (``reshape``, ``permute``, ``reshape``)."""
        name = str(node.target)
        configs = self.handle.configs.get(name, {})
        if "weight" not in configs or "input" not in configs:
            raise self.fail(node, f"ConvTranspose2d {name!r} needs a weight and an input scheme in the recipe")
        try:
            codes, s_w, z_w, spec = transposed_as_conv(m, self.handle, name)
            self.dp.check_spec(spec, "weight")
        except ValueError as err:
            raise self.fail(node, f"ConvTranspose2d {name!r}: {err}") from None
        x_qp = self.input_quantizer_qparams(name)
        assert x_qp is not None
        x = self.requantize_to(node, self.edge(node, node.args[0]), x_qp)
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        lo, hi = self.clamp_bounds(act, y_qp.scale, y_qp.zero_point, y_qp.spec)
        kh, kw = m.kernel_size
        blocks = kh * kw
        bias = None
        if m.bias is not None:
            b = m.bias.detach().to(torch.float64).repeat_interleave(blocks)
            bias = rounding_fn(self.dp.quantize_rounding)(b / (x_qp.scale * s_w)).to(torch.int64)
            lo_b, hi_b = self.dp.bias_range
            if int(bias.min()) < lo_b or int(bias.max()) > hi_b:
                raise self.fail(node, f"ConvTranspose2d {name!r}: the bias needs {int(bias.abs().max())} in units of "
                                      f"s_x s_w, beyond Datapath.bias_bits={self.dp.bias_bits}")  # fmt: skip
        n_in, c_in, h, w = self.shape(node.args[0])  # type: ignore[arg-type]
        c_out = m.out_channels
        try:
            attrs = Conv2dAttrs.build(w_shape=tuple(codes.shape), x_zero_point=x_qp.zero_point, w_zero_point=z_w,
                                      y_zero_point=y_qp.zero_point, multiplier=(x_qp.scale * s_w / y_qp.scale).tolist(),
                                      y_bits=y_qp.spec.bits, y_signed=y_qp.spec.signed, y_min=lo, y_max=hi,
                                      datapath=self.dp)  # fmt: skip
        except ValueError as err:
            raise self.fail(node, f"ConvTranspose2d {name!r}: {err}") from None
        params: dict[str, Any] = {"weight": self.weight_param(codes, spec)}
        if bias is not None:
            params["bias"] = bias.numpy().astype(np.int32)
        t = self.unique(f"{name}.blocks")
        info = TensorInfo(t, (None, c_out * blocks, h, w), y_qp.spec.bits, y_qp.spec.signed, y_qp.scale, y_qp.zero_point)
        if not self.is_program_output(last):
            try:
                self.dp.check_spec(y_qp.spec, "activation")
            except ValueError as err:
                raise self.fail(node, f"{y_qp.source}: {err}") from None
        self.tensors[t] = info
        y = self.emit(node, "conv2d", [x], _Edge(t, info), attrs, params)
        steps = [("reshape", (c_out, kh, kw, h, w), ReshapeAttrs.build(shape=(c_out, kh, kw, h, w))),
                 ("permute", (c_out, h, kh, w, kw), PermuteAttrs.build(dims=(0, 1, 4, 2, 5, 3)))]  # fmt: skip
        for op, shape, a in steps:
            t = self.unique(f"{name}.{op}")
            info = TensorInfo(t, (None, *shape), y.info.bits, y.info.signed, y.info.scale, y.info.zero_point)
            self.tensors[t] = info
            y = self.emit(node, op, [y], _Edge(t, info), a)
        out = self.emit(node, "reshape", [y], self.same_codes(last, y), ReshapeAttrs.build(shape=(c_out, h * kh, w * kw)))
        self.bind(node, last, out)

    def batchnorm(self, node: torch.fx.Node, m: nn.modules.batchnorm._BatchNorm) -> None:
        """A BatchNorm that did not fold (e.g. after an activation): the per-channel affine
        ``y = a_c x + b_c`` as a depthwise 1x1 conv2d whose weight codes are exact (section 9)."""
        if m.training or m.running_mean is None or m.running_var is None:
            raise self.fail(node, f"BatchNorm {str(node.target)!r} needs eval mode and running statistics "
                                  "(model.eval()); fold it with quant.fold_bn where it follows a conv")  # fmt: skip
        x = self.edge(node, node.args[0])
        shape = x.info.shape
        channels = int(shape[1])  # type: ignore[arg-type]
        a, b = batchnorm_affine(m)
        try:
            w_codes, s_w = exact_affine_weights(a, self.dp)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        lo, hi = self.clamp_bounds(act, y_qp.scale, y_qp.zero_point, y_qp.spec)
        bias = rounding_fn(self.dp.quantize_rounding)(b / (x.info.scale * s_w)).to(torch.int64)
        lo_b, hi_b = self.dp.bias_range
        if int(bias.min()) < lo_b or int(bias.max()) > hi_b:
            raise self.fail(node, f"BatchNorm {str(node.target)!r}: the shift needs {int(bias.abs().max())} in units "
                                  f"of s_x s_w, beyond Datapath.bias_bits={self.dp.bias_bits}")  # fmt: skip
        spatial = tuple(int(d) for d in shape[2:])  # type: ignore[arg-type]
        x4 = x if len(spatial) == 2 else self.reshaped(node, x, (channels, 1, spatial[0] if spatial else 1))
        try:
            attrs = Conv2dAttrs.build(
                w_shape=(channels, 1, 1, 1), x_zero_point=x.info.zero_point, w_zero_point=0,
                y_zero_point=y_qp.zero_point, multiplier=(x.info.scale * s_w / y_qp.scale).tolist(), groups=channels,
                y_bits=y_qp.spec.bits, y_signed=y_qp.spec.signed, y_min=lo, y_max=hi, datapath=self.dp,
            )  # fmt: skip
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        params = {"weight": self.weight_param(w_codes.reshape(channels, 1, 1, 1), self.weight_spec()),
                  "bias": bias.numpy().astype(np.int32)}  # fmt: skip
        out = self.new_tensor(last, self.shape(last), y_qp)
        if x4 is x:
            self.emit(node, "conv2d", [x4], out, attrs, params)
        else:
            self.emit_reshaped(node, "conv2d", [x4], x4.info.shape[1:], out, attrs, params, "2d")  # type: ignore[arg-type]
        self.bind(node, last, out)

    def layernorm(self, node: torch.fx.Node, m: nn.LayerNorm) -> None:
        """The contract's integer LayerNorm (section 6.5) over the ``prod(normalized_shape)`` last elements: gamma
        as int8 codes of the module's weight quantizer, ``M = s_g / (2^15 s_y)``, ``b = round(2^15 beta / s_g)``."""
        name = str(node.target)
        x = self.edge(node, node.args[0])
        x_qp = self.input_quantizer_qparams(name)
        if x_qp is not None:
            x = self.requantize_to(node, x, x_qp)
        in_shape = self.shape(node.args[0])  # type: ignore[arg-type]
        k = len(m.normalized_shape)
        length = math.prod(in_shape[len(in_shape) - k:])
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        lo, hi = self.clamp_bounds(act, y_qp.scale, y_qp.zero_point, y_qp.spec)
        try:
            gamma, z_g, s_g, bias = layernorm_parameters(m, self.handle, name, self.dp)
            attrs = LayerNormAttrs.build(
                length=length, x_bits=x.info.bits, x_signed=x.info.signed,
                eps_term=layernorm_eps_term(float(m.eps), x.info.scale, length),
                multiplier=(s_g / (2**LAYERNORM_FRACTION_BITS * y_qp.scale)).tolist(), y_zero_point=y_qp.zero_point,
                gamma_zero_point=z_g, y_bits=y_qp.spec.bits, y_signed=y_qp.spec.signed, y_min=lo, y_max=hi,
                datapath=self.dp,
            )  # fmt: skip
        except ValueError as err:
            raise self.fail(node, f"LayerNorm {name!r}: {err}") from None
        params: dict[str, Any] = {}
        if gamma is not None:
            params["gamma"] = gamma.numpy().astype(np.int8)
        if bias is not None:
            params["bias"] = bias.numpy().astype(np.int32)
        rows = self.reshaped(node, x, (*in_shape[1:len(in_shape) - k], length)) if k > 1 else x
        out = self.new_tensor(last, self.shape(last), y_qp)
        if k > 1:
            self.emit_reshaped(node, "layernorm", [rows], rows.info.shape[1:], out, attrs, params, "rows")  # type: ignore[arg-type]
        else:
            self.emit(node, "layernorm", [rows], out, attrs, params)
        self.bind(node, last, out)

    def attention(self, node: torch.fx.Node, m: nn.MultiheadAttention) -> None:
        """A quantized ``nn.MultiheadAttention`` as projections, head reshapes, two matmuls and the integer softmax
        (:mod:`quant.lowering.attention`); its output is the tensor of the ``[0]`` taken of its result."""
        name = str(node.target)
        args = list(node.args) + [None] * (3 - len(node.args))
        query = args[0]
        key = node.kwargs.get("key", args[1])
        value = node.kwargs.get("value", args[2])
        opts = {k: v for k, v in node.kwargs.items() if k not in ("query", "key", "value")}
        for extra, label in zip(node.args[3:], ("key_padding_mask", "need_weights", "attn_mask")):
            opts[label] = extra
        if any(opts.get(k) is not None for k in ("key_padding_mask", "attn_mask")) or opts.get("is_causal"):
            raise self.fail(node, f"MultiheadAttention {name!r}: masks and is_causal have no integer form here "
                                  "(an additive -inf has no code)")  # fmt: skip
        out_node, outs = self.first_of_pair(node, f"MultiheadAttention {name!r}", "the attention weights",
                                            "the attention output")  # fmt: skip
        y_qp = self.qparams_for(out_node)
        if "output" in self.handle.configs.get(name, {}):
            y_qp = self.input_quantizer_qparams_of(name, "output") or y_qp
        try:
            plan = attention_plan(m, self.handle, name, self.dp, same_key=key is query, same_value=value is query,
                                  output=SiteQParams(y_qp.scale, y_qp.zero_point, y_qp.spec))  # fmt: skip
        except (KeyError, ValueError) as err:
            raise self.fail(node, f"MultiheadAttention {name!r}: {err}") from None
        n_q = self.shape(query)[1]  # type: ignore[arg-type]
        n_k = self.shape(key)[1]  # type: ignore[arg-type]
        h, d, e = plan.heads, plan.head_dim, m.embed_dim

        def qp(site: SiteQParams, what: str) -> QParams:
            return QParams(site.scale, site.zero_point, site.spec, f"the {what} scheme of module {name!r}")

        def tensor(label: str, shape: Sequence[int], q: QParams) -> _Edge:
            s_, z_, spec, source = q
            try:
                self.dp.check_spec(spec, "activation")
            except ValueError as err:
                raise self.fail(node, f"{source}: {err}") from None
            t = self.unique(f"{name}.{label}")
            info = TensorInfo(t, (None, *shape), spec.bits, spec.signed, s_, z_)
            self.tensors[t] = info
            return _Edge(t, info)

        def like(label: str, src: _Edge, shape: Sequence[int]) -> _Edge:
            t = self.unique(f"{name}.{label}")
            info = TensorInfo(t, (None, *shape), src.info.bits, src.info.signed, src.info.scale, src.info.zero_point)
            self.tensors[t] = info
            return _Edge(t, info)

        def project(label: str, x: _Edge, p: Projection, out: _Edge) -> _Edge:
            if p.bias is not None:
                lo_b, hi_b = self.dp.bias_range
                if int(p.bias.min()) < lo_b or int(p.bias.max()) > hi_b:
                    raise self.fail(node, f"MultiheadAttention {name!r}: the {label} bias needs {int(p.bias.abs().max())} "
                                          f"in units of s_x s_w, beyond Datapath.bias_bits={self.dp.bias_bits}")  # fmt: skip
            try:
                self.dp.check_spec(p.spec, "weight")
                attrs = LinearAttrs.build(w_shape=tuple(p.codes.shape), x_zero_point=x.info.zero_point,
                                          w_zero_point=p.zero_point, y_zero_point=out.info.zero_point,
                                          multiplier=p.multiplier, y_bits=out.info.bits, y_signed=out.info.signed,
                                          datapath=self.dp)  # fmt: skip
            except ValueError as err:
                raise self.fail(node, f"MultiheadAttention {name!r} ({label}): {err}") from None
            params: dict[str, Any] = {"weight": self.weight_param(p.codes, p.spec)}
            if p.bias is not None:
                params["bias"] = p.bias.numpy().astype(np.int32)
            return self.emit(node, "linear", [x], out, attrs, params)

        def layout(op: str, label: str, x: _Edge, shape: Sequence[int], attrs: Any) -> _Edge:
            return self.emit(node, op, [x], like(label, x, shape), attrs)

        x_in = []
        for arg, site in zip((query, key, value), plan.inputs):
            x_in.append(self.requantize_to(node, self.edge(node, arg), QParams(site.scale, site.zero_point, site.spec,
                                                                                 f"the input scheme of module {name!r}")))  # fmt: skip
        sites = plan.sites
        heads: list[_Edge] = []
        for i, (label, length) in enumerate((("query", n_q), ("key", n_k), ("value", n_k))):
            projected = project(label, x_in[i], plan.projections[i], tensor(label, (length, e), qp(sites[label], label)))
            split = layout("reshape", f"{label}_heads", projected, (length, h, d), ReshapeAttrs.build(shape=(length, h, d)))
            dims, shape = ((0, 2, 3, 1), (h, d, length)) if label == "key" else ((0, 2, 1, 3), (h, length, d))
            heads.append(layout("permute", f"{label}_t", split, shape, PermuteAttrs.build(dims=dims)))
        q, k, v = heads

        def product(label: str, a: _Edge, b: _Edge, out: _Edge) -> _Edge:
            try:
                attrs = MatmulAttrs.build(k=int(a.info.shape[-1] or 0), n=int(b.info.shape[-1] or 0),
                                          a_zero_point=a.info.zero_point, b_zero_point=b.info.zero_point,
                                          multiplier=a.info.scale * b.info.scale / out.info.scale,
                                          y_zero_point=out.info.zero_point, y_bits=out.info.bits,
                                          y_signed=out.info.signed, datapath=self.dp)  # fmt: skip
            except ValueError as err:
                raise self.fail(node, f"MultiheadAttention {name!r} ({label}): {err}") from None
            return self.emit(node, "matmul", [a, b], out, attrs)

        scores = product("scores", q, k, tensor("scores", (h, n_q, n_k), qp(sites["scores"], "scores")))
        try:
            sm = SoftmaxAttrs.build(axis=3, x_bits=scores.info.bits, x_signed=scores.info.signed,
                                    table=softmax_table(scores.info.scale, scores.info.bits), y_bits=self.dp.a_bits,
                                    y_signed=self.dp.a_signed, datapath=self.dp)  # fmt: skip
        except ValueError as err:
            raise self.fail(node, f"MultiheadAttention {name!r} (softmax): {err}") from None
        t = self.unique(f"{name}.softmax")
        info = TensorInfo(t, (None, h, n_q, n_k), self.dp.a_bits, self.dp.a_signed, sm.scale, sm.output.zero_point)
        self.tensors[t] = info
        p = self.emit(node, "softmax", [scores], _Edge(t, info), sm)
        p = self.requantize_to(node, p, qp(sites["attention"], "attention"))
        ctx = product("context", p, v, tensor("context_heads", (h, n_q, d), qp(sites["context"], "context")))
        merged = layout("permute", "context_t", ctx, (n_q, h, d), PermuteAttrs.build(dims=(0, 2, 1, 3)))
        merged = layout("reshape", "context", merged, (n_q, e), ReshapeAttrs.build(shape=(n_q, e)))
        out = self.new_tensor(out_node, self.shape(out_node), y_qp)
        project("out_proj", merged, plan.out_projection, out)
        self.env[out_node] = out
        self.done.update(outs)

    def recurrent(self, node: torch.fx.Node, m: nn.Module) -> None:
        """A quantized ``nn.LSTM`` / ``nn.GRU`` as one ``lstm`` / ``gru`` op per layer and direction
        (:mod:`quant.lowering.recurrent`); its output is the tensor of the ``[0]`` taken of its result."""
        name = str(node.target)
        kind = type(m).__name__
        op = "lstm" if isinstance(m, nn.LSTM) else "gru"
        assert isinstance(m, (nn.LSTM, nn.GRU))
        hidden_size = int(m.hidden_size)
        hx = node.kwargs.get("hx", node.args[1] if len(node.args) > 1 else None)
        if hx is not None:
            raise self.fail(node, f"{kind} {name!r}: initial states have no integer form here (the program starts "
                                  "from zero states)")  # fmt: skip
        out_node, outs = self.first_of_pair(node, f"{kind} {name!r}", "the final states", "the output sequence")
        try:
            plan = lstm_plan(m, self.handle, name, self.dp)
        except (KeyError, ValueError) as err:
            raise self.fail(node, f"{kind} {name!r}: {err}") from None
        src = node.kwargs.get("input", node.args[0])
        n_steps = self.shape(src)[1]  # type: ignore[arg-type]
        first = plan[0][0].x
        x = self.requantize_to(node, self.edge(node, src), QParams(first.scale, first.zero_point, first.spec,
                                                                    f"the input scheme of module {name!r}"))  # fmt: skip
        y_qp = self.input_quantizer_qparams_of(name, "output") or self.qparams_for(out_node)
        for i, directions in enumerate(plan):
            outs_l = []
            for lp in directions:
                try:
                    self.dp.check_spec(lp.h.spec, "activation")
                    self.dp.check_spec(lp.weight_spec, "weight")
                    attrs = layer_attrs(m, lp, self.dp)
                except ValueError as err:
                    raise self.fail(node, f"{kind} {name!r} (layer {i}): {err}") from None
                t = self.unique(f"{name}.l{i}{'_reverse' if lp.reverse else ''}")
                info = TensorInfo(t, (None, n_steps, hidden_size), lp.h.spec.bits, lp.h.spec.signed, lp.h.scale,
                                  lp.h.zero_point)  # fmt: skip
                self.tensors[t] = info
                params: dict[str, Any] = {"w_ih": self.weight_param(lp.w_ih, lp.weight_spec),
                                          "w_hh": self.weight_param(lp.w_hh, lp.weight_spec)}  # fmt: skip
                for key, b in (("b_ih", lp.b_ih), ("b_hh", lp.b_hh)):
                    if b is not None:
                        params[key] = b.numpy().astype(np.int32)
                outs_l.append(self.emit(node, op, [x], _Edge(t, info), attrs, params))
            if len(outs_l) == 1:
                x = outs_l[0]
                continue
            last = i == len(plan) - 1
            both = y_qp if last else QParams(plan[i + 1][0].x.scale, plan[i + 1][0].x.zero_point, plan[i + 1][0].x.spec,
                                             f"the joined directions of module {name!r}")  # fmt: skip
            parts = [self.requantize_to(node, e, both) for e in outs_l]
            t = self.unique(f"{name}.l{i}_both")
            info = TensorInfo(t, (None, n_steps, 2 * hidden_size), both.spec.bits, both.spec.signed, both.scale,
                              both.zero_point)  # fmt: skip
            self.tensors[t] = info
            x = self.emit(node, "concat", parts, _Edge(t, info), ConcatAttrs.build(axis=2))
        self.env[out_node] = self.requantize_to(out_node, x, y_qp)
        self.done.update(outs)

    def first_of_pair(self, node: torch.fx.Node, label: str, second: str, first: str
                      ) -> tuple[torch.fx.Node, list[torch.fx.Node]]:  # fmt: skip
        """``(the [0] taken of node's pair, every [i] taken)`` of a module returning a pair (attention, LSTM), whose
        program computes the first element only; ``LoweringError`` for other uses and for a used second one."""
        outs = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem and u.args[1] in (0, 1) for u in outs):
            raise self.fail(node, f"{label}: its result is used other than by taking [0]")
        if any(u.args[1] == 1 and u.users for u in outs):
            raise self.fail(node, f"{label}: {second} ([1]) are used; the program computes {first} ([0]) only")
        taken = [u for u in outs if u.args[1] == 0]
        if not taken:
            raise self.fail(node, f"{label}: its output ([0]) is never used")
        return taken[0], outs

    def input_quantizer_qparams_of(self, name: str, role: str) -> Optional[QParams]:
        """The qparams of module ``name``'s ``role`` quantizer (None without one)."""
        if role not in self.handle.configs.get(name, {}):
            return None
        q = self.handle.quantizer(name, role)
        s, z = q.effective_qparams()
        return QParams(float(s.reshape(-1)[0]), int(z.reshape(-1)[0]), q.spec, f"the {role} scheme of module {name!r}")

    def weight_spec(self) -> QuantSpec:
        """The spec of codes the datapath's weight operand holds (for weights the lowering makes)."""
        return QuantSpec(bits=self.dp.w_bits, signed=self.dp.w_signed, symmetric=True)

    def reshaped(self, node: torch.fx.Node, x: _Edge, shape: Sequence[int]) -> _Edge:
        """``x`` reshaped to ``(N, *shape)``: the tensor ``x`` was itself reshaped from, when it has that shape
        (a 1-D op after a 1-D op), else a new tensor of the same qparams."""
        producer = next((n for n in reversed(self.nodes) if n.output == x.name), None)
        if producer is not None and producer.op == "reshape":
            source = self.tensors[producer.inputs[0]]
            if source.shape == (None, *shape):
                return _Edge(source.name, source)
        name = self.unique(f"{x.name}_{'x'.join(str(d) for d in shape)}")
        info = TensorInfo(name, (None, *shape), x.info.bits, x.info.signed, x.info.scale, x.info.zero_point)
        self.tensors[name] = info
        return self.emit(node, "reshape", [x], _Edge(name, info), ReshapeAttrs.build(shape=shape))

    def weight_param(self, codes: torch.Tensor, spec: QuantSpec) -> Any:
        arr = codes.numpy().astype(np.int8 if spec.signed else np.uint8)
        if self.dp.w_bits in PACKED_BITS and spec.bits == self.dp.w_bits:
            matrix = codes.reshape(codes.shape[0], -1)
            data = pack(matrix, self.dp.w_bits, signed=self.dp.w_signed).numpy()
            return PackedTensor(data, self.dp.w_bits, self.dp.w_signed, tuple(codes.shape))
        return arr

    def add(self, node: torch.fx.Node) -> None:
        a, b = (self.edge(node, arg) for arg in node.args[:2])
        if node.kwargs.get("alpha", 1) != 1:
            raise self.fail(node, "add with alpha != 1")
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        s_y, z_y, y_spec = y_qp.scale, y_qp.zero_point, y_qp.spec
        lo, hi = self.clamp_bounds(act, s_y, z_y, y_spec)
        for e in (a, b):  # narrower codes of the same signedness are codes of the datapath's operand too
            if e.info.signed != self.dp.a_signed or e.info.bits > self.dp.a_bits:
                raise self.fail(node, f"add of {e.info.describe()} codes on a datapath with "
                                      f"{'int' if self.dp.a_signed else 'uint'}{self.dp.a_bits} activations")  # fmt: skip
        try:
            attrs = AddAttrs.build(a_zero_point=a.info.zero_point, b_zero_point=b.info.zero_point,
                                   a_multiplier=a.info.scale / s_y, b_multiplier=b.info.scale / s_y, y_zero_point=z_y,
                                   y_bits=y_spec.bits, y_signed=y_spec.signed, y_min=lo, y_max=hi, datapath=self.dp)  # fmt: skip
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        out = self.new_tensor(last, self.shape(last), y_qp)
        self.emit(node, "add", [a, b], out, attrs)
        self.bind(node, last, out)

    def mul(self, node: torch.fx.Node) -> None:
        """``a * b`` of two tensors (the larger first: ``b`` is broadcast along trailing dimensions)."""
        a, b = (self.edge(node, arg) for arg in node.args[:2])
        sa, sb = self.shape(node.args[0]), self.shape(node.args[1])  # type: ignore[arg-type]
        if len(sa) == len(sb) and sa != sb and all(x <= y for x, y in zip(sa, sb)):
            a, b = b, a  # the broadcast operand second
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        lo, hi = self.clamp_bounds(act, y_qp.scale, y_qp.zero_point, y_qp.spec)
        try:
            attrs = MulAttrs.build(a_zero_point=a.info.zero_point, b_zero_point=b.info.zero_point,
                                   multiplier=a.info.scale * b.info.scale / y_qp.scale, y_zero_point=y_qp.zero_point,
                                   y_bits=y_qp.spec.bits, y_signed=y_qp.spec.signed, y_min=lo, y_max=hi,
                                   datapath=self.dp)  # fmt: skip
            attrs.broadcast((1, *self.shape(node)[1:]), (1, *(b.info.shape[1:])))  # type: ignore[arg-type]
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        out = self.new_tensor(last, self.shape(last), y_qp)
        self.emit(node, "mul", [a, b], out, attrs)
        self.bind(node, last, out)

    def matmul(self, node: torch.fx.Node) -> None:
        """``a @ b`` of two activation tensors ``(N, ..., M, K)`` and ``(N, ..., K, N')`` (section 6.4)."""
        a, b = (self.edge(node, arg) for arg in node.args[:2])
        sa, sb = self.shape(node.args[0]), self.shape(node.args[1])  # type: ignore[arg-type]
        if len(sa) < 3 or len(sa) != len(sb) or sa[:-2] != sb[:-2]:
            raise self.fail(node, f"matmul of tensors of shapes {tuple(sa)} and {tuple(sb)}: the datapath multiplies "
                                  "(N, ..., M, K) by (N, ..., K, N') of the same batch dimensions")  # fmt: skip
        act, last = self.finish_fused(node)
        y_qp = self.qparams_for(last)
        lo, hi = self.clamp_bounds(act, y_qp.scale, y_qp.zero_point, y_qp.spec)
        try:
            attrs = MatmulAttrs.build(k=int(sa[-1]), n=int(sb[-1]), a_zero_point=a.info.zero_point,
                                      b_zero_point=b.info.zero_point, multiplier=a.info.scale * b.info.scale / y_qp.scale,
                                      y_zero_point=y_qp.zero_point, y_bits=y_qp.spec.bits, y_signed=y_qp.spec.signed,
                                      y_min=lo, y_max=hi, datapath=self.dp)  # fmt: skip
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        out = self.new_tensor(last, self.shape(last), y_qp)
        self.emit(node, "matmul", [a, b], out, attrs)
        self.bind(node, last, out)

    def softmax(self, node: torch.fx.Node, dim: Any) -> None:
        """The contract's integer softmax: exponentials tabulated from the input's scale, output codes of scale
        ``2^-b`` (``b`` the activation width, 8 for a program output) and zero point 0 or ``-2^(b-1)``."""
        x = self.edge(node, node.args[0])
        if not isinstance(dim, int):
            raise self.fail(node, f"softmax needs an explicit int dim, got {dim!r}")
        ndim = len(x.info.shape)
        bits = 8 if self.is_program_output(node) else self.dp.a_bits
        try:
            attrs = SoftmaxAttrs.build(axis=dim % ndim, x_bits=x.info.bits, x_signed=x.info.signed,
                                       table=softmax_table(x.info.scale, x.info.bits), y_bits=bits,
                                       y_signed=self.dp.a_signed, datapath=self.dp)  # fmt: skip
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        name = self.unique(node.name)
        info = TensorInfo(name, (None, *self.shape(node)[1:]), bits, self.dp.a_signed, attrs.scale,
                          attrs.output.zero_point)  # fmt: skip
        self.tensors[name] = info
        self.env[node] = self.emit(node, "softmax", [x], _Edge(name, info), attrs)

    def pool(self, node: torch.fx.Node) -> None:
        x = self.edge(node, node.args[0])
        in_shape = self.shape(node.args[0])  # type: ignore[arg-type]
        one_d = len(in_shape) == 3
        if one_d:  # a 2-D pool over (N, C, 1, L) with (1, k) windows
            kind, kernel, stride, padding, dilation = self.pool1d_args(node, in_shape[2])
            x = self.reshaped(node, x, (in_shape[1], 1, in_shape[2]))
        else:
            kind, kernel, stride, padding, dilation = self.pool_args(node, in_shape)
        out_shape = self.shape(node)
        name = self.unique(node.name + ("_2d" if one_d else ""))
        shape4 = (None, out_shape[1], 1, out_shape[2]) if one_d else (None, *out_shape[1:])
        info = TensorInfo(name, shape4, x.info.bits, x.info.signed, x.info.scale, x.info.zero_point)
        self.tensors[name] = info
        try:
            if kind == "max":
                attrs: Any = MaxPool2dAttrs.build(kernel, stride, padding, dilation)
            else:
                attrs = AvgPool2dAttrs.build(kernel, stride, padding, zero_point=x.info.zero_point, datapath=self.dp)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        out = self.emit(node, f"{kind}_pool2d", [x], _Edge(name, info), attrs)
        if one_d:
            out = self.emit(node, "reshape", [out], self.same_codes(node, out), ReshapeAttrs.build(shape=out_shape[1:]))
        self.env[node] = out

    def index(self, node: torch.fx.Node) -> None:
        """``x[...]`` with slices and ints after the batch (``x[:, -1]``, ``x[:, :4, ::2]``): one ``slice`` per sliced
        dimension, then a ``reshape`` dropping the dimensions an int took; the codes keep their qparams."""
        x = self.edge(node, node.args[0])
        shape = list(self.shape(node.args[0]))  # type: ignore[arg-type]
        try:
            steps = index_steps(node.args[1], shape)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        for axis, (start, stop, step) in steps:
            attrs = SliceAttrs.build(axis=axis, start=start, stop=stop, step=step)
            shape = list(attrs.output_shape(shape))  # type: ignore[arg-type]
            name = self.unique(f"{node.name}_{axis}")
            info = TensorInfo(name, (None, *shape[1:]), x.info.bits, x.info.signed, x.info.scale, x.info.zero_point)
            self.tensors[name] = info
            x = self.emit(node, "slice", [x], _Edge(name, info), attrs)
        out = self.shape(node)
        if tuple(shape) != tuple(out):
            x = self.emit(node, "reshape", [x], self.same_codes(node, x), ReshapeAttrs.build(shape=out[1:] or (1,)))
        self.env[node] = x

    def mean(self, node: torch.fx.Node) -> None:
        """``x.mean(dims)`` over dimensions after the batch: a global average pool of ``(N, kept, reduced, 1)``
        (the kept dimensions first, by a ``permute`` when they are not), whose codes keep the input's qparams."""
        x = self.edge(node, node.args[0])
        shape = self.shape(node.args[0])  # type: ignore[arg-type]
        try:
            dims = mean_dims(node, len(shape))
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        kept = [d for d in range(1, len(shape)) if d not in dims]
        perm = (0, *kept, *dims)
        if perm != tuple(range(len(shape))):
            permuted = TensorInfo(self.unique(f"{node.name}_t"), (None, *(shape[d] for d in perm[1:])), x.info.bits,
                                  x.info.signed, x.info.scale, x.info.zero_point)  # fmt: skip
            self.tensors[permuted.name] = permuted
            x = self.emit(node, "permute", [x], _Edge(permuted.name, permuted), PermuteAttrs.build(dims=perm))
        channels, reduced = math.prod(shape[d] for d in kept), math.prod(shape[d] for d in dims)
        x = self.reshaped(node, x, (channels, reduced, 1))
        name = self.unique(f"{node.name}_pool")
        info = TensorInfo(name, (None, channels, 1, 1), x.info.bits, x.info.signed, x.info.scale, x.info.zero_point)
        self.tensors[name] = info
        try:
            attrs = AvgPool2dAttrs.build(None, zero_point=x.info.zero_point, datapath=self.dp)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        pooled = self.emit(node, "avg_pool2d", [x], _Edge(name, info), attrs)
        self.env[node] = self.emit(node, "reshape", [pooled], self.same_codes(node, pooled),
                                   ReshapeAttrs.build(shape=self.shape(node)[1:] or (1,)))  # fmt: skip

    def pool1d_args(self, node: torch.fx.Node, length: int) -> tuple[str, Any, Any, Any, Any]:
        """The 2-D window ``(1, k)`` of a 1-D pooling."""

        def one(v: Any, default: int) -> int:
            v = v[0] if isinstance(v, (tuple, list)) else v
            return default if v is None else int(v)

        if node.op == "call_module":
            m = self.module(node)
            if isinstance(m, nn.AdaptiveAvgPool1d):
                return ("avg", *self.adaptive(node, (1, one(m.output_size, length)), 1, length))
            if getattr(m, "ceil_mode", False) or getattr(m, "return_indices", False):
                raise self.fail(node, f"{type(m).__name__} with ceil_mode or return_indices")
            k = one(m.kernel_size, 1)
            s_ = one(m.stride, k)
            p = one(m.padding, 0)
            if isinstance(m, nn.MaxPool1d):
                return "max", (1, k), (1, s_), (0, p), (1, one(m.dilation, 1))
            if m.count_include_pad and p:
                raise self.fail(node, "AvgPool1d with padding needs count_include_pad=False")
            return "avg", (1, k), (1, s_), (0, p), 1
        args, kw = list(node.args[1:]), dict(node.kwargs)
        if node.target is F.adaptive_avg_pool1d:
            return ("avg", *self.adaptive(node, (1, one(kw.get("output_size", args[0] if args else None), length)), 1,
                                          length))  # fmt: skip
        names = ["kernel_size", "stride", "padding"] + (["dilation", "ceil_mode", "return_indices"]
                                                        if node.target is F.max_pool1d else ["ceil_mode", "count_include_pad"])  # fmt: skip
        vals = dict(zip(names, args))
        vals.update(kw)
        if vals.get("ceil_mode") or vals.get("return_indices"):
            raise self.fail(node, "pooling with ceil_mode or return_indices")
        k = one(vals["kernel_size"], 1)
        s_, p = one(vals.get("stride"), k), one(vals.get("padding", 0), 0)
        if node.target is F.max_pool1d:
            return "max", (1, k), (1, s_), (0, p), (1, one(vals.get("dilation", 1), 1))
        if vals.get("count_include_pad", True) and p:
            raise self.fail(node, "avg_pool1d with padding needs count_include_pad=False")
        return "avg", (1, k), (1, s_), (0, p), 1

    def pool_args(self, node: torch.fx.Node, in_shape: tuple[int, ...]) -> tuple[str, Any, Any, Any, Any]:
        if len(in_shape) != 4:
            raise self.fail(node, f"pooling of a {len(in_shape)}-D tensor (2-D pooling on (N, C, H, W) is lowered)")
        h, w = in_shape[2], in_shape[3]
        if node.op == "call_module":
            m = self.module(node)
            if isinstance(m, nn.AdaptiveAvgPool2d):
                return ("avg", *self.adaptive(node, m.output_size, h, w))
            if getattr(m, "ceil_mode", False):
                raise self.fail(node, f"{type(m).__name__} with ceil_mode=True")
            if isinstance(m, nn.MaxPool2d):
                if m.return_indices:
                    raise self.fail(node, "MaxPool2d with return_indices=True")
                return "max", m.kernel_size, m.stride, m.padding, m.dilation
            if m.divisor_override is not None or (m.count_include_pad and m.padding not in (0, (0, 0))):
                raise self.fail(node, "AvgPool2d: the contract averages over the unpadded elements; use "
                                      "count_include_pad=False with padding, and no divisor_override")  # fmt: skip
            return "avg", m.kernel_size, m.stride, m.padding, 1
        args = list(node.args[1:])
        kw = dict(node.kwargs)
        if node.target is F.adaptive_avg_pool2d:
            return ("avg", *self.adaptive(node, kw.get("output_size", args[0] if args else None), h, w))
        names = ["kernel_size", "stride", "padding"] + (["dilation", "ceil_mode", "return_indices"]
                                                        if node.target is F.max_pool2d else ["ceil_mode", "count_include_pad"])  # fmt: skip
        vals = dict(zip(names, args))
        vals.update(kw)
        if vals.get("ceil_mode") or vals.get("return_indices"):
            raise self.fail(node, "pooling with ceil_mode or return_indices")
        if node.target is F.max_pool2d:
            stride = vals.get("stride") or None
            return "max", vals["kernel_size"], stride, vals.get("padding", 0), vals.get("dilation", 1)
        if vals.get("count_include_pad", True) and vals.get("padding", 0) not in (0, (0, 0)):
            raise self.fail(node, "avg_pool2d with padding needs count_include_pad=False")
        return "avg", vals["kernel_size"], vals.get("stride") or None, vals.get("padding", 0), 1

    def adaptive(self, node: torch.fx.Node, size: Any, h: int, w: int) -> tuple[Any, Any, Any, Any]:
        oh, ow = (size, size) if isinstance(size, int) else tuple(size)
        oh, ow = oh or h, ow or w
        if (oh, ow) == (1, 1):
            return None, None, 0, 1
        if h % oh or w % ow:
            raise self.fail(node, f"adaptive average pooling from {h}x{w} to {oh}x{ow} (windows must divide evenly)")
        return (h // oh, w // ow), (h // oh, w // ow), 0, 1

    def reshape(self, node: torch.fx.Node) -> None:
        x = self.edge(node, node.args[0])
        out = self.same_codes(node, x)
        self.emit(node, "reshape", [x], out, ReshapeAttrs.build(shape=self.shape(node)[1:]))
        self.env[node] = out

    def permute(self, node: torch.fx.Node) -> None:
        x = self.edge(node, node.args[0])
        ndim = len(x.info.shape)
        rest = [a for a in node.args[1:]]
        if node.target in (torch.transpose, "transpose"):
            a, b = (int(d) % ndim for d in rest[:2])  # type: ignore[arg-type]
            dims = list(range(ndim))
            dims[a], dims[b] = dims[b], dims[a]
        else:
            flat = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            dims = [int(d) % ndim for d in flat]  # type: ignore[arg-type]
        try:
            attrs = PermuteAttrs.build(dims=dims)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        self.env[node] = self.emit(node, "permute", [x], self.same_codes(node, x), attrs)

    def concat(self, node: torch.fx.Node) -> None:
        parts = node.args[0]
        if not isinstance(parts, (tuple, list)) or not parts:
            raise self.fail(node, "torch.cat of something other than a list of tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        ndim = len(self.shape(node))
        axis = int(dim) % ndim  # type: ignore[arg-type]
        qp = self.qparams_for(node)
        inputs = [self.requantize_to(node, self.edge(node, p), qp) for p in parts]
        try:
            attrs = ConcatAttrs.build(axis=axis)
        except ValueError as err:
            raise self.fail(node, str(err)) from None
        self.env[node] = self.emit(node, "concat", inputs, self.new_tensor(node, self.shape(node), qp), attrs)

    def pad(self, node: torch.fx.Node) -> None:
        x = self.edge(node, node.args[0])
        pads = node.kwargs.get("pad", node.args[1] if len(node.args) > 1 else None)
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        if mode != "constant" or value not in (None, 0, 0.0) or not isinstance(pads, (tuple, list)):
            raise self.fail(node, f"F.pad with mode={mode!r}, value={value!r} (only zero padding is lowered)")
        if len(pads) // 2 >= len(x.info.shape):
            raise self.fail(node, "F.pad of the batch dimension")
        attrs = PadAttrs.build(pads=[int(p) for p in pads], value=x.info.zero_point)
        self.env[node] = self.emit(node, "pad", [x], self.same_codes(node, x), attrs)

    def lookup_table(self, node: torch.fx.Node, fn: Callable[[torch.Tensor], torch.Tensor], channels: int = 1,
                     source: Optional[torch.fx.Node] = None) -> None:  # fmt: skip
        """``table[q] = Q_out(f(s_in (q - z_in)))`` over the codes of ``source`` (default: the first argument);
        with ``channels`` > 1 (a function with per-channel parameters, along axis 1) one row per channel, ``f``
        evaluated on ``(1, channels, 2^b)``."""
        x = self.edge(node, node.args[0] if source is None else source)
        y_qp = self.qparams_for(node)
        s_y, z_y, y_spec = y_qp.scale, y_qp.zero_point, y_qp.spec
        lo, hi = code_range(x.info.bits, x.info.signed)
        codes = torch.arange(lo, hi + 1, dtype=torch.int64)
        if x.info.bits == 1 and x.info.signed:
            codes = torch.tensor([-1, 1])
        real = (codes - x.info.zero_point).to(torch.float32) * torch.tensor(x.info.scale, dtype=torch.float32)
        if channels > 1:
            if len(x.info.shape) < 2 or x.info.shape[1] != channels:
                raise self.fail(node, f"{channels} per-channel parameters for a tensor of shape {x.info.shape}")
            real = real.expand(1, channels, real.numel()).contiguous()
        with torch.no_grad():
            values = fn(real).reshape(channels, -1) if channels > 1 else fn(real)
        table = quantize_to_codes(values.to(torch.float32), scale=s_y, zero_point=z_y, bits=y_spec.bits,
                                  signed=y_spec.signed, datapath=self.dp)  # fmt: skip
        attrs = LutAttrs.build(x_bits=x.info.bits, x_signed=x.info.signed, channels=channels)
        out = self.new_tensor(node, self.shape(node), y_qp)
        self.emit(node, "lut", [x], out, attrs, {"table": table.numpy().astype(np.int8 if y_spec.signed else np.uint8)})
        self.env[node] = out

    def scalar_arithmetic(self, node: torch.fx.Node) -> Optional[tuple[torch.fx.Node, Callable[[torch.Tensor], torch.Tensor]]]:
        """``(tensor, f)`` of ``x * c``, ``c * x``, ``x / c``, ``x + c``, ``c + x``, ``x - c``, ``c - x`` with a number
        ``c`` (attention's ``q / sqrt(d)``), computed as the exact table of ``f``; None for anything else."""
        if node.op not in ("call_function", "call_method") or len(node.args) != 2 or node.kwargs:
            return None
        a, b = node.args
        tensor_first = isinstance(a, torch.fx.Node) and isinstance(b, (int, float)) and not isinstance(b, bool)
        tensor_second = isinstance(b, torch.fx.Node) and isinstance(a, (int, float)) and not isinstance(a, bool)
        if not (tensor_first or tensor_second):
            return None
        x, c = (a, float(b)) if tensor_first else (b, float(a))  # type: ignore[arg-type]
        reverse = node.target == "__rsub__"
        if _is(node, _MUL):
            return x, lambda t: t * c  # type: ignore[return-value]
        if _is(node, _ADD):
            return x, lambda t: t + c  # type: ignore[return-value]
        if _is(node, _SUB):
            return x, (lambda t: c - t) if (tensor_second or reverse) else (lambda t: t - c)  # type: ignore[return-value]
        if _is(node, _DIV) and tensor_first:  # (x / 0 does not calibrate: its observer refuses the infinities)
            return x, lambda t: t / c  # type: ignore[return-value]
        return None

    def elementwise_fn(self, node: torch.fx.Node) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        if node.op == "call_module":
            m = self.module(node)
            return m if isinstance(m, _ELEMENTWISE_MODULES) else None
        if node.op == "call_function" and elementwise_function_of(node.target) is not None:
            extra, kw = node.args[1:], dict(node.kwargs)
            if any(isinstance(a, torch.fx.Node) for a in (*extra, *kw.values())):
                raise self.fail(node, f"elementwise function {_target_name(node, self.model)!r}: its other arguments "
                                      "must be constants")  # fmt: skip
            user_fn = node.target
            return lambda t: user_fn(t, *extra, **kw)  # type: ignore[operator]
        if node.target in (F.prelu, torch.prelu) and len(node.args) == 2 and not node.kwargs:
            weight = constant_tensor(self.model, node.args[1])
            return None if weight is None else (lambda t: F.prelu(t, weight))
        if _is(node, _ELEMENTWISE_FUNCTIONS):
            extra, kw = node.args[1:], {k: v for k, v in node.kwargs.items() if k != "inplace"}
            if any(isinstance(a, torch.fx.Node) for a in (*extra, *kw.values())):
                return None
            if node.op == "call_method":
                method = str(node.target).rstrip("_")
                return lambda t: getattr(t, method)(*extra, **kw)
            target = node.target
            return lambda t: target(t, *extra, **kw)  # type: ignore[operator]
        return None

    def custom(self, node: torch.fx.Node, op: CustomOpDef) -> None:
        """A registered custom op: one program node whose record ``integer_params`` builds from the operands'
        qparams and the call's options; the output keeps input ``output_like``'s qparams or is calibrated."""
        tensors, options = node.args, dict(node.kwargs)
        if len(tensors) != op.n_inputs or not all(isinstance(a, torch.fx.Node) for a in tensors):
            raise self.fail(node, f"{op.name} takes {op.n_inputs} tensor(s) positionally, options as keywords")
        if any(isinstance(v, torch.fx.Node) for v in options.values()):
            raise self.fail(node, f"{op.name}: options must be constants, not tensors computed by the model")
        xs = [self.edge(node, a) for a in tensors]
        if op.output_like is not None:
            out = self.same_codes(node, xs[op.output_like])
        else:
            out = self.new_tensor(node, self.shape(node), self.qparams_for(node))
        try:
            attrs = custom_attrs(op, [x.info.operand() for x in xs], out.info.operand(), self.dp, options)
        except (TypeError, ValueError) as err:
            raise self.fail(node, str(err)) from None
        self.env[node] = self.emit(node, op.name, xs, out, attrs)

    # ------------------------------------------------------------------ driver
    def run(self, graph: torch.fx.Graph, example: Sequence[torch.Tensor]) -> IntegerProgram:
        inputs: list[str] = []
        outputs: list[str] = []
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for node, x in zip(placeholders, example):
            e = self.new_tensor(node, tuple(x.shape), self.qparams_for(node))
            self.env[node] = e
            inputs.append(e.name)
            self.inputs.append(node)
        self.constants = constant_nodes(graph)
        for node in graph.nodes:
            if node in self.done or node.op in ("placeholder", "get_attr") or node in self.constants:
                continue  # constants become codes where an op reads them
            if node.op == "output":
                results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
                for r in results:
                    outputs.append(self.edge(node, r).name)
                continue
            self.lower_node(node)
        origins = {n.name: e.name for n, e in self.env.items()}
        return IntegerProgram(self.dp, self.tensors, self.nodes, inputs, outputs, origins)

    def lower_node(self, node: torch.fx.Node) -> None:
        if node.op == "call_module":
            m = self.module(node)
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                return self.conv_or_linear(node)
            if isinstance(m, nn.ConvTranspose2d):
                return self.conv_transpose(node, m)
            if isinstance(m, _NOOP_MODULES):
                self.env[node] = self.edge(node, node.args[0])
                return
            if isinstance(m, nn.Flatten):
                return self.reshape(node)
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool1d, nn.AvgPool1d,
                              nn.AdaptiveAvgPool1d)):  # fmt: skip
                return self.pool(node)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                return self.batchnorm(node, m)
            if isinstance(m, nn.Softmax):
                return self.softmax(node, m.dim)
            if isinstance(m, nn.LayerNorm):
                return self.layernorm(node, m)
            if isinstance(m, nn.MultiheadAttention):
                return self.attention(node, m)
            if isinstance(m, (nn.LSTM, nn.GRU)):
                return self.recurrent(node, m)
        elif node.op in ("call_function", "call_method"):
            custom = custom_op_of(node.target) if node.op == "call_function" else None
            if custom is not None:
                return self.custom(node, custom)
            if _is(node, _ADD) and len(node.args) >= 2 and all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
                return self.add(node)
            if _is(node, _MUL) and len(node.args) >= 2 and all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
                return self.mul(node)
            if _is(node, _MATMUL) and len(node.args) >= 2 and all(isinstance(a, torch.fx.Node) for a in node.args[:2]):
                return self.matmul(node)
            if node.target in (torch.flatten, torch.squeeze, torch.unsqueeze) or node.target in _RESHAPE_METHODS:
                return self.reshape(node)
            if node.target in (torch.permute, torch.transpose, "permute", "transpose"):
                return self.permute(node)
            if node.target in (torch.cat, torch.concat):
                return self.concat(node)
            if node.target in (torch.mean, "mean"):
                return self.mean(node)
            if node.target is F.pad:
                return self.pad(node)
            if node.target in (F.softmax, torch.softmax, "softmax"):
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                return self.softmax(node, dim)
            if node.target in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool1d, F.avg_pool1d,
                               F.adaptive_avg_pool1d):  # fmt: skip
                return self.pool(node)
            if node.target is F.dropout or node.target in ("contiguous",):
                self.env[node] = self.edge(node, node.args[0])
                return
            if node.op == "call_function" and node.target in (getattr, operator.getitem) and node not in self.sites:
                return  # shape arithmetic (x.shape[0]): no tensor of codes
            if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node) and node.args[0] in self.env:
                return self.index(node)
            if node.op == "call_method" and node.target in ("size", "dim"):
                return
        scalar = self.scalar_arithmetic(node)
        if scalar is not None:
            return self.lookup_table(node, scalar[1], source=scalar[0])
        fn = self.elementwise_fn(node)
        if fn is not None:
            return self.lookup_table(node, fn, per_channel_parameters(self.model, node))
        raise self.fail(node, f"cannot lower {_target_name(node, self.model)!r} to the integer datapath: only the "
                              "ops listed in quant.lowering's documentation lower; register others with quant.register_op "
                              "(docs/arithmetic.md section 10)")  # fmt: skip


def index_steps(index: Any, shape: Sequence[int]) -> list[tuple[int, tuple[int, int, int]]]:
    """``(axis, (start, stop, step))`` of each dimension an index of slices and ints narrows (an int as a slice of
    one, dropped by the caller's reshape); ``ValueError`` for the batch, ``None``/tensor indices or an empty
    result."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(i is Ellipsis for i in items):
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    if len(items) > len(shape) or not all(isinstance(i, (slice, int)) and not isinstance(i, bool) for i in items):
        raise ValueError(f"indexing with {index!r}: only slices and ints (no None, tensors or lists) lower")
    if items and items[0] != slice(None):
        raise ValueError(f"indexing with {index!r}: the batch dimension 0 must be taken whole")
    steps = []
    for axis, item in enumerate(items[1:], start=1):
        size = int(shape[axis])
        if isinstance(item, int):
            if not -size <= item < size:
                raise ValueError(f"index {item} is out of range for dimension {axis} of size {size}")
            start = item % size
            steps.append((axis, (start, start + 1, 1)))
            continue
        start, stop, step = item.indices(size)
        if step < 1 or len(range(start, stop, step)) == 0:
            raise ValueError(f"indexing with {index!r}: dimension {axis} must keep elements in increasing order")
        if (start, stop, step) != (0, size, 1):
            steps.append((axis, (start, min(stop, start + step * len(range(start, stop, step))), step)))
    return steps


def mean_dims(node: torch.fx.Node, ndim: int) -> tuple[int, ...]:
    """The sorted dimensions a ``mean`` node reduces (``ValueError`` for the batch, all dimensions or a dtype)."""
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if node.kwargs.get("dtype") is not None or dim is None:
        raise ValueError("mean needs explicit dims after the batch and no dtype")
    dims = sorted({int(d) % ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,))})
    if 0 in dims:
        raise ValueError(f"mean over dims {dims}: the batch dimension 0 cannot be averaged by the datapath")
    return tuple(dims)


def constant_tensor(model: nn.Module, arg: Any) -> Optional[torch.Tensor]:
    """The parameter or buffer a ``get_attr`` node reads (``F.prelu(x, self.weight)``), else None."""
    if not isinstance(arg, torch.fx.Node) or arg.op != "get_attr":
        return None
    value: Any = model
    for part in str(arg.target).split("."):
        value = getattr(value, part)
    return value.detach() if isinstance(value, torch.Tensor) else None


def per_channel_parameters(model: nn.Module, node: torch.fx.Node) -> int:
    """How many per-channel parameters an elementwise function has along axis 1 (PReLU's slopes), 1 if none."""
    if node.op == "call_module":
        m = model.get_submodule(str(node.target))
        return int(m.num_parameters) if isinstance(m, nn.PReLU) else 1
    if node.target in (F.prelu, torch.prelu) and len(node.args) == 2:
        weight = constant_tensor(model, node.args[1])
        return 1 if weight is None else max(1, weight.numel())
    return 1


def batchnorm_affine(m: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` (float64, per channel) with ``bn(x) = a x + b`` in eval mode."""
    assert m.running_mean is not None and m.running_var is not None  # checked by the caller
    a = torch.rsqrt(m.running_var.detach().double() + m.eps)
    if m.affine:
        a = a * m.weight.detach().double()
    b = -m.running_mean.detach().double() * a
    if m.affine:
        b = b + m.bias.detach().double()
    return a, b


def exact_affine_weights(a: torch.Tensor, dp: Datapath) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weight codes and scales for the scales ``a`` of an affine op on ``dp``'s weight operand:
    code ``sign(a) * qmax`` (or +-1 for binary) with ``s_w = |a| / qmax``, which is exact (a zero ``a`` has
    code 0, ``s_w = 1``); on a ``pow2`` datapath ``s_w = 2^ceil(log2(|a| / qmax))`` and the code
    ``round(a / s_w)`` (half to even), the nearest a power-of-two scale allows."""
    lo, hi = code_range(dp.w_bits, dp.w_signed)
    if not dp.w_signed and bool((a < 0).any()):
        raise ValueError(f"a negative BatchNorm scale needs signed weights; datapath {dp.name!r} has unsigned ones")
    level = hi if not (dp.w_bits == 1 and dp.w_signed) else 1
    if dp.w_bits == 1 and dp.w_signed and bool((a == 0).any()):
        raise ValueError(f"a zero BatchNorm scale has no binary weight code on datapath {dp.name!r}")
    s_w = torch.where(a == 0, torch.ones_like(a), a.abs() / level)
    if dp.requant == "pow2":
        s_w = torch.exp2(torch.ceil(torch.log2(s_w)))
        return torch.clamp(torch.round(a / s_w), lo, hi).to(torch.int64), s_w
    return torch.sign(a).to(torch.int64) * level, s_w


def layernorm_parameters(
    m: nn.LayerNorm, handle: QuantHandle, name: str, dp: Datapath
) -> tuple[Optional[torch.Tensor], int, torch.Tensor, Optional[torch.Tensor]]:
    """``(gamma codes, z_g, s_g, bias)`` of LayerNorm ``m`` (section 6.5): gamma's int8 codes from the module's
    weight quantizer (None without affine parameters, ``s_g = 1`` then, or when the codes are all 1 with
    ``z_g = 0``), ``s_g`` float64 (one value, or one per element of the row), ``bias = round(2^15 beta / s_g)``
    (int64; None without a bias or when it is all zero)."""
    weight = m.weight
    gamma: Optional[torch.Tensor] = None
    beta: Optional[torch.Tensor] = m.bias.detach() if m.bias is not None else None
    if weight is None:
        s_g, z_g = torch.ones(1, dtype=torch.float64), 0
    else:
        if "weight" not in handle.configs.get(name, {}):
            raise ValueError("its gamma needs a weight scheme in the recipe (int8 codes at most)")
        wq = handle.quantizer(name, "weight")
        if not wq.spec.signed or wq.spec.bits > 8:
            raise ValueError(f"gamma's weight scheme must give signed codes of at most 8 bits, got {wq.spec}")
        s_w, z_w = wq.effective_qparams()
        zs = set(int(v) for v in z_w.reshape(-1).tolist())
        if len(zs) != 1:
            raise ValueError("gamma's weight scheme must have one zero point")
        with torch.no_grad():
            w = original_parameter(m)
            gamma = wq.codes(w).reshape(-1)
        beta = wq.layer_bias(beta)  # with a bias shift when a post-training algorithm set one
        s_g, z_g = s_w.to(torch.float64), zs.pop()
        if s_g.numel() > 1:  # per channel along the weight's first axis: one scale per element of the row
            if s_g.numel() != w.shape[0]:
                raise ValueError(f"gamma's scales must be one per tensor or per channel, got {s_g.numel()}")
            s_g = s_g.reshape(-1, *([1] * (w.dim() - 1))).expand(w.shape)
        s_g = s_g.reshape(-1)
    bias = None
    if beta is not None:
        beta = beta.reshape(-1).to(torch.float64)
        bias = rounding_fn(dp.quantize_rounding)(beta * 2**LAYERNORM_FRACTION_BITS / s_g).to(torch.int64)
        if bias.numel() and (int(bias.min()) < -(1 << 31) or int(bias.max()) > (1 << 31) - 1):
            raise ValueError(f"beta needs {int(bias.abs().max())} in units of s_g 2^-15, beyond int32")
    # the canonical form: gamma codes of ones and a zero bias compute what none does
    if gamma is not None and z_g == 0 and bool((gamma == 1).all()):
        gamma = None
    if bias is not None and not bool(bias.any()):
        bias = None
    return gamma, z_g, s_g, bias


def transposed_as_conv(m: nn.ConvTranspose2d, handle: QuantHandle, name: str
                       ) -> tuple[torch.Tensor, torch.Tensor, list[int], QuantSpec]:  # fmt: skip
    """The 1x1 conv2d a ``ConvTranspose2d`` with kernel == stride is: weight codes ``(C_out kh kw, C_in, 1, 1)``
    (row ``(o, u, v)`` holds ``W[:, o, u, v]``), their float64 scales and zero points per row and their spec (per
    row on axis 0); ``ValueError`` for
    other geometries and for weight scales that are not per tensor or per output channel."""
    kh, kw = m.kernel_size
    if (tuple(m.stride) != (kh, kw) or any(p != 0 for p in m.padding) or any(p != 0 for p in m.output_padding)
            or any(d != 1 for d in m.dilation) or m.groups != 1 or not isinstance(m.padding, tuple)):  # fmt: skip
        raise ValueError(f"only kernel == stride ({m.kernel_size} vs {m.stride}) without padding, output padding, "
                         "dilation or groups lowers (every output is then one input pixel's products)")  # fmt: skip
    wq = handle.quantizer(name, "weight")
    spec = wq.spec
    if spec.granularity == "group" or (spec.granularity == "channel" and spec.axis not in (1, -3)):
        raise ValueError(f"its weight scheme {spec.describe()} is not per tensor or per output channel (axis=1)")
    s_w, z_w = wq.effective_qparams()
    with torch.no_grad():
        codes = wq.codes(original_parameter(m))  # (C_in, C_out, kh, kw)
    c_in, c_out = codes.shape[0], codes.shape[1]
    rows = codes.permute(1, 2, 3, 0).reshape(c_out * kh * kw, c_in, 1, 1).contiguous()
    per_row = s_w.reshape(-1).to(torch.float64)
    zeros = z_w.reshape(-1).to(torch.int64)
    if per_row.numel() > 1:
        per_row, zeros = per_row.repeat_interleave(kh * kw), zeros.repeat_interleave(kh * kw)
    return rows, per_row, [int(v) for v in zeros.tolist()], spec.with_(axis=0) if spec.granularity == "channel" else spec


def _assign_sites(graph: torch.fx.Graph, model: nn.Module, lowering: _Lowering) -> None:
    """The calibration site of every node (the order :class:`quant.sim.edges.EdgeRecorder` observes in)."""
    calls = 0
    module_calls: dict[str, int] = {}
    index = 0
    for node in graph.nodes:
        meta = node.meta.get("tensor_meta")
        floating = meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point
        if node.op == "placeholder":
            if floating:
                lowering.sites[node] = input_site(index)
                index += 1
        elif node.op == "call_module":
            name = str(node.target)
            call = module_calls.get(name, 0)
            module_calls[name] = call + 1
            lowering.sites[node] = module_site(name, call)
        elif _takes_from_a_tuple(node):  # Python indexing of a tuple: no torch function, no site of its own
            src = node.args[0]
            if src.op == "call_module" and floating:
                lowering.sites[node] = f"{lowering.sites[src]}.{node.args[1]}"  # the module's element site
        elif node.op in ("call_function", "call_method") and floating:
            lowering.sites[node] = call_site(calls)
            calls += 1


def _takes_from_a_tuple(node: torch.fx.Node) -> bool:
    """``t[i]`` of a tuple: a leaf module's result (``nn.MultiheadAttention``, ``nn.LSTM``) or an element of one."""
    src = node.args[0] if node.args else None
    return (node.op == "call_function" and node.target is operator.getitem and isinstance(src, torch.fx.Node)
            and isinstance(src.meta.get("tensor_meta"), (tuple, list))
            and not isinstance(src.meta.get("tensor_meta"), TensorMetadata)  # (a NamedTuple: one tensor)
            and isinstance(node.args[1], int))  # fmt: skip


def _check_sites(handle: QuantHandle, lowering: _Lowering) -> None:
    edges = handle.edges
    if edges is None:
        return
    seen = [site for site, _ in edges.sites if site.startswith("call:")]
    traced = sorted((s for s in lowering.sites.values() if s.startswith("call:")), key=lambda s: int(s.split(":")[1]))
    if len(seen) != len(traced):
        raise LoweringError(
            f"lower: the forward seen during calibration made {len(seen)} tensor-valued function calls outside "
            f"leaf modules, the traced graph has {len(traced)}: the model's forward is not what torch.fx traces "
            "(data-dependent control flow?)"
        )


def lower(
    model: nn.Module,
    handle: QuantHandle,
    example_input: Union[torch.Tensor, Sequence[torch.Tensor]],
    *,
    datapath: Datapath,
) -> IntegerProgram:
    """The integer program of calibrated ``model`` on ``datapath`` (see the module docstring).

    ``handle`` is the model's :func:`quant.attach` handle after ``calibrate()``;
    ``example_input`` (a tensor or a sequence of tensors) only fixes shapes.
    """
    if not isinstance(datapath, Datapath):
        raise TypeError(f"lower: datapath must be a Datapath, got {type(datapath).__name__}")
    if not isinstance(handle, QuantHandle) or handle.model is not model:
        raise ValueError("lower: handle must be the QuantHandle that attach() returned for this model")
    if handle.removed:
        raise ValueError("lower: the handle was removed; attach and calibrate again")
    uncalibrated = [f"{n!r} {r}" for n, r, q in handle.quantizers() if not q.calibrated and not q.optional]
    if uncalibrated or handle.edges is None:
        what = f"quantizers without qparams: {', '.join(uncalibrated)}" if uncalibrated else "no edge statistics"
        raise ValueError(f"lower: run handle.calibrate() over data first ({what})")
    example = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    tracer = ModelTracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as err:  # torch.fx raises TraceError, TypeError, RuntimeError, ... naming the construct
        raise LoweringError(f"lower: torch.fx cannot trace the model: {type(err).__name__}: {err}") from None
    gm = torch.fx.GraphModule(model, graph)
    flags = [(q, q.enabled) for _, _, q in handle.quantizers()]
    try:
        for q, _ in flags:
            q.enabled = False
        with torch.no_grad():
            ShapeProp(gm).propagate(*example)
    finally:
        for q, enabled in flags:
            q.enabled = enabled
    lowering = _Lowering(model, handle, datapath)
    _assign_sites(graph, model, lowering)
    _check_sites(handle, lowering)
    for n in graph.nodes:
        if n.op == "call_module" and not is_leaf_module(model.get_submodule(str(n.target)), str(n.target)):
            raise LoweringError(f"lower: module {n.target!r} was traced as a leaf but is not one")
    return lowering.run(graph, example)
