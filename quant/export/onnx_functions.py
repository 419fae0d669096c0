"""ONNX functions of the ``lowbit`` domain: contract ops that have no ONNX operator, as model-local functions
whose bodies are integer ONNX ops computing the contract exactly.

``IntegerLayerNorm(x, g, b, eps, m, zy) -> y`` is section 6.5 for the ``mlas`` arithmetic (rounding half to
even, one float32 requantization product): ``x`` the int8/uint8 codes of rows along the last axis, ``g`` the
int64 gamma factors ``gamma - z_g`` (ones without gamma), ``b`` the int64 bias, ``eps`` the int64 epsilon
term ``E``, ``m`` the float32 multiplier (one, or one per element of the row), ``zy`` the output zero point
(its type is the output's). The body, in int64: ``Shape`` (the row length ``L``), ``ReduceSum``, ``Mul``,
``Sub`` (``c = L q - T``), ``ReduceSum`` of squares (``V``), ``Add``/``Min`` (``W0``), ``Less`` against the 16
thresholds ``2^(62 - 2k)`` counted by ``ReduceSum`` (``P``), ``Gather`` of ``4^P`` and ``2^(15 + P)``, the
integer square root as ``Floor(Sqrt)`` in float64 corrected by one step each way with int64 comparisons, the
rounding division by ``Mod`` (``fmod = 0``: the floor remainder), an exact ``Div`` and a half-to-even
carry, then ``Clip`` to int32, ``Cast`` to float32, ``Mul`` by ``m`` and ``QuantizeLinear(·, 1, zy)``.
ONNX Runtime runs it code for code (tests/quant/lowering/test_layernorm.py).

>>> f = integer_layernorm_function(21)
>>> (f.domain, f.name, list(f.input), list(f.output))
('lowbit', 'IntegerLayerNorm', ['x', 'g', 'b', 'eps', 'm', 'zy'], ['y'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quant.contract.layernorm import LAYERNORM_FRACTION_BITS, LAYERNORM_MAX_EPS_TERM

__all__ = ["LOWBIT_DOMAIN", "INTEGER_LAYERNORM", "integer_layernorm_function"]

#: The domain of the functions below.
LOWBIT_DOMAIN = "lowbit"
#: The name of section 6.5's function.
INTEGER_LAYERNORM = "IntegerLayerNorm"
_MAX_SHIFT = 16


def integer_layernorm_function(opset: int) -> onnx.FunctionProto:
    """The ``IntegerLayerNorm`` function (see the module doc), its body in the default domain at ``opset``."""
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: Any) -> str:
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    def op(op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    axes = const("axes", np.array([-1], np.int64))
    one, two = const("one", np.array(1, np.int64)), const("two", np.array(2, np.int64))
    q = op("Cast", ["x"], "q", to=TensorProto.INT64)
    length = op("Shape", ["x"], "length", start=-1)
    total = op("ReduceSum", [q, axes], "total", keepdims=1)
    c = op("Sub", [op("Mul", [q, length], "scaled"), total], "centred")
    v = op("ReduceSum", [op("Mul", [c, c], "squares"), axes], "v", keepdims=1)
    w0 = op("Min", [op("Add", [v, "eps"], "v_eps"), const("w_max", np.array(LAYERNORM_MAX_EPS_TERM, np.int64))], "w0")
    thresholds = const("thresholds", np.array([1 << (62 - 2 * k) for k in range(1, _MAX_SHIFT + 1)], np.int64))
    below = op("Cast", [op("Less", [w0, thresholds], "below")], "below_count", to=TensorProto.INT64)
    p = op("ReduceSum", [below, axes], "p", keepdims=1)
    pow4 = const("pow4", np.array([4**k for k in range(_MAX_SHIFT + 1)], np.int64))
    n = op("Div", [op("Mul", [w0, op("Gather", [pow4, p], "four_p", axis=0)], "w"), length], "n")
    root = op("Floor", [op("Sqrt", [op("Cast", [n], "n_f64", to=TensorProto.DOUBLE)], "root_f64")], "root_floor")
    r0 = op("Cast", [root], "r0", to=TensorProto.INT64)
    over = op("Cast", [op("Greater", [op("Mul", [r0, r0], "r0_squared"), n], "over")], "over_int", to=TensorProto.INT64)
    r1 = op("Sub", [r0, over], "r1")
    r1_next = op("Add", [r1, one], "r1_next")
    under = op("Cast", [op("LessOrEqual", [op("Mul", [r1_next, r1_next], "r1_next_squared"), n], "under")], "under_int",
               to=TensorProto.INT64)  # fmt: skip
    r = op("Max", [op("Add", [r1, under], "r2"), one], "r")
    pow2 = const("pow2", np.array([1 << (LAYERNORM_FRACTION_BITS + k) for k in range(_MAX_SHIFT + 1)], np.int64))
    num = op("Mul", [op("Mul", ["g", c], "gc"), op("Gather", [pow2, p], "two_p", axis=0)], "numerator")
    rem = op("Mod", [num, r], "remainder", fmod=0)
    quotient = op("Div", [op("Sub", [num, rem], "multiple"), r], "quotient")
    twice = op("Add", [rem, rem], "twice")
    odd = op("Cast", [op("Mod", [quotient, two], "parity", fmod=0)], "odd", to=TensorProto.BOOL)
    tie_up = op("And", [op("Equal", [twice, r], "tie"), odd], "tie_up")
    up = op("Cast", [op("Or", [op("Greater", [twice, r], "past_half"), tie_up], "up")], "carry", to=TensorProto.INT64)
    t = op("Add", [quotient, up], "t")
    acc = op("Clip", [op("Add", [t, "b"], "t_b"), const("int32_min", np.array(-(1 << 31), np.int64)),
                      const("int32_max", np.array((1 << 31) - 1, np.int64))], "acc")  # fmt: skip
    product = op("Mul", [op("Cast", [acc], "acc_f32", to=TensorProto.FLOAT), "m"], "product")
    op("QuantizeLinear", [product, const("unit", np.array(1.0, np.float32)), "zy"], "y")
    return helper.make_function(LOWBIT_DOMAIN, INTEGER_LAYERNORM, ["x", "g", "b", "eps", "m", "zy"], ["y"], nodes,
                                [helper.make_opsetid("", opset)], doc_string=__doc__)  # fmt: skip
