"""The qdq form runs in ONNX Runtime for every zoo model it can express on every zoo preset, with the program's
output shapes; its agreement with the program is measured (reported as a test property) and high on mlas."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from quant.export.agreement import ZOO_PRESETS, compare_codes, measure, run_onnx
from tests.quant.export.support import ZOO_NAMES, zoo_case, zoo_inputs

EXPRESSIBLE = [n for n in ZOO_NAMES if n != "detector"]


@pytest.mark.parametrize("preset", ZOO_PRESETS)
@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_qdq_runs_in_onnx_runtime_and_agreement_is_measured(name: str, preset: str,
                                                             record_property: Callable[[str, object], None]) -> None:  # fmt: skip
    program, make_input = zoo_case(name, preset)
    x = zoo_inputs(make_input, 16)
    outs = run_onnx(program, x, form="qdq")
    ref = program.run(x)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert len(outs) == 2 * len(refs)
    for got, want in zip(outs, refs):
        assert got.shape == want.shape and got.dtype == want.dtype
    for deq, want in zip(outs[len(refs):], refs):
        assert deq.dtype == np.float32 and deq.shape == want.shape
    total, equal, max_lsb = compare_codes(outs, refs)
    record_property("qdq_equal_codes", f"{equal}/{total}, max {max_lsb} LSB")
    assert total == sum(r.size for r in refs) and 0 <= equal <= total
    if preset in ("mlas", "fbgemm_int8"):  # float32 requantization, as ONNX's float ops: mostly the same codes
        assert equal >= 0.75 * total and max_lsb <= 2, (equal, total, max_lsb)


def test_the_dequantized_outputs_are_the_output_codes_dequantized() -> None:
    program, make_input = zoo_case("inverted_residual", "w4a8_acc32")
    x = zoo_inputs(make_input, 16)
    codes, deq = run_onnx(program, x, form="qdq")
    assert np.array_equal(deq, program.dequantize(codes))


def test_a_lookup_table_is_exact_in_the_qdq_form() -> None:
    """A lut is a Gather of the dequantized table: ONNX Runtime's codes of a table's output equal the program's."""
    program, make_input = zoo_case("activations", "tflite_int8")
    x = zoo_inputs(make_input, 64)
    row = measure(program, x, form="qdq")
    assert row.equal > 0.95
