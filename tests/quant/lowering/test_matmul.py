"""torch.matmul / @ / bmm of two activation tensors lower to the IR's matmul (section 6.4) and run with 0
mismatches, exact simulation vs torch reference vs C kernels; ONNX Runtime agrees with it; the exported C folder
reproduces every code under the sanitizers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import kernels
import quant
from quant.contract.datapath import Datapath
from quant.sim.recipe import datapath_recipe


class MatmulAttention(nn.Module):
    """Single-head attention written with torch.matmul, softmax, ``@`` and torch.bmm."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.fc = nn.Linear(6 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(self.q(x), self.k(x).transpose(1, 2))
        p = torch.softmax(scores, dim=-1)
        v = self.v(x)
        y = torch.bmm(p, v) + p @ v
        out: torch.Tensor = self.fc(torch.flatten(y, 1))
        return out


def _lowered(preset: str) -> tuple[nn.Module, quant.QuantHandle, quant.IntegerProgram, torch.Tensor]:
    torch.manual_seed(0)
    model = MatmulAttention().eval()
    x = torch.randn(16, 6, 8)
    dp = Datapath.preset(preset)
    handle = quant.attach(model, datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        model(x)
    return model, handle, quant.lower(model, handle, x[:1], datapath=dp), x


@pytest.mark.parametrize("preset", ["fbgemm_int8", "tflite_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"])
def test_attention_with_matmuls_runs_with_zero_mismatches(preset: str) -> None:
    model, handle, program, x = _lowered(preset)
    assert [n.op for n in program.nodes].count("matmul") == 3
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 16 * 3


@pytest.mark.parametrize("preset", ["fbgemm_int8", "w2a2_pow2_acc16"])
def test_a_program_with_matmuls_saves_loads_and_exports_to_c(preset: str, tmp_path: Path) -> None:
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    model, handle, program, x = _lowered(preset)
    program.save(tmp_path / "p.npz")
    loaded = quant.IntegerProgram.load(tmp_path / "p.npz")
    assert loaded.digest() == program.digest()
    assert (loaded.run(x, backend="c") == program.run(x, backend="torch")).all()
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_onnx_runtime_gives_the_programs_codes_for_matmuls(form: str) -> None:
    """ONNX Runtime on the exported program (MatMul between dequantized / integer-valued operands) against the
    program's own codes, on the preset that models its arithmetic."""
    from quant.export.agreement import measure

    _, _, program, x = _lowered("mlas")
    agreement = measure(program, x, form=form)
    assert agreement.refused is None and agreement.failed is None and agreement.codes == 16 * 3
    assert agreement.equal == 1.0 and agreement.max_lsb == 0
