"""``IntegerProgram``: a model lowered to integer ops on a datapath, as plain data.

A program is a list of :class:`Node` in execution order. Each node applies one op of
:mod:`quant.ir.ops` (its validated attribute record and its constant parameters: weight codes,
packed for 1, 2 and 4 bits, int32 biases, lookup tables) to tensors of codes named in
:attr:`IntegerProgram.tensors`, each a :class:`TensorInfo` (shape with ``None`` for the batch,
bits, signedness, the scale and zero point the codes stand for). The program's inputs are
quantized from floats by the contract's section 7 on its datapath; its outputs are codes that
:meth:`IntegerProgram.dequantize` turns back into reals.

``run(x, backend=...)`` runs it on a backend of :mod:`quant.contract.backend` (``"torch"`` is
the int64 reference, ``"c"`` the C kernels), ``save``/``load`` write and read one ``.npz`` file
holding a versioned JSON description and the arrays (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from quant.contract.backend import Backend, get_backend
from quant.contract.codes import code_kind, packed_row_bytes
from quant.contract.custom import CustomOperand
from quant.contract.datapath import Datapath
from quant.contract.multiplier import FixedPointRequant, FloatRequant, RequantParams
from quant.ir.ops import op_def

__all__ = ["FORMAT_VERSION", "IntegerProgram", "Node", "PackedTensor", "TensorInfo"]

#: Version of the saved format; a file of another version is refused.
FORMAT_VERSION = 1

Codes = npt.NDArray[Any]
_BACKEND_ALIASES = {"torch": "torch_ref"}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of codes: ``shape`` (``None`` for the batch dimension), ``bits``-wide ``signed`` codes
    standing for ``scale * (code - zero_point)``."""

    name: str
    shape: tuple[Optional[int], ...]
    bits: int
    signed: bool
    scale: float
    zero_point: int

    @property
    def dtype(self) -> type[np.integer[Any]]:
        """int8 for signed codes, uint8 for unsigned ones."""
        return np.int8 if self.signed else np.uint8

    def operand(self) -> CustomOperand:
        """These codes as a custom op's ``integer_params`` sees them (the per-sample shape)."""
        return CustomOperand(self.scale, self.zero_point, self.bits, self.signed,
                             tuple(int(d) for d in self.shape[1:] if d is not None))  # fmt: skip

    def describe(self) -> str:
        """``uint8[N,16,8,8] s=0.0123 z=3`` style."""
        dims = ",".join("N" if d is None else str(d) for d in self.shape)
        return f"{code_kind(self.bits, self.signed)}[{dims}] s={self.scale:.6g} z={self.zero_point}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return {"name": self.name, "shape": list(self.shape), "bits": self.bits, "signed": self.signed,
                "scale": self.scale, "zero_point": self.zero_point}  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TensorInfo":
        """The inverse of :meth:`to_json` (values checked)."""
        scale = float(d["scale"])
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"tensor {d.get('name')!r}: scale={scale!r} must be finite and > 0")
        shape = tuple(None if s is None else int(s) for s in d["shape"])
        return cls(str(d["name"]), shape, int(d["bits"]), bool(d["signed"]), scale, int(d["zero_point"]))


@dataclass(frozen=True, eq=False)
class PackedTensor:
    """Weight codes packed along the reduction axis (section 3): ``data`` uint8 ``(C_out, ceil(K*bits/8))``."""

    data: npt.NDArray[np.uint8]
    bits: int
    signed: bool
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        k = math.prod(self.shape[1:])
        want = (self.shape[0], packed_row_bytes(k, self.bits))
        if self.data.dtype != np.uint8 or self.data.shape != want:
            raise ValueError(f"packed weights: data {self.data.dtype}{list(self.data.shape)}, expected uint8{list(want)}")


Param = Union[Codes, PackedTensor]


@dataclass(frozen=True)
class Node:
    """One op of the program: ``output = op(attrs, *inputs, **params)``."""

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: Any
    params: Mapping[str, Param] = field(default_factory=dict)


def _describe_requant(p: RequantParams) -> str:
    if isinstance(p, FixedPointRequant):
        return f"M0={_short(p.m0)} e={_short(p.exponent)}"
    if isinstance(p, FloatRequant):
        return f"m={_short(p.multiplier)}"
    return f"shift={_short(p.right_shift)}"


def _short(a: npt.NDArray[Any]) -> str:
    values = a.reshape(-1).tolist()
    shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values[:3])
    return f"[{shown}{', ...' if len(values) > 3 else ''}]" if a.ndim else shown


def _describe_param(p: Param) -> str:
    if isinstance(p, PackedTensor):
        return f"{code_kind(p.bits, p.signed)}{list(p.shape)} packed"
    return f"{p.dtype}{list(p.shape)}"


class IntegerProgram:
    """A lowered model (see the module docstring)."""

    def __init__(
        self,
        datapath: Datapath,
        tensors: Mapping[str, TensorInfo],
        nodes: Sequence[Node],
        inputs: Sequence[str],
        outputs: Sequence[str],
        origins: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.datapath = datapath
        self.tensors = dict(tensors)
        self.nodes = list(nodes)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        #: The model's graph node (``torch.fx`` name) -> the program tensor holding its value, for
        #: every node the lowering gave a tensor (a fused activation shares its layer's tensor).
        self.origins = dict(origins or {})
        self._check()

    def _check(self) -> None:
        known = set(self.inputs)
        for name in (*self.inputs, *self.outputs):
            if name not in self.tensors:
                raise ValueError(f"program: tensor {name!r} is not described")
        for node in self.nodes:
            op_def(node.op)
            for t in node.inputs:
                if t not in known:
                    raise ValueError(f"program: node {node.name!r} reads {t!r} before any node writes it")
            if node.output not in self.tensors:
                raise ValueError(f"program: node {node.name!r} writes the undescribed tensor {node.output!r}")
            known.add(node.output)
        for name in self.outputs:
            if name not in known:
                raise ValueError(f"program: output {name!r} is never written")
        for node_name, tensor in self.origins.items():
            if tensor not in self.tensors:
                raise ValueError(f"program: graph node {node_name!r} maps to the undescribed tensor {tensor!r}")

    # ------------------------------------------------------------------ display
    def __str__(self) -> str:
        lines = [f"IntegerProgram on {self.datapath.describe()}"]
        for name in self.inputs:
            lines.append(f"  input  %{name}: {self.tensors[name].describe()}")
        for node in self.nodes:
            out = self.tensors[node.output]
            args = ", ".join(f"%{t}" for t in node.inputs)
            extra = [f"{k}={_describe_param(v)}" for k, v in node.params.items()]
            requant = getattr(node.attrs, "requant", None)
            if requant is not None:
                extra.append(_describe_requant(requant))
            describe = getattr(node.attrs, "describe", None)
            if callable(describe):
                extra.append(describe())
            output = getattr(node.attrs, "output", None)
            if output is not None:
                extra.append(f"clamp=[{output.lo},{output.hi}]")
            lines.append(f"  %{node.output} = {node.op}({args}) {' '.join(extra)} -> {out.describe()}".rstrip())
        lines.append(f"  return {', '.join('%' + n for n in self.outputs)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"IntegerProgram({len(self.nodes)} ops on {self.datapath.name})"

    # ------------------------------------------------------------------ running
    def quantize_input(self, x: Any, index: int = 0) -> Codes:
        """The codes of float input ``x`` for the program's ``index``-th input (contract section 7)."""
        import torch

        from quant.reference.quantize import quantize

        info = self.tensors[self.inputs[index]]
        xt = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if not xt.is_floating_point():
            raise TypeError(f"program input {info.name!r} must be a floating tensor, got {xt.dtype}")
        codes = quantize(xt, scale=info.scale, zero_point=info.zero_point, bits=info.bits, signed=info.signed,
                         datapath=self.datapath)  # fmt: skip
        out: Codes = codes.numpy().astype(info.dtype)
        return out

    def dequantize(self, y: Codes, index: int = 0) -> npt.NDArray[np.float32]:
        """``fp32(y - zero_point) * fp32(scale)`` for the codes of the ``index``-th output."""
        return self.dequantize_tensor(y, self.tensors[self.outputs[index]])

    @staticmethod
    def dequantize_tensor(codes: Codes, info: TensorInfo) -> npt.NDArray[np.float32]:
        """``fp32(codes - zero_point) * fp32(scale)`` of the tensor ``info`` (float32, the contract's section 7)."""
        out: npt.NDArray[np.float32] = ((np.asarray(codes).astype(np.int64) - info.zero_point).astype(np.float32)
                                        * np.float32(info.scale))  # fmt: skip
        return out

    def run(self, *xs: Any, backend: str = "torch", trace: bool = False) -> Any:
        """Quantize the float inputs, run the program, return the output codes (a tuple for several);
        with ``trace=True`` also a dict of every tensor's codes by name."""
        if len(xs) != len(self.inputs):
            raise TypeError(f"program takes {len(self.inputs)} input(s), got {len(xs)}")
        codes = [self.quantize_input(x, i) for i, x in enumerate(xs)]
        return self.run_codes(*codes, backend=backend, trace=trace)

    def run_codes(self, *codes: Codes, backend: str = "torch", trace: bool = False) -> Any:
        """Run the program from input codes (NumPy, the inputs' dtypes and shapes)."""
        be: Backend = get_backend(_BACKEND_ALIASES.get(backend, backend))
        if len(codes) != len(self.inputs):
            raise TypeError(f"program takes {len(self.inputs)} input(s), got {len(codes)}")
        values: dict[str, Codes] = {}
        for name, c in zip(self.inputs, codes):
            values[name] = self._checked_input(self.tensors[name], c)
        for node in self.nodes:
            od = op_def(node.op)
            try:
                values[node.output] = od.run(be, node.attrs, [values[t] for t in node.inputs], node.params)
            except (ValueError, TypeError, OverflowError) as err:
                raise type(err)(f"node {node.name!r} ({node.op}): {err}") from err
        outs = tuple(values[n] for n in self.outputs)
        result: Any = outs[0] if len(outs) == 1 else outs
        return (result, values) if trace else result

    @staticmethod
    def _checked_input(info: TensorInfo, c: Any) -> Codes:
        if not isinstance(c, np.ndarray):
            raise TypeError(f"program input {info.name!r} must be a numpy.ndarray of codes, got {type(c).__name__}")
        if c.dtype != info.dtype:
            raise TypeError(f"program input {info.name!r} must have dtype {np.dtype(info.dtype)}, got {c.dtype}")
        want = info.shape
        if c.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, c.shape)):
            dims = ", ".join("N" if d is None else str(d) for d in want)
            raise ValueError(f"program input {info.name!r} must have shape ({dims}), got {c.shape}")
        return np.ascontiguousarray(c)

    # ------------------------------------------------------------------ files
    def to_json(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """The JSON description and the arrays it refers to by key."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        nodes = []
        for i, node in enumerate(self.nodes):
            params: dict[str, Any] = {}
            for key, p in node.params.items():
                ref = f"n{i}.{key}"
                if isinstance(p, PackedTensor):
                    arrays[ref] = p.data
                    params[key] = {"array": ref, "packed_bits": p.bits, "signed": p.signed, "shape": list(p.shape)}
                else:
                    arrays[ref] = np.asarray(p)
                    params[key] = {"array": ref}
            nodes.append({"name": node.name, "op": node.op, "inputs": list(node.inputs), "output": node.output,
                          "attrs": node.attrs.build_args(), "params": params})  # fmt: skip
        doc = {
            "format": "lowbit-quant IntegerProgram",
            "version": FORMAT_VERSION,
            "datapath": self.datapath.as_dict(),
            "tensors": [t.to_json() for t in self.tensors.values()],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "origins": self.origins,
            "nodes": nodes,
        }
        return doc, arrays

    def digest(self) -> str:
        """SHA-256 (hex) of the program's canonical content: its sorted JSON description and every array's
        key, dtype, shape and bytes. Equal programs (a saved and loaded one included) have equal digests;
        the exporters write it into their provenance."""
        doc, arrays = self.to_json()
        h = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8"))
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{key}:{a.dtype.str}:{list(a.shape)}:".encode("utf-8"))
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, path: Union[str, Path]) -> None:
        """Write the program to one ``.npz`` file (JSON description + arrays, no pickle)."""
        doc, arrays = self.to_json()
        text = json.dumps(doc, sort_keys=True)
        arrays["program.json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # (numpy stubs type **kwds as allow_pickle)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "IntegerProgram":
        """Read a program written by :meth:`save`; every record is rebuilt and so validated again."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a saved IntegerProgram ({err})") from None
        if "program.json" not in arrays:
            raise ValueError(f"{path}: not a saved IntegerProgram (no program.json)")
        doc = json.loads(arrays.pop("program.json").tobytes().decode("utf-8"))
        return cls.from_json(doc, arrays, source=str(path))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], arrays: Mapping[str, Any], *, source: str = "program") -> "IntegerProgram":
        """The inverse of :meth:`to_json`, with every record built anew from its arguments."""
        if doc.get("format") != "lowbit-quant IntegerProgram":
            raise ValueError(f"{source}: not an IntegerProgram description")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"{source}: format version {doc.get('version')!r}, this release reads {FORMAT_VERSION}")
        datapath = Datapath(**doc["datapath"])
        tensors = {t["name"]: TensorInfo.from_json(t) for t in doc["tensors"]}
        nodes = []
        for nd in doc["nodes"]:
            od = op_def(nd["op"])
            try:
                attrs = od.build(dict(nd["attrs"]), datapath)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: node {nd['name']!r}: {err}") from None
            params: dict[str, Param] = {}
            unknown = set(nd["params"]) - set(od.params)
            if unknown:
                raise ValueError(f"{source}: node {nd['name']!r}: {nd['op']} takes no parameter {sorted(unknown)}")
            for key in (k for k in od.params if k in nd["params"]):
                ref = nd["params"][key]
                if ref["array"] not in arrays:
                    raise ValueError(f"{source}: node {nd['name']!r}: array {ref['array']!r} is missing")
                a = arrays[ref["array"]]
                params[key] = (PackedTensor(a, int(ref["packed_bits"]), bool(ref["signed"]), tuple(ref["shape"]))
                               if "packed_bits" in ref else a)  # fmt: skip
            w = params.get("weight")
            if w is not None and tuple(w.shape) != tuple(attrs.w_shape):
                raise ValueError(f"{source}: node {nd['name']!r}: weight of shape {tuple(w.shape)}, attributes for "
                                 f"{tuple(attrs.w_shape)}")  # fmt: skip
            nodes.append(Node(nd["name"], nd["op"], tuple(nd["inputs"]), nd["output"], attrs, params))
        return cls(datapath, tensors, nodes, doc["inputs"], doc["outputs"], doc.get("origins", {}))
