"""The generated C of an integer program: ``<name>.c`` and ``<name>.h``.

Every op of the program becomes one call of the kernel library (``qk_*`` of ``qk.h``, a custom
op's function of ``qk_custom.h``) with its parameters as ``static const`` data: packed weights,
biases, the requantization arrays and output ranges, lookup tables, window geometry, and the
datapath as one ``qk_datapath`` initializer. Layout ops (``reshape``, ``permute``, ``concat``,
``pad``) are generated loops, a reshape being no copy at all. The values are those of the op's
validated record turned into C structs by the same encoders the Python binding uses
(:mod:`kernels._abi`), so the exported call is the call the tests run.

Memory: every tensor of codes, the int32 view a ``requantize`` reads and each op's own scratch
live in one caller-owned scratch buffer, at offsets planned here from the tensors' lifetimes
(first fit, 64-byte aligned); ``<NAME>_SCRATCH_BYTES`` is its size. The generated code keeps no
state: ``<name>_run`` is reentrant for distinct scratch buffers.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from kernels import _qk
from kernels._abi import add_struct, conv2d_geometry, datapath_struct, pool_geometry, requant_struct
from kernels.api import GATE_OUTPUT, PackedWeights, _weight_data
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
)
from quant.contract.custom import CustomOpAttrs, CustomOpDef, custom_op_def
from quant.contract.datapath import Datapath
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs, sigmoid_table, tanh_table
from quant.contract.matmul import MatmulAttrs

__all__ = ["ALIGN", "CProgram", "ProgramLike", "check_name", "generate"]

#: Alignment of every region of the scratch buffer (and of the buffer itself, recommended).
ALIGN = 64
_C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
    "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
    "_Bool", "_Complex", "_Imaginary", "main",
}  # fmt: skip

Codes = npt.NDArray[Any]


class ProgramLike(Protocol):
    """What the exporter reads of a :class:`quant.ir.program.IntegerProgram` (duck-typed: ``kernels`` does
    not import ``quant.ir``)."""

    @property
    def datapath(self) -> Datapath: ...

    @property
    def tensors(self) -> Mapping[str, Any]: ...

    @property
    def nodes(self) -> Sequence[Any]: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def outputs(self) -> tuple[str, ...]: ...

    def digest(self) -> str: ...

    def run_codes(self, *codes: Codes, backend: str = "torch", trace: bool = False) -> Any: ...

    def quantize_input(self, x: Any, index: int = 0) -> Codes: ...

    def __str__(self) -> str: ...


def check_name(name: object) -> str:
    """``name`` if it is a C identifier usable as the prefix of every generated symbol."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", name) or name in _C_KEYWORDS \
            or keyword.iskeyword(name) or name.startswith("qk_"):  # fmt: skip
        raise ValueError(f"export_c: name={name!r} must be a C identifier of at most 31 characters, not a keyword "
                         "and not starting with 'qk_'")  # fmt: skip
    return name


# ----------------------------------------------------------------------------- C literals


def _int(v: int) -> str:
    v = int(v)
    if v == -(1 << 31):
        return "(-2147483647 - 1)"
    if -(1 << 31) < v < (1 << 31):
        return str(v)
    if v == -(1 << 63):
        return "(-INT64_C(9223372036854775807) - 1)"
    return f"INT64_C({v})"


def _float(v: float) -> str:
    f = float(np.float32(v))
    if f == 0.0:
        return "0.0f"
    return f"{f.hex()}f"


def _array(ctype: str, name: str, values: Sequence[Any], fmt: Any = _int) -> str:
    items = [fmt(v) for v in values]
    lines = [", ".join(items[i : i + 16]) for i in range(0, len(items), 16)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};"


def _struct(ctype: str, name: str, fields: Mapping[str, str]) -> str:
    body = ",\n".join(f"    .{k} = {v}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{\n{body}\n}};"


_ENUMS = {
    "overflow": {0: "QK_OVERFLOW_WRAP", 1: "QK_OVERFLOW_SATURATE", 2: "QK_OVERFLOW_ERROR"},
    "requant": {0: "QK_REQUANT_FIXED_POINT", 1: "QK_REQUANT_FLOAT32", 2: "QK_REQUANT_FLOAT64", 3: "QK_REQUANT_POW2"},
    "fixed_point_rounding": {0: "QK_FIXED_POINT_DOUBLE", 1: "QK_FIXED_POINT_SINGLE"},
    "rounding": {0: "QK_ROUND_HALF_AWAY", 1: "QK_ROUND_HALF_UP", 2: "QK_ROUND_HALF_EVEN", 3: "QK_ROUND_FLOOR"},
    "zero_point_order": {0: "QK_ZP_AFTER_ROUNDING", 1: "QK_ZP_BEFORE_ROUNDING"},
}


# ----------------------------------------------------------------------------- memory plan


@dataclass
class _Region:
    """A buffer of the scratch: ``size`` bytes live from op ``start`` to op ``end`` (inclusive)."""

    size: int
    start: int
    end: int
    offset: int = -1


def _place(regions: Sequence[_Region]) -> int:
    """First-fit offsets (``ALIGN``-aligned) so that regions alive at the same op never overlap; the total."""
    placed: list[_Region] = []
    for r in sorted(regions, key=lambda r: (r.start, -r.size)):
        offset = 0
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.start <= r.end and r.start <= p.end)
        for lo, hi in busy:
            if offset + r.size <= lo:
                break
            offset = max(offset, -(-hi // ALIGN) * ALIGN)
        r.offset = offset
        placed.append(r)
    return max((p.offset + p.size for p in placed), default=0)


# ----------------------------------------------------------------------------- the generated program


@dataclass
class CProgram:
    """The generated files and the figures of one export."""

    source: str
    header: str
    scratch_bytes: int
    weight_bytes: int
    entry_points: list[str]
    custom_ops: list[CustomOpDef]
    input_counts: list[int]
    output_counts: list[int]
    input_types: list[str]
    output_types: list[str]
    node_counts: list[int] = field(default_factory=list)
    node_types: list[str] = field(default_factory=list)


def _ctype(signed: bool) -> str:
    return "int8_t" if signed else "uint8_t"


class _Writer:
    def __init__(self, program: ProgramLike, name: str, batch: int) -> None:
        self.p = program
        self.name = name
        self.batch = batch
        self.dp = program.datapath
        self.data: list[str] = []
        self.body: list[str] = []
        self.helpers: set[str] = set()
        self.entry: set[str] = set()
        self.custom: list[CustomOpDef] = []
        self.custom_decls: set[str] = set()
        self.weight_bytes = 0
        self.shapes = {t: self.shape_of(t) for t in program.tensors}

    # -- shapes and storage
    def shape_of(self, tensor: str) -> tuple[int, ...]:
        shape = self.p.tensors[tensor].shape
        return tuple(self.batch if d is None else int(d) for d in shape)

    def count(self, tensor: str) -> int:
        return math.prod(self.shapes[tensor])

    def plan(self) -> None:
        """Storage of every tensor: a program input's pointer, or a scratch region (a reshape shares its input's)."""
        nodes = self.p.nodes
        self.root: dict[str, str] = {t: t for t in self.p.tensors}
        for node in nodes:
            if node.op == "reshape":
                self.root[node.output] = self.root[node.inputs[0]]
        life: dict[str, list[int]] = {}
        for t in self.p.inputs:
            life[self.root[t]] = [-1, -1]
        for i, node in enumerate(nodes):
            for t in (*node.inputs, node.output):
                r = life.setdefault(self.root[t], [i, i])
                r[0], r[1] = min(r[0], i), max(r[1], i)
        for t in self.p.outputs:
            life[self.root[t]][1] = len(nodes)  # copied out after the last op
        self.regions: dict[str, _Region] = {}
        self.temps: dict[tuple[int, str], _Region] = {}
        inputs = {self.root[t] for t in self.p.inputs}
        for root, (start, end) in life.items():
            if root not in inputs:
                self.regions[root] = _Region(self.count(root), start, end)
        self.op_scratch: dict[int, int] = {}
        for i, node in enumerate(nodes):
            for what, size in self.temp_needs(i, node).items():
                if size > 0:
                    self.temps[(i, what)] = _Region(size, i, i)
        self.scratch_bytes = max(ALIGN, _place([*self.regions.values(), *self.temps.values()]))

    def ptr(self, tensor: str) -> str:
        root = self.root[tensor]
        if root in self.p.inputs:
            return f"((const unsigned char *){self.in_name(self.p.inputs.index(root))})"
        return f"(s + {self.regions[root].offset})"

    def in_name(self, i: int) -> str:
        """``in`` for the one input of a program, else ``in0``, ``in1``, ..."""
        return "in" if len(self.p.inputs) == 1 else f"in{i}"

    def out_name(self, j: int) -> str:
        """``out`` for the one output of a program, else ``out0``, ``out1``, ..."""
        return "out" if len(self.p.outputs) == 1 else f"out{j}"

    def temp(self, i: int, what: str) -> tuple[str, int]:
        r = self.temps.get((i, what))
        return ("NULL", 0) if r is None else (f"(s + {r.offset})", r.size)

    # -- per-op scratch
    def temp_needs(self, i: int, node: Any) -> dict[str, int]:
        a, op = node.attrs, node.op
        if op == "conv2d":
            g = conv2d_geometry(a, self.shapes[node.inputs[0]])
            return {"scratch": int(_qk.conv2d_scratch_bytes(g, datapath_struct(a.datapath, op)))}
        if op == "linear":
            m, k, n = self.linear_dims(node)
            return {"scratch": int(_qk.linear_scratch_bytes(m, k, n, datapath_struct(a.datapath, op)))}
        if op == "requantize":
            return {"int32": 4 * self.count(node.inputs[0])}
        if op == "lstm":
            return {"scratch": int(_qk.lstm_scratch_bytes(a.features, a.hidden))}
        if op == "gru":
            return {"scratch": int(_qk.gru_scratch_bytes(a.features, a.hidden))}
        if op == "matmul":
            batch, m, k, n = self.matmul_dims(node)
            lin = datapath_struct(a.linear.datapath, op)
            return {"scratch": int(_qk.linear_scratch_bytes(m, k, n, lin)), "transposed": k * n}
        if isinstance(a, CustomOpAttrs):
            return {"scratch": self.custom_scratch(node)}
        return {}

    def linear_dims(self, node: Any) -> tuple[int, int, int]:
        x = self.shapes[node.inputs[0]]
        return math.prod(x[:-1]), x[-1], node.attrs.w_shape[0]

    def matmul_dims(self, node: Any) -> tuple[int, int, int, int]:
        """``(batch, M, K, N)`` of a matmul node: ``batch`` products of ``(M, K)`` by ``(K, N)``."""
        a = self.shapes[node.inputs[0]]
        return math.prod(a[:-2]), a[-2], node.attrs.k, node.attrs.n

    def custom_scratch(self, node: Any) -> int:
        """Bytes the op's ``<symbol>_scratch_bytes`` asks for on these shapes (0 when it has none)."""
        from kernels.custom import custom_scratch_bytes

        return custom_scratch_bytes(node.attrs, [self.shapes[t] for t in node.inputs], self.batch)

    # -- emission helpers
    def const(self, label: str) -> str:
        return f"{self.name}__{label}"

    def emit_requant(self, label: str, params: Any, output: Any) -> str:
        rq = requant_struct(params, output)
        fields: dict[str, str] = {}
        channels = 1
        for key, ctype in (("multiplier", "int32_t"), ("shift", "int32_t"), ("fmultiplier", "float")):
            arr = rq[key]
            if arr is None:
                fields[key] = "NULL"
                continue
            channels = arr.size
            cname = self.const(f"{label}_{key}")
            self.data.append(_array(ctype, cname, arr.tolist(), _float if ctype == "float" else _int))
            fields[key] = cname
        out = {k: _int(rq[k]) for k in ("y_zero_point", "y_bits", "y_signed", "y_min", "y_max")}
        cname = self.const(f"{label}_rq")
        self.data.append(_struct("qk_requant_params", cname, {"channels": str(channels), **fields, **out}))
        return cname

    def emit_weights(self, label: str, node: Any) -> tuple[str, str, str]:
        """``(&weights, bias pointer, bias length)`` of a conv2d/linear node."""
        a = node.attrs
        w = node.params["weight"]
        if not isinstance(w, np.ndarray):
            w = PackedWeights(data=w.data, bits=w.bits, signed=w.signed, shape=tuple(w.shape))
        data, packed_bits, _ = _weight_data(w, a.datapath, a.op, len(a.w_shape))
        flat = np.ascontiguousarray(data).reshape(-1)
        ctype = "uint8_t" if packed_bits or flat.dtype == np.uint8 else "int8_t"
        self.data.append(_array(ctype, self.const(f"{label}_w"), flat.tolist()))
        self.weight_bytes += flat.size
        zp = list(a.w_zero_point)
        self.data.append(_array("int32_t", self.const(f"{label}_wz"), zp))
        self.data.append(_struct("qk_weights", self.const(f"{label}_weights"), {
            "data": self.const(f"{label}_w"), "length": str(flat.size), "packed_bits": str(packed_bits),
            "zero_point": self.const(f"{label}_wz"), "zero_point_length": str(len(zp)),
        }))  # fmt: skip
        bias = node.params.get("bias")
        if bias is None:
            return f"&{self.const(label + '_weights')}", "NULL", "0"
        b = np.asarray(bias).reshape(-1)
        self.data.append(_array("int32_t", self.const(f"{label}_b"), b.tolist()))
        self.weight_bytes += 4 * b.size
        return f"&{self.const(label + '_weights')}", self.const(f"{label}_b"), str(b.size)

    def call(self, i: int, expr: str) -> None:
        self.body.append(f"    if ((st = {expr}) != QK_OK) {{\n        return {self.name}__failed({i}, (int)st);\n    }}")

    def dp_ref(self) -> str:
        return f"&{self.const('datapath')}"

    def emit_datapath(self, cname: str, dp: Datapath, op: str) -> None:
        """A ``qk_datapath`` constant ``cname`` holding ``dp``."""
        fields = datapath_struct(dp, op)
        self.data.append(_struct("qk_datapath", cname, {k: _ENUMS[k][v] if k in _ENUMS else str(v) for k, v in fields.items()}))

    def weights_of(self, label: str, w: Any, op: str) -> str:
        """A ``qk_weights`` constant of weight codes or packed rows (``&name``)."""
        if not isinstance(w, np.ndarray):
            w = PackedWeights(data=w.data, bits=w.bits, signed=w.signed, shape=tuple(w.shape))
        data, packed_bits, _ = _weight_data(w, self.dp, op, 2)
        flat = np.ascontiguousarray(data).reshape(-1)
        ctype = "uint8_t" if packed_bits or flat.dtype == np.uint8 else "int8_t"
        self.data.append(_array(ctype, self.const(f"{label}_w"), flat.tolist()))
        self.weight_bytes += flat.size
        return self.const(f"{label}_w")

    def recurrent_node(self, i: int, label: str, node: Any, x: list[str], y: str) -> None:
        """One ``qk_lstm`` / ``qk_gru`` call: the two weight structs, biases, the requantizations and the tables."""
        a = node.attrs
        assert isinstance(a, (LstmAttrs, GruAttrs))
        n = self.shapes[node.inputs[0]][0]
        steps = self.shapes[node.inputs[0]][1]
        structs = []
        for key, zeros in (("w_ih", a.ih_zero_point), ("w_hh", a.hh_zero_point)):
            w = node.params[key]
            data = self.weights_of(f"{label}_{key}", w, a.op)
            length = int(np.asarray(getattr(w, "data", w)).size)
            packed = 0 if isinstance(w, np.ndarray) else int(w.bits)
            zname = self.const(f"{label}_{key}_z")
            self.data.append(_array("int32_t", zname, list(zeros)))
            sname = self.const(f"{label}_{key}_weights")
            self.data.append(_struct("qk_weights", sname, {"data": data, "length": str(length), "packed_bits": str(packed),
                                                           "zero_point": zname, "zero_point_length": str(len(zeros))}))  # fmt: skip
            structs.append(f"&{sname}")
        biases = []
        for key in ("b_ih", "b_hh"):
            b = node.params.get(key)
            if b is None:
                biases += ["NULL", "0"]
                continue
            values = np.asarray(b).reshape(-1)
            self.data.append(_array("int32_t", self.const(f"{label}_{key}"), values.tolist()))
            self.weight_bytes += 4 * values.size
            biases += [self.const(f"{label}_{key}"), str(values.size)]
        rqs = [self.emit_requant(f"{label}_ih", a.ih_requant, GATE_OUTPUT),
               self.emit_requant(f"{label}_hh", a.hh_requant, GATE_OUTPUT)]  # fmt: skip
        if isinstance(a, GruAttrs):
            rqs.append(self.emit_requant(f"{label}_hq", a.hq_requant, GATE_OUTPUT))
        rqs.append(self.emit_requant(f"{label}_out", a.out_requant, a.output))
        tables = []
        for key, table in (("sigmoid", sigmoid_table()), ("tanh", tanh_table())):
            cname = self.const(f"{label}_{key}")
            self.data.append(_array("int16_t", cname, list(table)))
            tables.append(cname)
        sp, sn = self.temp(i, "scratch")
        cell = f"{a.cell_shift}, " if isinstance(a, LstmAttrs) else ""
        self.entry.add(f"qk_{a.op}")
        self.call(i, f"qk_{a.op}({n}, {steps}, {a.features}, {a.hidden}, {self.dp_ref()}, {x[0]}, {n * steps * a.features}, "
                     f"{_int(a.x_zero_point)}, {_int(a.h_zero_point)}, {structs[0]}, {structs[1]}, {', '.join(biases)}, "
                     f"{', '.join('&' + r for r in rqs)}, {cell}{int(a.reverse)}, {tables[0]}, {tables[1]}, "
                     f"{len(sigmoid_table())}, {y}, {n * steps * a.hidden}, {sp}, {sn})")

    def matmul_node(self, i: int, label: str, node: Any, x: list[str], y: str) -> None:
        """Per batch index, ``b[i]^T`` into a temporary, then the linear the matmul record holds (section 6.4)."""
        a = node.attrs
        assert isinstance(a, MatmulAttrs)
        batch, m, k, n = self.matmul_dims(node)
        lin = a.linear
        dname = self.const(f"{label}_dp")
        self.emit_datapath(dname, lin.datapath, a.op)
        zname = self.const(f"{label}_bz")
        self.data.append(_array("int32_t", zname, list(lin.w_zero_point)))
        rq = self.emit_requant(label, lin.requant, lin.output)
        sp, sn = self.temp(i, "scratch")
        t, _ = self.temp(i, "transposed")
        self.helpers.add("transpose")
        self.entry.add("qk_linear")
        self.body.append("\n".join([
            "    {",
            "        size_t b;",
            "        qk_weights w;",
            f"        w.data = {t};",
            f"        w.length = {k * n};",
            "        w.packed_bits = 0;",
            f"        w.zero_point = {zname};",
            "        w.zero_point_length = 1;",
            "        w.cache = NULL;",
            "        w.cache_bytes = 0;",
            f"        for (b = 0; b < {batch}; ++b) {{",
            f"            {self.name}__transpose({x[1]} + b * {k * n}, {t}, {k}, {n});",
            f"            if ((st = qk_linear({m}, {k}, {n}, &{dname}, {x[0]} + b * {m * k}, {m * k}, "
            f"{_int(lin.x_zero_point)}, &w, NULL, 0, &{rq}, {y} + b * {m * n}, {m * n}, {sp}, {sn}, "
            "QK_ISA_AUTO)) != QK_OK) {",
            f"                return {self.name}__failed({i}, (int)st);",
            "            }",
            "        }",
            "    }",
        ]))  # fmt: skip

    # -- the ops
    def node(self, i: int, node: Any) -> None:
        label = f"n{i}"
        a, op = node.attrs, node.op
        x = [self.ptr(t) for t in node.inputs]
        y = self.ptr(node.output)
        y_len = self.count(node.output)
        xs = [self.shapes[t] for t in node.inputs]
        self.body.append(f"    /* {i}: %{node.output} = {op}({', '.join('%' + t for t in node.inputs)}) */")
        if op == "conv2d":
            assert isinstance(a, Conv2dAttrs)
            g = conv2d_geometry(a, xs[0])
            self.data.append(_struct("qk_conv2d_geometry", self.const(f"{label}_g"), {k: str(v) for k, v in g.items()}))
            w, b, blen = self.emit_weights(label, node)
            rq = self.emit_requant(label, a.requant, a.output)
            sp, sn = self.temp(i, "scratch")
            self.entry.add("qk_conv2d")
            self.call(i, f"qk_conv2d(&{self.const(label + '_g')}, {self.dp_ref()}, {x[0]}, {math.prod(xs[0])}, "
                         f"{_int(a.x_zero_point)}, {w}, {b}, {blen}, &{rq}, {y}, {y_len}, {sp}, {sn}, QK_ISA_AUTO)")
        elif op == "linear":
            assert isinstance(a, LinearAttrs)
            m, k, n = self.linear_dims(node)
            w, b, blen = self.emit_weights(label, node)
            rq = self.emit_requant(label, a.requant, a.output)
            sp, sn = self.temp(i, "scratch")
            self.entry.add("qk_linear")
            self.call(i, f"qk_linear({m}, {k}, {n}, {self.dp_ref()}, {x[0]}, {math.prod(xs[0])}, {_int(a.x_zero_point)}, "
                         f"{w}, {b}, {blen}, &{rq}, {y}, {y_len}, {sp}, {sn}, QK_ISA_AUTO)")
        elif op == "requantize":
            assert isinstance(a, RequantizeAttrs)
            outer, channels, inner = a.channel_layout(xs[0])
            rq = self.emit_requant(label, a.requant, a.output)
            q, _ = self.temp(i, "int32")
            signed = int(self.p.tensors[node.inputs[0]].signed)
            self.helpers.add("widen")
            self.body.append(f"    {self.name}__widen({x[0]}, {signed}, (int32_t *){q}, {y_len});")
            self.entry.add("qk_requantize")
            self.call(i, f"qk_requantize((const int32_t *){q}, {y_len}, {outer}, {channels}, {inner}, "
                         f"{_int(a.in_zero_point)}, {self.dp_ref()}, &{rq}, {y}, {y_len}, QK_ISA_AUTO)")
        elif op == "add":
            assert isinstance(a, AddAttrs)
            fields = add_struct(a)
            cname = self.const(f"{label}_add")
            self.data.append(_struct("qk_add_params", cname, {
                k: (_float(v) if k.endswith("fmultiplier") else _int(v)) for k, v in fields.items()}))
            self.entry.add("qk_add")
            self.call(i, f"qk_add({x[0]}, {x[1]}, {y_len}, &{cname}, {self.dp_ref()}, {y}, {y_len})")
        elif op == "mul":
            assert isinstance(a, MulAttrs)
            rows, inner, _ = a.broadcast(xs[0], xs[1])
            rq = self.emit_requant(label, a.requant, a.output)
            self.entry.add("qk_mul")
            self.call(i, f"qk_mul({x[0]}, {math.prod(xs[0])}, {x[1]}, {math.prod(xs[1])}, {rows}, {inner}, "
                         f"{_int(a.a_zero_point)}, {_int(a.b_zero_point)}, {self.dp_ref()}, &{rq}, {y}, {y_len}, QK_ISA_AUTO)")
        elif op == "softmax":
            assert isinstance(a, SoftmaxAttrs)
            outer, length, inner = a.layout(xs[0])
            cname = self.const(f"{label}_exp")
            self.data.append(_array("int32_t", cname, list(a.table)))
            self.entry.add("qk_softmax")
            self.call(i, f"qk_softmax({x[0]}, {y_len}, {outer}, {length}, {inner}, {a.x_bits}, {int(a.x_signed)}, "
                         f"{cname}, {len(a.table)}, {a.output.bits}, {int(a.output.signed)}, {self.dp_ref()}, {y}, {y_len})")
        elif op in ("avg_pool2d", "max_pool2d"):
            assert isinstance(a, (AvgPool2dAttrs, MaxPool2dAttrs))
            g = pool_geometry(xs[0], a.window.resolve(xs[0], a.op))
            gname = self.const(f"{label}_g")
            self.data.append(_struct("qk_pool2d_geometry", gname, {k: str(v) for k, v in g.items()}))
            signed = int(self.p.tensors[node.inputs[0]].signed)
            self.entry.add(f"qk_{op}")
            if isinstance(a, AvgPool2dAttrs):
                self.call(i, f"qk_avg_pool2d(&{gname}, {self.dp_ref()}, {x[0]}, {math.prod(xs[0])}, {signed}, "
                             f"{_int(a.zero_point)}, {y}, {y_len})")
            else:
                self.call(i, f"qk_max_pool2d(&{gname}, {x[0]}, {math.prod(xs[0])}, {signed}, {y}, {y_len})")
        elif op == "lut":
            assert isinstance(a, LutAttrs)
            table = np.asarray(node.params["table"])
            cname = self.const(f"{label}_table")
            self.data.append(_array(_ctype(table.dtype == np.int8), cname, table.reshape(-1).tolist()))
            self.weight_bytes += table.size
            inner = a.inner(xs[0])
            self.entry.add("qk_lut")
            self.call(i, f"qk_lut({x[0]}, {y_len}, {a.channels}, {inner}, {a.x_bits}, {int(a.x_signed)}, {cname}, "
                         f"{table.size}, {int(table.dtype == np.int8)}, {y}, {y_len})")
        elif op == "slice":
            shape = xs[0]
            outer, inner = math.prod(shape[: a.axis]), math.prod(shape[a.axis + 1 :])
            n_out, length = self.shapes[node.output][a.axis], shape[a.axis]
            self.body.append("    {\n        size_t o, k;\n        for (o = 0; o < %d; ++o) {\n"
                             "            for (k = 0; k < %d; ++k) {\n"
                             "                memcpy(%s + (o * %d + k) * %d, %s + (o * %d + %d + k * %d) * %d, %d);\n"
                             "            }\n        }\n    }"
                             % (outer, n_out, y, n_out, inner, x[0], length, a.start, a.step, inner, inner))
        elif op == "constant":
            codes = np.asarray(node.params["codes"]).reshape(-1)
            cname = self.const(f"{label}_codes")
            self.data.append(_array(_ctype(codes.dtype == np.int8), cname, codes.tolist()))
            self.weight_bytes += codes.size
            per = codes.size
            self.body.append("    {\n        size_t b;\n        for (b = 0; b < %d; ++b) {\n"
                             "            memcpy(%s + b * %d, %s, %d);\n        }\n    }" % (self.batch, y, per, cname, per))
        elif op == "reshape":
            pass  # the same bytes: the output shares its input's storage
        elif op == "permute":
            dims = list(a.dims)
            shape = xs[0]
            self.helpers.add("permute")
            sname, dname = self.const(f"{label}_shape"), self.const(f"{label}_dims")
            self.data.append(_array("size_t", sname, list(shape), str))
            self.data.append(_array("int", dname, dims, str))
            self.body.append(f"    {self.name}__permute({x[0]}, {y}, {len(shape)}, {sname}, {dname});")
        elif op == "concat":
            axis = a.axis
            outer = math.prod(xs[0][:axis])
            offset = 0
            self.body.append("    {\n        size_t o;\n        for (o = 0; o < %d; ++o) {" % outer)
            total = sum(math.prod(s[axis:]) for s in xs)
            for src, shape in zip(x, xs):
                chunk = math.prod(shape[axis:])
                self.body.append(f"            memcpy({y} + o * {total} + {offset}, {src} + o * {chunk}, {chunk});")
                offset += chunk
            self.body.append("        }\n    }")
        elif op == "pad":
            shape, out_shape = xs[0], self.shapes[node.output]
            before = [0] * len(shape)
            for k in range(len(a.pads) // 2):
                before[len(shape) - 1 - k] = a.pads[2 * k]
            self.helpers.add("pad")
            names = [self.const(f"{label}_{w}") for w in ("in", "out", "before")]
            for cname, values in zip(names, (shape, out_shape, before)):
                self.data.append(_array("size_t", cname, list(values), str))
            self.body.append(f"    {self.name}__pad({x[0]}, {y}, {len(shape)}, {names[0]}, {names[1]}, {names[2]}, "
                             f"{_int(a.value)});")
        elif op == "matmul":
            self.matmul_node(i, label, node, x, y)
        elif op in ("lstm", "gru"):
            self.recurrent_node(i, label, node, x, y)
        elif op == "layernorm":
            assert isinstance(a, LayerNormAttrs)
            rows = a.rows(xs[0])
            rq = self.emit_requant(label, a.requant, a.output)
            g, b = node.params.get("gamma"), node.params.get("bias")
            gname, bname = "NULL", "NULL"
            if g is not None:
                gname = self.const(f"{label}_gamma")
                self.data.append(_array("int8_t", gname, np.asarray(g).reshape(-1).tolist()))
                self.weight_bytes += a.length
            if b is not None:
                bname = self.const(f"{label}_b")
                self.data.append(_array("int32_t", bname, np.asarray(b).reshape(-1).tolist()))
                self.weight_bytes += 4 * a.length
            g_len, b_len = (a.length if g is not None else 0), (a.length if b is not None else 0)
            self.entry.add("qk_layernorm")
            self.call(i, f"qk_layernorm({x[0]}, {math.prod(xs[0])}, {rows}, {a.length}, {a.x_bits}, {int(a.x_signed)}, "
                         f"INT64_C({a.eps_term}), {gname}, {g_len}, {_int(a.gamma_zero_point)}, {bname}, {b_len}, "
                         f"{self.dp_ref()}, &{rq}, {y}, {y_len}, QK_ISA_AUTO)")
        elif isinstance(a, CustomOpAttrs):
            self.custom_node(i, label, node, x, y)
        else:
            raise ValueError(f"export_c: node {node.name!r}: op {op!r} has no C form")
        self.body.append(f"    if (observer != NULL) {{\n        observer({i}, {y}, {y_len}, context);\n    }}")

    def custom_node(self, i: int, label: str, node: Any, x: list[str], y: str) -> None:
        a = node.attrs
        op = custom_op_def(a.op)
        if op.c_library is not None and not op.c_sources:
            raise ValueError(f"export_c: node {node.name!r}: custom op {op.name!r} has no C source to export (its C "
                             f"function is in {op.c_library!r}); register it with c_sources=[...]")  # fmt: skip
        if op.c_library is None:
            self.entry.add(op.c_symbol)
        if op not in self.custom:
            self.custom.append(op)
        names = []
        for k, (pname, value) in enumerate(a.params):
            values = list(value) if isinstance(value, tuple) else [value]
            cname = self.const(f"{label}_p{k}")
            self.data.append(_array("int64_t", cname, values or [0]))
            names.append((cname, len(values)))
        lines = ["    {", f"        qk_custom_tensor t[{len(x)}], o;", f"        qk_custom_param p[{max(1, len(names))}];",
                 "        memset(t, 0, sizeof t);", "        memset(&o, 0, sizeof o);"]  # fmt: skip
        for k, (ptr, tensor, bits, signed) in enumerate(zip(x, node.inputs, a.x_bits, a.x_signed)):
            shape = self.shapes[tensor]
            lines.append(f"        t[{k}].data = (void *){ptr};")
            lines += [f"        t[{k}].shape[{d}] = {s};" for d, s in enumerate(shape)]
            lines.append(f"        t[{k}].ndim = {len(shape)};\n        t[{k}].bits = {bits};\n        t[{k}].is_signed = {int(signed)};")
        shape = self.shapes[node.output]
        lines.append(f"        o.data = {y};")
        lines += [f"        o.shape[{d}] = {s};" for d, s in enumerate(shape)]
        lines.append(f"        o.ndim = {len(shape)};\n        o.bits = {a.y_bits};\n        o.is_signed = {int(a.y_signed)};")
        for k, (cname, n) in enumerate(names):
            lines.append(f"        p[{k}].values = {cname};\n        p[{k}].count = {n};")
        sp, sn = self.temp(i, "scratch")
        lines.append(f"        st = (qk_status){op.c_symbol}(t, {len(x)}, p, {len(names)}, &o, {sp}, {sn});")
        lines.append("    }")
        self.body.append("\n".join(lines))
        self.body.append(f"    if (st != QK_OK) {{\n        return {self.name}__failed({i}, (int)st);\n    }}")
        if op.c_library is not None:
            self.custom_decls.add(
                f"int32_t {op.c_symbol}(const qk_custom_tensor *inputs, int32_t n_inputs, const qk_custom_param *params, "
                "int32_t n_params, qk_custom_tensor *output, void *scratch, size_t scratch_bytes);")

    # -- assembly
    def helpers_source(self) -> str:
        n = self.name
        parts = [f"""static int {n}__failed(int op, int status)
{{
    return 1000 * (op + 1) + (status > 0 && status < 1000 ? status : 999);
}}"""]
        if "widen" in self.helpers:
            parts.append(f"""static void {n}__widen(const void *x, int is_signed, int32_t *q, size_t count)
{{
    size_t i;
    for (i = 0; i < count; ++i) {{
        q[i] = is_signed ? (int32_t)((const int8_t *)x)[i] : (int32_t)((const uint8_t *)x)[i];
    }}
}}""")
        if "transpose" in self.helpers:
            parts.append(f"""/* t (cols x rows) = the transpose of the row-major byte matrix x (rows x cols). */
static void {n}__transpose(const unsigned char *x, unsigned char *t, size_t rows, size_t cols)
{{
    size_t r, c;
    for (r = 0; r < rows; ++r) {{
        for (c = 0; c < cols; ++c) {{
            t[c * rows + r] = x[r * cols + c];
        }}
    }}
}}""")
        if "permute" in self.helpers:
            parts.append(f"""/* y = x with its dimensions reordered: y's dimension d is x's dimension dims[d] (byte codes). */
static void {n}__permute(const unsigned char *x, unsigned char *y, int ndim, const size_t *shape, const int *dims)
{{
    size_t index[8] = {{0}}, stride[8], count = 1, i, off;
    int d;
    for (d = ndim - 1; d >= 0; --d) {{
        stride[d] = count;
        count *= shape[d];
    }}
    for (i = 0; i < count; ++i) {{
        off = 0;
        for (d = 0; d < ndim; ++d) {{
            off += index[d] * stride[dims[d]];
        }}
        y[i] = x[off];
        for (d = ndim - 1; d >= 0; --d) {{
            if (++index[d] < shape[dims[d]]) {{
                break;
            }}
            index[d] = 0;
        }}
    }}
}}""")
        if "pad" in self.helpers:
            parts.append(f"""/* y (out_shape) = value everywhere, and x (in_shape) placed at offset before[] (byte codes). */
static void {n}__pad(const unsigned char *x, unsigned char *y, int ndim, const size_t *in_shape,
                     const size_t *out_shape, const size_t *before, int value)
{{
    size_t index[8] = {{0}}, rows = 1, total = 1, r, off, stride;
    int d;
    for (d = 0; d < ndim; ++d) {{
        total *= out_shape[d];
    }}
    memset(y, (unsigned char)value, total);
    for (d = 0; d < ndim - 1; ++d) {{
        rows *= in_shape[d];
    }}
    for (r = 0; r < rows; ++r) {{
        off = 0;
        stride = 1;
        for (d = ndim - 1; d >= 0; --d) {{
            off += (index[d] + before[d]) * stride;
            stride *= out_shape[d];
        }}
        memcpy(y + off, x + r * in_shape[ndim - 1], in_shape[ndim - 1]);
        for (d = ndim - 2; d >= 0; --d) {{
            if (++index[d] < in_shape[d]) {{
                break;
            }}
            index[d] = 0;
        }}
    }}
}}""")
        return "\n\n".join(parts)


def _signature(w: "_Writer", observed: bool) -> str:
    p = w.p
    args = [f"const {_ctype(p.tensors[t].signed)} *{w.in_name(i)}" for i, t in enumerate(p.inputs)]
    args += [f"{_ctype(p.tensors[t].signed)} *{w.out_name(i)}" for i, t in enumerate(p.outputs)]
    args.append("void *scratch")
    if observed:
        args += [f"{w.name}_observer observer", "void *context"]
    suffix = "_observed" if observed else ""
    return f"int {w.name}_run{suffix}({', '.join(args)})"


def generate(program: ProgramLike, name: str, *, batch: int = 1, provenance: str) -> CProgram:
    """The C of ``program`` for ``batch`` samples per call (see the module docstring)."""
    name = check_name(name)
    w = _Writer(program, name, batch)
    w.plan()
    w.emit_datapath(w.const("datapath"), program.datapath, "export_c")
    for i, node in enumerate(program.nodes):
        w.node(i, node)
    upper = name.upper()
    copies = []
    for j, t in enumerate(program.outputs):
        copies.append(f"    memcpy({w.out_name(j)}, {w.ptr(t)}, {w.count(t)});")
    custom_decls = sorted(w.custom_decls)
    uses_custom = bool(w.custom)
    source = "\n".join([
        provenance,
        f'#include "{name}.h"',
        "",
        "#include <stdint.h>",
        "#include <string.h>",
        "",
        '#include "qk.h"',
        *(['#include "qk_custom.h"'] if uses_custom else []),
        "",
        *custom_decls,
        *([""] if custom_decls else []),
        "\n\n".join(w.data),
        "",
        w.helpers_source(),
        "",
        _signature(w, True),
        "{",
        "    unsigned char *s = (unsigned char *)scratch;",
        "    qk_status st = QK_OK;",
        "    if (scratch == NULL || (uintptr_t)scratch % 8 != 0) {",
        "        return 1;",
        "    }",
        *w.body,
        *copies,
        "    (void)st;",
        "    return 0;",
        "}",
        "",
        _signature(w, False),
        "{",
        f"    return {name}_run_observed({', '.join([*map(w.in_name, range(len(program.inputs))), *map(w.out_name, range(len(program.outputs)))])}, scratch, NULL, NULL);",
        "}",
        "",
    ])  # fmt: skip
    in_counts = [w.count(t) for t in program.inputs]
    out_counts = [w.count(t) for t in program.outputs]
    header_lines = [
        provenance,
        f"#ifndef {upper}_H",
        f"#define {upper}_H",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"/* Samples per call of {name}_run (the batch the program was generated for). */",
        f"#define {upper}_BATCH {batch}",
        f"/* Bytes of the scratch buffer {name}_run needs (align it to {ALIGN} bytes; at least 8 is required). */",
        f"#define {upper}_SCRATCH_BYTES {w.scratch_bytes}",
        f"/* Bytes of the constant weights, biases and tables compiled into {name}.c. */",
        f"#define {upper}_WEIGHT_BYTES {w.weight_bytes}",
    ]
    for i, t in enumerate(program.inputs):
        info = program.tensors[t]
        header_lines.append(f"/* Input {i} ({w.in_name(i)}, %{t}): {w.shapes[t]} {_ctype(info.signed)} codes of {info.bits} "
                            f"bits, real = {float(info.scale)!r} * (code - zero point {info.zero_point}). */")
        header_lines.append(f"#define {upper}_IN{i}_COUNT {in_counts[i]}")
    for j, t in enumerate(program.outputs):
        info = program.tensors[t]
        header_lines.append(f"/* Output {j} ({w.out_name(j)}, %{t}): {w.shapes[t]} {_ctype(info.signed)} codes of "
                            f"{info.bits} bits, real = {float(info.scale)!r} * (code - zero point {info.zero_point}). */")
        header_lines.append(f"#define {upper}_OUT{j}_COUNT {out_counts[j]}")
    header_lines += [
        f"#define {upper}_OP_COUNT {len(program.nodes)}",
        "",
        f"/* Called after op `op` (0 .. {upper}_OP_COUNT - 1, in program order) with its `count` output codes. */",
        f"typedef void (*{name}_observer)(int op, const void *codes, size_t count, void *context);",
        "",
        f"/* Runs the program: 0 on success, 1 for a NULL or misaligned scratch, else 1000 * (op + 1) + the",
        "   status of the op that failed (qk_status of qk_types.h; 999 for larger codes of a custom op).",
        "   No allocation, no globals written: reentrant for distinct scratch buffers. */",
        _signature(w, False) + ";",
        "",
        f"/* {name}_run, calling observer (when not NULL) after every op. */",
        _signature(w, True) + ";",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {upper}_H */",
        "",
    ]
    node_counts = [w.count(n.output) for n in program.nodes]
    node_types = [_ctype(program.tensors[n.output].signed) for n in program.nodes]
    return CProgram(source, "\n".join(header_lines), w.scratch_bytes, w.weight_bytes, sorted(w.entry), w.custom,
                    in_counts, out_counts, [_ctype(program.tensors[t].signed) for t in program.inputs],
                    [_ctype(program.tensors[t].signed) for t in program.outputs], node_counts, node_types)  # fmt: skip
