"""nn.MultiheadAttention lowers to projections, head reshapes, two matmuls and the integer softmax
(quant.lowering.attention) and runs with 0 mismatches, exact simulation vs torch reference vs C kernels, for
self- and cross-attention (separate key/value inputs and projection weights); the exported C folder and ONNX
Runtime give the program's codes; what has no integer form is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import kernels
import quant
from quant.contract.datapath import Datapath
from quant.lowering.lowerer import LoweringError
from quant.sim.recipe import datapath_recipe
from tests.quant.lowering.support import lowered

PRESETS = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


class SelfAttention(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, **{"batch_first": True, **options})
        self.fc = nn.Linear(6 * 16, 3)
        self.call: dict[str, Any] = {"need_weights": False}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        y = self.attn(h, h, h, **self.call)[0]
        out: torch.Tensor = self.fc(torch.flatten(y + h, 1))
        return out


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.kv = nn.Linear(8, 16), nn.Linear(8, 6)
        self.attn = nn.MultiheadAttention(16, 4, kdim=6, vdim=6, batch_first=True)
        self.fc = nn.Linear(6 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory = self.kv(x)
        y, _ = self.attn(self.q(x), memory, memory)
        out: torch.Tensor = self.fc(torch.flatten(y, 1))
        return out


def _lowered(model: nn.Module, preset: str) -> tuple[quant.QuantHandle, quant.IntegerProgram, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(32, 6, 8)
    return (*lowered(model, preset, x), x)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_attention_runs_with_zero_mismatches(kind: str, preset: str) -> None:
    torch.manual_seed(0)
    model = SelfAttention() if kind == "self" else CrossAttention()
    handle, program, x = _lowered(model, preset)
    ops = [n.op for n in program.nodes]
    assert ops.count("matmul") == 2 and ops.count("softmax") == 1 and ops.count("linear") >= 5
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 32 * 3


def test_the_c_folder_and_onnx_runtime_give_the_programs_codes(tmp_path: Path) -> None:
    from quant.export import export_onnx, import_onnx
    from quant.export.agreement import measure
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    _, program, x = _lowered(SelfAttention(), "mlas")
    kernels.export_c(program, tmp_path / "c", x[:3], intermediates=True, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
    agreement = measure(program, x, form="qoperator")
    assert agreement.refused is None and agreement.failed is None and agreement.equal == 1.0, agreement
    export_onnx(program, tmp_path / "a.onnx", form="qoperator")
    assert import_onnx(tmp_path / "a.onnx").digest() == program.digest()


def test_a_head_dimension_that_is_no_power_of_4_is_refused_on_a_pow2_datapath() -> None:
    model = SelfAttention()
    model.attn = nn.MultiheadAttention(16, 2, batch_first=True)  # d = 8
    with pytest.raises(LoweringError, match="1/sqrt\\(8\\) is no power of two.*a power of 4"):
        _lowered(model, "w2a2_pow2_acc16")


@pytest.mark.parametrize(("change", "message"), [
    ({"call": {"need_weights": False, "attn_mask": torch.zeros(6, 6, dtype=torch.bool)}}, "masks and is_causal"),
    ({"call": {"need_weights": True}, "use_weights": True}, "the attention weights \\(\\[1\\]\\) are used"),
    ({"options": {"batch_first": False}}, "batch_first=False"),
    ({"options": {"add_bias_kv": True}}, "bias_k/bias_v"),
])  # fmt: skip
def test_what_has_no_integer_form_is_refused_by_name(change: dict[str, Any], message: str) -> None:
    torch.manual_seed(0)

    class Uses(SelfAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            y, w = self.attn(h, h, h, **self.call)
            out: torch.Tensor = self.fc(torch.flatten(y + h, 1))
            return out + w.sum() if change.get("use_weights") else out

    options = {k: v for k, v in change.get("options", {}).items() if k != "batch_first"}
    model = Uses(**options)  # calibrated batch first; batch_first=False is set before lowering
    model.call = change.get("call", model.call)
    dp = Datapath.preset("tflite_int8")
    x = torch.randn(8, 6, 8)
    handle = quant.attach(model.eval(), datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        model(x)
    model.attn.batch_first = change.get("options", {}).get("batch_first", True)
    with pytest.raises(LoweringError, match=f"MultiheadAttention 'attn': .*{message}"):
        quant.lower(model, handle, x[:1], datapath=dp)
