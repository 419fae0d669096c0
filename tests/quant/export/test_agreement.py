"""quant.export.agreement: measurements and the table of docs/onnx.md; experiments.onnx_agreement, the command that prints it."""

from __future__ import annotations

import pytest

from experiments.onnx_agreement import main
from quant.export.agreement import Agreement, agreement_table, measure
from tests.quant.export.support import zoo_case, zoo_inputs


def test_measure_counts_equal_codes_and_names_refusals() -> None:
    program, make_input = zoo_case("mlp", "mlas")
    x = zoo_inputs(make_input, 16)
    exact = measure(program, x, form="qoperator", model="mlp")
    assert (exact.equal, exact.max_lsb, exact.codes, exact.cell()) == (1.0, 0, 16 * 4, "100.0% (0)")
    tflite, make_input = zoo_case("mlp", "tflite_int8")
    refused = measure(tflite, zoo_inputs(make_input, 4), form="qoperator")
    assert refused.cell() == "-" and refused.refused is not None and "requant='fixed_point'" in refused.refused


def test_the_table_has_one_line_per_model_and_preset() -> None:
    rows = [Agreement("m", "mlas", "qdq", "basic", 3, 10, 0.9, 1), Agreement("m", "mlas", "qdq", "all", 3, failed="boom"),
            Agreement("m", "mlas", "qoperator", "basic", 3, 10, 1.0, 0), Agreement("n", "w2", "qdq", "basic", 5, refused="no")]  # fmt: skip
    lines = agreement_table(rows).splitlines()
    assert lines[2:] == ["| m | mlas | 3 | 90.0% (1) | ORT fails | 100.0% (0) |", "| n | w2 | 5 | - | - | - |"]


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--models", "mlp,detector", "--presets", "mlas", "--samples", "8"])
    out = capsys.readouterr().out
    assert "| mlp | mlas | 3 | 100.0% (0) | 100.0% (0) | 100.0% (0) |" in out
    assert "| detector | mlas | 9 | - | - | - |" in out
    assert "node 'nms' (detection.nms) cannot be expressed" in out
