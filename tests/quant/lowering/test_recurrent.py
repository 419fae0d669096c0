"""nn.LSTM and nn.GRU lower to one integer ``lstm`` / ``gru`` op per layer and direction (docs/arithmetic.md
sections 6.6, 6.7, quant.lowering.recurrent) and run with 0 mismatches, exact simulation vs torch reference vs C
kernels, on every preset; a calibrated cell quantizer sets the LSTM cell's scale; the exported C folders reproduce
every code under the sanitizers; ONNX has no form of them and says so; what has no integer form is refused by
name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import kernels
import quant
from experiments.models.sequence import LSTMClassifier
from quant.contract.datapath import Datapath
from quant.lowering.lowerer import LoweringError
from quant.sim.recipe import datapath_recipe
from tests.quant.lowering.support import lowered

PRESETS = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


class Stacked(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.lstm = nn.LSTM(6, 8, **{"num_layers": 2, "batch_first": True, **options})
        self.fc = nn.Linear(16 if options.get("bidirectional") else 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.lstm(self.embed(x))[0][:, -1])
        return out


_lowered = lowered


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("model", ["classifier", "stacked", "stacked_no_bias", "bidirectional"])
def test_the_lstm_runs_with_zero_mismatches(model: str, preset: str) -> None:
    torch.manual_seed(0)
    module: nn.Module = (LSTMClassifier(1, 10, width=16) if model == "classifier"
                         else Stacked(bidirectional=True) if model == "bidirectional" else Stacked(bias=model == "stacked"))  # fmt: skip
    data = torch.randn(16, 1, 24) if model == "classifier" else torch.randn(16, 7, 3)
    handle, program = _lowered(module, preset, data)
    lstms = [n for n in program.nodes if n.op == "lstm"]
    assert len(lstms) == {"classifier": 1, "bidirectional": 4}.get(model, 2)
    assert [n.attrs.reverse for n in lstms].count(True) == (2 if model == "bidirectional" else 0)
    assert all(("b_ih" in n.params) is (model != "stacked_no_bias") for n in lstms)
    report = quant.verify(module, handle, program, data, progress=False)
    assert report.mismatches == 0 and report.output.compared > 0


def test_a_calibrated_cell_quantizer_sets_the_cells_scale() -> None:
    torch.manual_seed(0)
    dp = Datapath.preset("tflite_int8")
    x = torch.randn(16, 7, 3)
    plain = _lowered(Stacked(), "tflite_int8", x)[1]
    recipe = {**datapath_recipe(dp), "lstm": {**datapath_recipe(dp)["*"], "cell": datapath_recipe(dp)["*"]["input"]}}
    torch.manual_seed(0)
    model = Stacked()
    handle, program = _lowered(model, "tflite_int8", x, recipe)
    shifts = [n.attrs.cell_shift for n in program.nodes if n.op == "lstm"]
    assert [n.attrs.cell_shift for n in plain.nodes if n.op == "lstm"] == [11, 11]
    q = handle.quantizer("lstm", "cell_l0")
    s, z = (float(t.reshape(-1)[0]) for t in q.effective_qparams())
    reach = max(abs((q.spec.qmin - z) * s), abs((q.spec.qmax - z) * s))
    assert 32767 * 2.0 ** -shifts[0] >= reach > 32767 * 2.0 ** -(shifts[0] + 1)  # the finest scale that holds it
    assert quant.verify(model, handle, program, x, progress=False).mismatches == 0


def test_the_c_folder_reproduces_every_code_and_onnx_refuses_it_by_name(tmp_path: Path) -> None:
    from quant.export import export_onnx
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    torch.manual_seed(0)
    x = torch.randn(8, 7, 3)
    _, program = _lowered(Stacked(), "w4a4_acc16_sat", x)
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
    with pytest.raises(ValueError, match="node 'lstm.l0' \\(lstm\\) cannot be expressed: no ONNX form"):
        export_onnx(program, tmp_path / "l.onnx", form="qdq")


@pytest.mark.parametrize(("options", "forward", "message"), [
    ({}, lambda m, h: m.fc(m.lstm(h)[1][0][-1]), "the final states \\(\\[1\\]\\) are used"),
    ({}, lambda m, h: m.fc(m.lstm(h, (m.h0, m.h0))[0][:, -1]), "initial states have no integer form"),
])  # fmt: skip
def test_what_has_no_integer_form_is_refused_by_name(options: dict[str, Any], forward: Any, message: str) -> None:
    class Variant(Stacked):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            if forward is None:
                out: torch.Tensor = self.fc(self.lstm(h)[0][:, -1, :8])
                return out
            result: torch.Tensor = forward(self, h)
            return result

    torch.manual_seed(0)
    model = Variant(**options)
    model.register_buffer("h0", torch.zeros(2, 8, 8))
    with pytest.raises(LoweringError, match=f"LSTM 'lstm': .*{message}"):
        _lowered(model, "tflite_int8", torch.randn(8, 7, 3))


class WithGRU(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.gru = nn.GRU(6, 8, **{"batch_first": True, **options})
        self.fc = nn.Linear(16 if options.get("bidirectional") else 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.gru(self.embed(x))[0][:, -1])
        return out


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bias": False}, {"bidirectional": True}], ids=str)
def test_the_gru_runs_with_zero_mismatches(options: dict[str, Any], preset: str) -> None:
    torch.manual_seed(0)
    model, x = WithGRU(**options), torch.randn(16, 7, 3)
    handle, program = _lowered(model, preset, x)
    grus = [n for n in program.nodes if n.op == "gru"]
    assert len(grus) == 2 if options else len(grus) == 1
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 16 * 4


def test_a_gru_program_exports_to_c(tmp_path: Path) -> None:
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    torch.manual_seed(0)
    x = torch.randn(8, 7, 3)
    _, program = _lowered(WithGRU(bidirectional=True), "tflite_int8", x)
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
