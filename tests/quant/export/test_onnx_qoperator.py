"""The qoperator form in ONNX Runtime (CPU, ORT_ENABLE_BASIC) computes every tensor of a program on the mlas
datapath exactly as the program does: the zoo, and one-node programs of random shapes and parameters; and it
refuses what it cannot express, naming the node, the op and the form."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from quant.contract.datapath import PRESETS
from quant.export.onnx_export import onnx_model
from quant.ir.program import IntegerProgram
from tests.quant.export.support import (
    QOPERATOR_REFUSED,
    ZOO_NAMES,
    assert_codes_equal,
    conv_programs,
    elementwise_programs,
    float_inputs,
    layout_programs,
    linear_programs,
    needs_exact_int8_sums,
    pool_programs,
    random_codes,
    run_every_tensor,
    softmax_programs,
    zoo_case,
    zoo_inputs,
)

EXPRESSIBLE = [n for n in ZOO_NAMES if n not in QOPERATOR_REFUSED]


@pytest.fixture(scope="module")
def mlas_zoo() -> dict[str, tuple[IntegerProgram, Any]]:
    return {name: zoo_case(name, "mlas") for name in ZOO_NAMES}


@needs_exact_int8_sums
@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_zoo_on_mlas_is_bit_exact_in_onnx_runtime(mlas_zoo: dict[str, tuple[IntegerProgram, Any]], name: str) -> None:
    program, make_input = mlas_zoo[name]
    x = zoo_inputs(make_input)
    outs = run_every_tensor(program, x)
    _, trace = program.run(x, trace=True)
    assert_codes_equal(program, outs, trace, f"{name} on mlas, qoperator form")
    codes = program.run(x)
    assert np.array_equal(outs[f"{program.outputs[0]}_dequantized"], program.dequantize(codes))
    assert trace[program.inputs[0]].min() == 0 and trace[program.inputs[0]].max() == 255  # the whole uint8 range


@pytest.mark.parametrize("name", sorted(QOPERATOR_REFUSED))
def test_zoo_models_the_form_cannot_express_are_refused_naming_the_op(mlas_zoo: dict[str, tuple[IntegerProgram, Any]],
                                                                       name: str) -> None:  # fmt: skip
    program, _ = mlas_zoo[name]
    op = QOPERATOR_REFUSED[name]
    node = next(n.name for n in program.nodes if n.op == op)
    with pytest.raises(ValueError, match=rf"export_onnx\(form='qoperator'\): node '{node}' \({op}\) cannot be expressed"):
        onnx_model(program, form="qoperator")


@pytest.mark.parametrize("preset, knob", [("tflite_int8", "requant='fixed_point'"), ("fbgemm_int8", "quantize_mode='reciprocal_fma'"),
                                          ("onnx_ref", "zero_point_order='before_rounding'"), ("w4a8_acc32", "w_bits=4"),
                                          ("w4a4_acc16_sat", "acc_bits=16"), ("w2a2_pow2_acc16", "requant='pow2'")])  # fmt: skip
def test_other_datapaths_are_refused_naming_the_knobs(preset: str, knob: str) -> None:
    program, _ = zoo_case("mlp", preset) if preset != "onnx_ref" else (_on(zoo_case("mlp", "mlas")[0], "onnx_ref"), None)
    with pytest.raises(ValueError, match=rf"datapath '{preset}' is not ONNX Runtime's arithmetic .*{knob}"):
        onnx_model(program, form="qoperator")


def _on(program: IntegerProgram, preset: str) -> IntegerProgram:
    """``program`` rebuilt on another datapath (its records built anew from their arguments)."""
    doc, arrays = program.to_json()
    return IntegerProgram.from_json({**doc, "datapath": PRESETS[preset].as_dict()}, arrays)


def _check_one_node(program: IntegerProgram, seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = [random_codes(program.tensors[name], 3, rng) for name in program.inputs]
    xs = float_inputs(program, codes)
    outs = run_every_tensor(program, *xs)
    _, trace = program.run_codes(*codes, trace=True)
    assert_codes_equal(program, outs, trace, f"{program.nodes[0].op} on {program.datapath.name}")


@needs_exact_int8_sums
@settings(max_examples=40)
@given(program=conv_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_conv2d_is_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


@needs_exact_int8_sums
@settings(max_examples=30)
@given(program=linear_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_linear_is_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


@settings(max_examples=40)
@given(program=elementwise_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_requantize_add_mul_lut_are_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


@settings(max_examples=30)
@given(program=softmax_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_softmax_is_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


@settings(max_examples=40)
@given(program=pool_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_pools_are_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


@settings(max_examples=25)
@given(program=layout_programs(), seed=st.integers(0, 2**32 - 1))
def test_random_layout_ops_are_bit_exact(program: IntegerProgram, seed: int) -> None:
    _check_one_node(program, seed)


def test_the_softmax_of_the_attention_model_is_one_int64_chain(mlas_zoo: dict[str, tuple[IntegerProgram, Any]]) -> None:
    program, _ = mlas_zoo["attention"]
    ops = [n.op_type for n in onnx_model(program, form="qoperator").graph.node if n.name.startswith("softmax")]
    assert ops == ["Cast", "ReduceMax", "Sub", "Gather", "ReduceSum", "Mul", "Cast", "Cast", "Div", "Round", "Cast",
                   "Add", "Clip", "Cast"]  # fmt: skip


def test_global_average_uses_the_ms_kernel_only_where_it_is_exact(mlas_zoo: dict[str, tuple[IntegerProgram, Any]]) -> None:
    program, _ = mlas_zoo["inverted_residual"]  # a global pool over 8 x 8 = 64 positions
    ops = [(n.op_type, n.domain) for n in onnx_model(program, form="qoperator").graph.node]
    assert ("QLinearGlobalAveragePool", "com.microsoft") in ops and ("QGemm", "com.microsoft") in ops
    assert {d for _, d in ops} == {"", "com.microsoft"}


def test_a_tensor_of_other_than_8_bit_codes_is_refused() -> None:
    program = _on(zoo_case("mlp", "mlas")[0], "mlas")
    doc, arrays = program.to_json()
    doc["tensors"] = [{**t, "bits": 7} if t["name"] == "relu" else t for t in doc["tensors"]]
    with pytest.raises(ValueError, match=r"tensor 'relu' has 7-bit codes; the qoperator form holds 8-bit codes"):
        onnx_model(IntegerProgram.from_json(doc, arrays), form="qoperator")


def test_inputs_are_the_whole_float_batch() -> None:
    program, make_input = zoo_case("mlp", "mlas")
    x = torch.randn(1, 20)
    outs = run_every_tensor(program, x)
    assert outs[program.outputs[0]].shape == (1, 4)
