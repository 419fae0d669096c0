"""Indexing a tensor with slices and ints after the batch (``h[:, -1]``, ``h[:, 1:5:2]``) lowers to ``slice`` and
``reshape`` and runs with 0 mismatches; the C folder and ONNX Runtime give the program's codes and the
qoperator file reads back as the same program; other indices are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

import kernels
import quant
from quant.lowering.lowerer import LoweringError
from tests.quant.lowering.support import lowered


class Indexed(nn.Module):
    def __init__(self, pick: Callable[[torch.Tensor], torch.Tensor], features: int) -> None:
        super().__init__()
        self.pick = pick
        self.a, self.b = nn.Linear(8, 16), nn.Linear(features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(torch.flatten(self.pick(self.a(x)), 1))
        return out


CASES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]] = {
    "last step": (lambda h: h[:, -1], 16),
    "strided steps": (lambda h: h[:, 1:5:2], 32),
    "features": (lambda h: h[..., 4:12], 6 * 8),
    "step and features": (lambda h: h[:, 2, ::3], 6),
}


def _lowered(model: nn.Module, preset: str) -> tuple[quant.QuantHandle, quant.IntegerProgram, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(32, 6, 8)
    return (*lowered(model, preset, x), x)


@pytest.mark.parametrize("preset", ["tflite_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_indexing_runs_with_zero_mismatches(case: str, preset: str) -> None:
    torch.manual_seed(0)
    handle, program, x = _lowered(Indexed(*CASES[case]), preset)
    assert "slice" in [n.op for n in program.nodes]
    report = quant.verify(handle.model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 32 * 3


def test_the_c_folder_and_onnx_runtime_give_the_programs_codes(tmp_path: Path) -> None:
    from quant.export import export_onnx, import_onnx
    from quant.export.agreement import measure
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    torch.manual_seed(0)

    def pick(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[:, -1], h[:, 2, ::3]], dim=1)

    _, program, x = _lowered(Indexed(pick, 16 + 6), "mlas")
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
    for form in ("qoperator", "qdq"):
        agreement = measure(program, x, form=form)
        assert agreement.refused is None and agreement.failed is None and agreement.equal == 1.0, agreement
    export_onnx(program, tmp_path / "s.onnx", form="qoperator")
    assert import_onnx(tmp_path / "s.onnx").digest() == program.digest()


@pytest.mark.parametrize(("pick", "message"), [
    (lambda h: h[0], "the batch dimension 0 must be taken whole"),
    (lambda h: h[:, None], "only slices and ints"),
    (lambda h: h[:, torch.tensor([0, 2])], "only slices and ints"),
])  # fmt: skip
def test_other_indices_are_refused_by_name(pick: Any, message: str) -> None:
    class Free(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = pick(self.a(x))
            return out

    with pytest.raises(LoweringError, match=message):
        _lowered(Free(), "tflite_int8")
