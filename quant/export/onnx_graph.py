"""``GraphBuilder``: the nodes, initializers and value infos of one ONNX graph, named deterministically.

Every name is derived from the program's own names (a helper tensor of node ``conv`` is ``conv/<role>``)
and taken in the order the graph is built, so the same program always gives the same graph, byte for
byte. Tensor names and node names are two namespaces; a name already taken gets ``_1``, ``_2``, ...

>>> g = GraphBuilder(reserved=["x"])
>>> g.fresh("x"), g.fresh("x"), g.constant("one", np.float32(1.0)), g.shared_constant("unit", np.float32(1.0))
('x_1', 'x_2', 'one', 'unit')
>>> g.shared_constant("other", np.float32(1.0)), [t.name for t in g.initializers]
('unit', ['one', 'unit'])
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from quant.export.onnx_format import code_elem_type

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """Accumulates one graph's nodes (in execution order), initializers and value infos."""

    def __init__(self, reserved: Iterable[str] = (), opset: int = 21) -> None:
        self.opset = opset  # of the default domain, which the model-local functions' bodies use too
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_infos: list[onnx.ValueInfoProto] = []
        self._tensor_names: set[str] = set(reserved)
        self._node_names: set[str] = set()
        self._shared: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}

    @staticmethod
    def _unique(base: str, taken: set[str]) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    def fresh(self, base: str) -> str:
        """A tensor name not taken yet: ``base``, else ``base_1``, ``base_2``, ..."""
        return self._unique(base, self._tensor_names)

    def constant(self, base: str, value: npt.ArrayLike) -> str:
        """A new initializer holding ``value`` (a NumPy array or scalar, its dtype kept); returns its name."""
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def shared_constant(self, base: str, value: npt.ArrayLike) -> str:
        """An initializer holding ``value``, shared by every caller asking for the same dtype, shape and bytes."""
        a = np.ascontiguousarray(np.asarray(value))
        key = (a.dtype.str, tuple(a.shape), a.tobytes())
        if key not in self._shared:
            self._shared[key] = self.constant(base, a)
        return self._shared[key]

    def codes_constant(self, base: str, codes: npt.ArrayLike, bits: int, signed: bool) -> str:
        """An initializer of ``bits``-wide codes in their own ONNX type (int8/uint8, int4/uint4, int2/uint2;
        ONNX packs 4- and 2-bit codes over the whole tensor, first element in the low bits)."""
        elem = code_elem_type(bits, signed)
        if elem is None:
            raise ValueError(f"{base}: ONNX has no element type for {bits}-bit codes")
        a = np.asarray(codes).astype(np.int64)
        name = self.fresh(base)
        if bits == 8:
            self.initializers.append(numpy_helper.from_array(a.astype(np.int8 if signed else np.uint8), name))
        else:
            self.initializers.append(helper.make_tensor(name, elem, list(a.shape), a.reshape(-1).tolist()))
        return name

    def node(
        self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], *, name: str, domain: str = "",
        **attributes: Any,
    ) -> None:  # fmt: skip
        """Append one node (``""`` for an omitted optional input); ``name`` is made unique among node names."""
        node_name = self._unique(name, self._node_names)
        attrs = {k: v for k, v in attributes.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=node_name,
                                           domain=domain or None, **attrs))  # fmt: skip

    def batch_constant(self, base: str, codes: npt.NDArray[Any], like: str, out: str) -> None:
        """``out`` = ``codes`` (an initializer of shape ``(1, *shape)``) for every sample of ``like``'s batch:
        ``Expand`` to ``Concat(Shape(like)[0:1], shape)``."""
        init = self.constant(f"{base}/codes", codes.reshape(1, *codes.shape))
        batch = self.fresh(f"{base}/batch")
        self.node("Shape", [like], [batch], name=f"{base}/batch", start=0, end=1)
        shape = self.fresh(f"{base}/shape")
        self.node("Concat", [batch, self.constant(f"{base}/sample_shape", np.array(codes.shape, np.int64))], [shape],
                  name=f"{base}/shape", axis=0)  # fmt: skip
        self.node("Expand", [init, shape], [out], name=base)

    def function(self, make: Callable[[int], onnx.FunctionProto]) -> None:
        """Make the model-local function ``make(opset)`` part of the model (once per domain and name)."""
        fn = make(self.opset)
        self.functions.setdefault((fn.domain, fn.name), fn)

    def value_info(self, name: str, elem_type: int, shape: Sequence[Optional[int]]) -> onnx.ValueInfoProto:
        """A value info of ``shape`` (``None`` is the batch dimension ``N``)."""
        return helper.make_tensor_value_info(name, elem_type, ["N" if d is None else int(d) for d in shape])
