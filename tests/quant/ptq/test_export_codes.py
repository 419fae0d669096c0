"""The exporters carry the codes a post-training algorithm chose: after ``quant.ptq.adaround`` or ``gptq`` on the
digits CNN (W4 per-channel weights, uint8 activations), ``quant.lower`` gives a program whose weight codes are
each layer's ``Quantizer.codes()`` (code offsets included) and differ from round-to-nearest, and the ONNX models
(QDQ and QOperator forms, their weight initializers read back with ``onnx.numpy_helper``) and the standalone C
folder (its ``static const`` weight arrays, and its own ``make test`` reproducing the program's output codes)
hold exactly those codes."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import kernels
import quant
from quant.contract.datapath import Datapath
from quant.ir.program import IntegerProgram
from quant.ptq import adaround, gptq
from quant.sim.fast import original_parameter
from tests.kernels.export.test_export_c import build_and_run
from tests.quant.ptq.support import calibrated, digits_cnn, program_weight_codes

#: ONNX Runtime's arithmetic (both ONNX forms take it): uint8 activations, int8 weight operands holding the 4-bit
#: codes as they are (unpacked).
DATAPATH = "mlas"
WEIGHT_OPS = ("conv2d", "linear")

Case = tuple[IntegerProgram, dict[str, np.ndarray], dict[str, np.ndarray]]


@pytest.fixture(scope="module", params=["adaround", "gptq"])
def case(request: pytest.FixtureRequest) -> Case:
    """``(program after the algorithm, its weight codes by node, the nearest program's weight codes by node)``,
    after checking that each weight node's codes are its layer's ``Quantizer.codes()``."""
    float_model, x, _, _ = digits_cnn()
    model = copy.deepcopy(float_model)
    handle = calibrated(model, x, 4)
    dp = Datapath.preset(DATAPATH)
    nearest = program_weight_codes(quant.lower(model, handle, x[:1], datapath=dp))
    batches = [x[i : i + 128] for i in range(0, 256, 128)]
    if request.param == "adaround":
        adaround(model, handle, batches, iterations=60, progress=False)
    else:
        gptq(model, handle, batches, progress=False)
    program = quant.lower(model, handle, x[:1], datapath=dp)
    chosen = program_weight_codes(program)
    weight_nodes = [n.name for n in program.nodes if n.op in WEIGHT_OPS]
    layers = list(handle.modules.items())
    assert len(weight_nodes) == len(layers)
    for node, (name, module) in zip(weight_nodes, layers):  # both in the model's order
        codes = handle.quantizer(name, "weight").codes(original_parameter(module)).numpy()
        assert handle.quantizer(name, "weight").has_code_offsets, name
        assert chosen[node].shape == codes.shape and np.array_equal(chosen[node], codes), (node, name)
    return program, chosen, nearest


def test_the_program_holds_codes_other_than_nearest(case: Case) -> None:
    _, chosen, nearest = case
    assert chosen.keys() == nearest.keys()
    moved = {k: int((chosen[k] != nearest[k]).sum()) for k in chosen}
    assert any(moved.values()), moved


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_the_onnx_weight_initializers_are_the_chosen_codes(case: Case, form: str, tmp_path: Path) -> None:
    program, chosen, nearest = case
    path = tmp_path / f"digits-{form}.onnx"
    quant.export_onnx(program, path, form=form)
    initializers = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    for node in program.nodes:
        if node.op not in WEIGHT_OPS:
            continue
        stored = initializers[f"{node.name}/weight"].astype(np.int64)
        codes = chosen[node.name]
        if form == "qdq" and node.op == "linear" and stored.shape != codes.shape:
            codes = codes.T  # the QDQ form's MatMul (inputs of rank > 2) takes (K, N); its Gemm (N, K)
        assert stored.shape == codes.shape and np.array_equal(stored, codes), node.name
    # and it is not the nearest program's export
    assert any(not np.array_equal(chosen[k], nearest[k]) for k in chosen)


def _c_arrays(source: str) -> dict[str, np.ndarray]:
    """The ``static const intN_t name[len] = {...};`` arrays of a generated C file, by name."""
    out: dict[str, np.ndarray] = {}
    for m in re.finditer(r"static const u?int\d+_t (\w+)\[(\d+)\] = \{(.*?)\};", source, re.S):
        values = np.array([int(v) for v in m.group(3).replace("\n", " ").split(",") if v.strip()], dtype=np.int64)
        assert values.size == int(m.group(2)), m.group(1)
        out[m.group(1)] = values
    return out


def test_the_standalone_c_weights_are_the_chosen_codes_and_reproduce_the_program(case: Case, tmp_path: Path) -> None:
    program, chosen, _ = case
    _, x, _, _ = digits_cnn()
    folder = tmp_path / "digits_c"
    kernels.export_c(program, folder, x[:8].numpy(), name="digits", quiet=True)
    arrays = _c_arrays((folder / "digits.c").read_text())
    for i, node in enumerate(program.nodes):
        if node.op in WEIGHT_OPS:
            stored: Any = arrays[f"digits__n{i}_w"]
            assert np.array_equal(stored, chosen[node.name].reshape(-1)), node.name
    done = build_and_run(folder, tmp_path)  # the folder's test compares every output code with the program's run
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
