"""Sub-byte packing (docs §3): round trips, the byte layout of ONNX int4/int2, and ONNX Runtime reading it."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from quant import Datapath
from quant.contract.codes import packed_row_bytes
from quant.reference.packing import pack, unpack
from quant.reference import quantize
from tests.edge_values import code_limits
from tests.oracles.exact import assert_exact

ONNX_TYPES = {(4, True): TensorProto.INT4, (4, False): TensorProto.UINT4,
              (2, True): TensorProto.INT2, (2, False): TensorProto.UINT2}
OPSET = {4: 21, 2: 25}


def _codes(data: st.DataObject, shape: tuple[int, ...], bits: int, signed: bool) -> torch.Tensor:
    lo, hi = code_limits(bits, signed)
    pool = [c for c in range(lo, hi + 1) if not (bits == 1 and signed and c == 0)]
    n = int(np.prod(shape))
    return torch.tensor(data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)), dtype=torch.int64).reshape(shape)


@given(bits=st.integers(1, 8), signed=st.booleans(), rows=st.integers(1, 4), n=st.integers(1, 33), data=st.data())
def test_round_trip_and_sizes(bits: int, signed: bool, rows: int, n: int, data: st.DataObject) -> None:
    codes = _codes(data, (rows, n), bits, signed)
    packed = pack(codes, bits, signed=signed)
    assert packed.dtype == torch.uint8
    assert tuple(packed.shape) == (rows, packed_row_bytes(n, bits))
    assert packed_row_bytes(n, bits) == ((n * bits + 7) // 8 if bits in (1, 2, 4) else n)
    out = unpack(packed, bits, (rows, n), signed=signed)
    assert out.dtype == (torch.uint8 if (bits == 8 and not signed) else torch.int8)
    assert_exact(out, codes, f"round trip bits={bits} signed={signed}")
    if bits in (1, 2, 4) and n * bits % 8:
        used = n * bits % 8  # padding bits of the last byte of every row are zero
        assert int((packed[:, -1].to(torch.int64) >> used).abs().sum()) == 0


@given(bits=st.sampled_from([2, 4]), signed=st.booleans(), n=st.integers(1, 40), data=st.data())
def test_layout_equals_onnx_make_tensor(bits: int, signed: bool, n: int, data: st.DataObject) -> None:
    codes = _codes(data, (n,), bits, signed)
    tensor = helper.make_tensor("t", ONNX_TYPES[(bits, signed)], [n], codes.tolist(), raw=False)
    onnx_bytes = bytes(tensor.int32_data)  # ONNX keeps one packed byte per int32_data entry
    ours = pack(codes, bits).numpy().tobytes()
    assert ours == onnx_bytes, f"packed bytes differ: ours {ours.hex()} onnx {onnx_bytes.hex()}"
    if bits == 4:  # numpy_helper's raw form of the same tensor
        assert numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data == ours


def _session(nodes: list[Any], inits: list[Any], inputs: list[Any], outputs: list[Any], opset: int) -> ort.InferenceSession:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


@settings(max_examples=20)
@given(bits=st.sampled_from([2, 4]), signed=st.booleans(), rows=st.integers(1, 3), n=st.integers(1, 12), data=st.data())
def test_onnxruntime_dequantize_reads_our_bytes(bits: int, signed: bool, rows: int, n: int, data: st.DataObject) -> None:
    """Rows are packed whole; a tensor whose rows fill whole bytes is the same bytes as ONNX's flat packing."""
    n = n * (8 // bits)  # whole bytes per row, so row padding does not exist
    codes = _codes(data, (rows, n), bits, signed)
    raw = pack(codes, bits).numpy().tobytes()
    w = helper.make_tensor("w", ONNX_TYPES[(bits, signed)], [rows, n], raw, raw=True)
    s = numpy_helper.from_array(np.array(1.0, np.float32), "s")
    node = helper.make_node("DequantizeLinear", ["w", "s"], ["y"])
    sess = _session([node], [w, s], [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], OPSET[bits])
    y = sess.run(None, {})[0]
    assert_exact(torch.from_numpy(y.astype(np.int64)), codes, f"ORT DequantizeLinear int{bits}")


@settings(max_examples=20)
@given(bits=st.sampled_from([2, 4]), signed=st.booleans(),
       x=st.lists(st.floats(-20, 20, width=32) | st.sampled_from([0.5, 1.5, -2.5, 3.5]), min_size=1, max_size=24),
       scale=st.sampled_from([1.0, 0.5, 0.3, 1.7, 0.0625]), data=st.data())
def test_onnxruntime_quantize_int4_int2(bits: int, signed: bool, x: list[float], scale: float, data: st.DataObject) -> None:
    """ORT QuantizeLinear to int4/int2 (Cast to INT8 at the output) equals quantize on the mlas preset."""
    lo, hi = code_limits(bits, signed)
    z = data.draw(st.integers(lo, hi))
    xs = np.array(x, np.float32)
    ttype = ONNX_TYPES[(bits, signed)]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), helper.make_tensor("z", ttype, [], [z])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("Cast", ["q"], ["y"], to=TensorProto.INT8)]
    sess = _session(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
                    [helper.make_tensor_value_info("y", TensorProto.INT8, [len(x)])], OPSET[bits])
    y = torch.from_numpy(sess.run(None, {"x": xs})[0].astype(np.int64))
    ours = quantize(torch.from_numpy(xs), scale=scale, zero_point=z, bits=bits, signed=signed, datapath=Datapath.preset("mlas"))
    assert_exact(ours, y, f"quantize int{bits} vs ORT")


def test_pack_errors() -> None:
    with pytest.raises(ValueError, match="do not fit 4 bits"):
        pack(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match="range"):
        pack(torch.tensor([8]), 4, signed=True)
    with pytest.raises(ValueError, match="mix -1 and 0"):
        pack(torch.tensor([-1, 0]), 1)
    with pytest.raises(TypeError, match="integer"):
        pack(torch.tensor([1.0]), 4)
    with pytest.raises(ValueError, match="bits"):
        pack(torch.tensor([1]), 9)
    with pytest.raises(ValueError, match="expected"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, (7,))
    with pytest.raises(TypeError, match="uint8"):
        unpack(torch.zeros(4, dtype=torch.int8), 4, (7,))
