"""verify(): zero-tolerance comparison of the backends op by op, the first divergence named with its
element and values, fast simulation against the datapath, streaming over batches, the report's forms."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import pytest
import torch

import quant
from experiments.models.small import MLP
from quant.contract.attrs import LinearAttrs
from quant.contract.backend import _REGISTERED, get_backend
from quant.contract.datapath import PRESETS
from quant.lowering import lower
from tests.quant.lowering.test_lowering import calibrated


class OffByOneLinear:
    """The torch reference, except that the second linear adds 1 to output element (0, 3)."""

    name = "off_by_one"

    def __init__(self) -> None:
        self.ref = get_backend("torch_ref")
        self.calls = 0

    def __getattr__(self, op: str) -> Any:
        return getattr(self.ref, op)

    def linear(self, attrs: LinearAttrs, x: np.ndarray, w: Any, bias: Optional[np.ndarray]) -> np.ndarray:
        y = self.ref.linear(attrs, x, w, bias)
        self.calls += 1
        if self.calls % 3 == 2:
            y = y.copy()
            y[0, 3] = y[0, 3] + 1 if y[0, 3] < attrs.output.hi else y[0, 3] - 1
        return y


@pytest.fixture(scope="module")
def setup() -> tuple[Any, Any, Any, torch.Tensor]:
    torch.manual_seed(0)
    dp = PRESETS["fbgemm_int8"]
    data = MLP.example_input(40)
    model, handle = calibrated(MLP(), dp, [data])
    return model, handle, lower(model, handle, data[:2], datapath=dp), data


def test_clean_program_has_no_mismatch_and_reports_fast_vs_datapath(setup: Any) -> None:
    model, handle, program, data = setup
    report = quant.verify(model, handle, program, data, batch_size=16, progress=False)
    assert report.ok and report.mismatches == 0 and report.divergence is None and report.samples == 40
    assert [o.name for o in report.ops] == [n.name for n in program.nodes]
    assert all(o.compared == 40 * int(np.prod([d for d in program.tensors[n.output].shape[1:]]))
               for o, n in zip(report.ops, program.nodes))  # fmt: skip
    assert report.fast_compared == 40 * 4 and 0 <= report.fast_differing <= report.fast_compared
    assert report.sqnr_db > 30 and report.top1_samples == 40
    last = report.ops[-1]
    assert last.fast.compared == report.fast_compared and last.fast.differing == report.fast_differing
    assert all(o.fast.compared == o.compared for o in report.ops if o.op != "requantize")  # per layer too
    assert all(o.fast.sqnr_db > 25 for o in report.ops if o.fast.compared)
    text = str(report)
    assert "mismatches: 0 (OK)" in text and "fc3" in text and "SQNR" in text
    d = json.loads(report.to_json())
    assert d["mismatches"] == 0 and d["ok"] and len(d["ops"]) == len(program.nodes)
    assert d["ops"][0]["fast"]["compared"] == report.ops[0].fast.compared and "sqnr_db" in d["ops"][0]["fast"]


def test_a_backend_that_differs_is_caught_at_the_op_and_element(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    model, handle, program, data = setup
    backend = OffByOneLinear()
    monkeypatch.setitem(_REGISTERED, backend.name, backend)  # registered for this test only
    report = quant.verify(model, handle, program, data, batch_size=16, backends=("torch", "off_by_one"),
                          progress=False)  # fmt: skip
    assert not report.ok and report.mismatches >= 1
    div = report.divergence
    assert div is not None and div.op == program.nodes[1].name and div.batch == 0 and div.index == (0, 3)
    assert abs(div.values["torch"] - div.values["off_by_one"]) == 1
    assert "FAILED" in str(report) and "first divergence at op" in str(report)


def test_batches_stream_from_an_iterable_and_bad_arguments_are_refused(setup: Any) -> None:
    model, handle, program, data = setup
    loader = [(data[i : i + 8], torch.zeros(8)) for i in range(0, 40, 8)]
    report = quant.verify(model, handle, program, iter(loader), progress=False)
    assert report.samples == 40 and report.ok
    with pytest.raises(ValueError, match="batch_size=0"):
        quant.verify(model, handle, program, data, batch_size=0)
    with pytest.raises(ValueError, match="at least two backends"):
        quant.verify(model, handle, program, data, backends=("c",))
    with pytest.raises(TypeError, match="a batch must be a tensor"):
        quant.verify(model, handle, program, [np.zeros((2, 20))], progress=False)
