"""import_onnx: a qoperator file of export_onnx comes back as the same program (equal digest, same printout,
same codes); a file of ONNX Runtime's static quantizer (QOperator format) becomes a program on mlas that computes
what ONNX Runtime computes; files outside the subset, and metadata that contradicts its graph, are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import helper, numpy_helper

import quant
from quant.export.agreement import ort_session
from quant.export.onnx_export import export_onnx, onnx_model
from quant.export.onnx_format import KNOBS_KEY, NODES_KEY
from quant.export.onnx_import import import_onnx, program_from_model
from quant.ir.program import IntegerProgram
from tests.quant.export.support import (
    QOPERATOR_REFUSED,
    ZOO_NAMES,
    conv_programs,
    elementwise_programs,
    layout_programs,
    linear_programs,
    onnx_float_model,
    pool_programs,
    softmax_programs,
    zoo_case,
    zoo_inputs,
)


def _round_trip(program: IntegerProgram, path: Path) -> IntegerProgram:
    export_onnx(program, path, form="qoperator")
    return import_onnx(path)


@pytest.mark.parametrize("name", [n for n in ZOO_NAMES if n not in QOPERATOR_REFUSED])
def test_zoo_round_trip_gives_the_same_program(name: str, tmp_path: Path) -> None:
    program, make_input = zoo_case(name, "mlas")
    back = _round_trip(program, tmp_path / f"{name}.onnx")
    assert str(back) == str(program)
    assert back.digest() == program.digest()
    assert back.origins == program.origins and back.datapath == program.datapath
    x = zoo_inputs(make_input, 16)
    assert np.array_equal(back.run(x), program.run(x))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=st.one_of(conv_programs(), linear_programs(), elementwise_programs(), softmax_programs(), pool_programs(),
                         layout_programs()))
def test_random_one_node_programs_round_trip(program: IntegerProgram, tmp_path: Path) -> None:
    back = program_from_model(onnx_model(program, form="qoperator"))
    assert back.digest() == program.digest(), f"{program}\n---\n{back}"


# ---------------------------------------------------------------------- files of ONNX Runtime's quantizer
def _init(rng: np.random.Generator, name: str, shape: list[int], scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _float_cnn(residual: bool, side: int) -> onnx.ModelProto:
    """On ``side x side`` images: conv-ReLU, max pool, conv-ReLU (plus the pooled input when ``residual``), global
    average pool, flatten, Gemm."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
    ]
    last = "r2"
    if residual:
        nodes.append(helper.make_node("Add", ["r2", "p1"], ["a"]))
        last = "a"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"]), helper.make_node("Flatten", ["g"], ["f"], axis=1),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]  # fmt: skip
    inits = [_init(rng, "w1", [8, 3, 3, 3]), _init(rng, "b1", [8]), _init(rng, "w2", [8, 8, 3, 3], 0.1),
             _init(rng, "b2", [8]), _init(rng, "w3", [10, 8]), _init(rng, "b3", [10])]  # fmt: skip
    return onnx_float_model(nodes, inits, ["N", 3, side, side], ["N", 10])


def _float_tokens() -> onnx.ModelProto:
    """MatMul of (N, 6, 8) tokens by an (8, 5) weight, transposed and reshaped."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]  # fmt: skip
    inits = [_init(rng, "w", [8, 5]), numpy_helper.from_array(np.array([-1, 30], np.int64), "shape")]
    return onnx_float_model(nodes, inits, ["N", 6, 8], ["N", 30])


class _Reader:
    """Calibration batches for quantize_static."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(2)
        self._batches = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> Any:
        return next(self._batches, None)


def _quantized(tmp: Path, float_model: onnx.ModelProto, shape: tuple[int, ...], activation: str, per_channel: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, dst = tmp / "float.onnx", tmp / f"quantized_{activation}_{per_channel}.onnx"
    onnx.save(float_model, src)
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(shape)
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QOperator, per_channel=per_channel,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8)  # fmt: skip
    return dst


#: (case, with a residual add, side of the global pool's plane): 4 x 4 = 16 positions, or 6 x 6 = 36.
ORT_CASES = [("cnn", False, 4), ("cnn_plane_36", False, 6), ("residual", True, 4)]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("activation, per_channel", [("QUInt8", False), ("QInt8", True)])
@pytest.mark.parametrize("case, residual, plane", ORT_CASES)
def test_onnx_runtime_quantizer_files_import_to_what_onnx_runtime_computes(tmp_path: Path, case: str, residual: bool,
                                                                          plane: int, activation: str,
                                                                          per_channel: bool) -> None:  # fmt: skip
    shape = (4, 3, 2 * plane, 2 * plane)
    path = _quantized(tmp_path, _float_cnn(residual, 2 * plane), shape, activation, per_channel)
    program = import_onnx(path)
    assert program.datapath.name == ("mlas" if activation == "QUInt8" else "mlas_s8")
    ops = [n.op for n in program.nodes]
    assert ops[:2] == ["conv2d", "max_pool2d"] and ops[-2:] == ["reshape", "linear"]
    # the quantizer gives the global pool its own output qparams: ONNX Runtime's factor, as a conv of ones
    assert ops[-3] == "conv2d" and program.nodes[-3].attrs.groups == 8
    assert program.nodes[-3].attrs.w_shape == (8, 1, plane, plane)
    x = np.random.default_rng(3).standard_normal((128, *shape[1:])).astype(np.float32)
    expected = ort_session(path.read_bytes()).run(None, {"x": x})[0]
    got = program.dequantize(program.run(x))
    equal = float(np.mean(got == expected))
    if residual:  # QLinearAdd's kernel fuses multiply-adds: a code may differ at a rounding boundary
        assert equal >= 0.999, equal
    else:
        assert equal == 1.0, f"{case}: {equal}"


@pytest.mark.filterwarnings("ignore")
def test_qlinear_matmul_of_tokens_imports_to_one_linear(tmp_path: Path) -> None:
    path = _quantized(tmp_path, _float_tokens(), (4, 6, 8), "QUInt8", True)
    program = import_onnx(path)
    assert [n.op for n in program.nodes] == ["linear", "permute", "reshape"]
    assert program.tensors[program.nodes[0].output].shape == (None, 6, 5)
    x = np.random.default_rng(4).standard_normal((64, 6, 8)).astype(np.float32)
    expected = ort_session(path.read_bytes()).run(None, {"x": x})[0]
    assert np.array_equal(program.dequantize(program.run(x)), expected)


# ---------------------------------------------------------------------- refusals
def test_a_float_model_is_refused_naming_its_first_op(tmp_path: Path) -> None:
    path = tmp_path / "float.onnx"
    onnx.save(_float_cnn(False, 8), path)
    with pytest.raises(ValueError, match=r"node \(Conv\): Conv is outside the qoperator subset import_onnx reads"):
        import_onnx(path)


@pytest.mark.filterwarnings("ignore")
def test_an_unsupported_contrib_op_is_refused_by_name(tmp_path: Path) -> None:
    model = onnx.load(_quantized(tmp_path, _float_cnn(False, 8), (4, 3, 8, 8), "QUInt8", False))
    gap = next(n for n in model.graph.node if n.op_type == "QLinearGlobalAveragePool")
    gap.op_type = "QLinearSigmoid"
    with pytest.raises(ValueError, match=r"com\.microsoft\.QLinearSigmoid is outside the qoperator subset"):
        program_from_model(model)


def test_a_qdq_file_is_refused(tmp_path: Path) -> None:
    program, _ = zoo_case("mlp", "mlas")
    export_onnx(program, tmp_path / "mlp.onnx", form="qdq")
    with pytest.raises(ValueError, match=r"a qdq file; .* only the qoperator form is imported"):
        import_onnx(tmp_path / "mlp.onnx")


def test_metadata_that_contradicts_the_graph_is_refused() -> None:
    program, _ = zoo_case("mlp", "mlas")
    model = onnx_model(program, form="qoperator")
    props = {p.key: p for p in model.metadata_props}
    nodes = json.loads(props[NODES_KEY].value)
    first = program.nodes[0].name
    nodes[first]["args"]["multiplier"] = [2 * m for m in nodes[first]["args"]["multiplier"]]
    props[NODES_KEY].value = json.dumps(nodes)
    with pytest.raises(ValueError, match=rf"the metadata's multiplier=.* of node '{first}' contradicts the graph's"):
        program_from_model(model)
    knobs = json.loads(props[KNOBS_KEY].value)
    props[KNOBS_KEY].value = json.dumps({**knobs, "requant": "float64"})
    with pytest.raises(ValueError, match=r"the metadata's datapath 'mlas' is not what a qoperator graph computes: requant='float64'"):
        program_from_model(model)


def test_files_that_are_not_onnx_are_refused_naming_them(tmp_path: Path) -> None:
    (tmp_path / "noise.onnx").write_bytes(b"\x07not a model")
    with pytest.raises(ValueError, match=r"noise\.onnx"):
        import_onnx(tmp_path / "noise.onnx")
    with pytest.raises(ValueError, match=r"cannot read .*missing\.onnx"):
        import_onnx(tmp_path / "missing.onnx")


def test_public_names(tmp_path: Path) -> None:
    program, make_input = zoo_case("mlp", "mlas")
    quant.export_onnx(program, tmp_path / "mlp.onnx", form="qoperator")
    back = quant.import_onnx(tmp_path / "mlp.onnx")
    assert back.digest() == program.digest()
    x = torch.randn(4, 20)
    assert np.array_equal(back.run(x), program.run(x))
