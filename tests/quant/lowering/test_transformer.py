"""PyTorch's transformer encoder on the integer datapath: nn.TransformerEncoder / nn.TransformerEncoderLayer
traced through (quant.sim.tracing), learned positions and parameters as constant codes, mean pooling over the
tokens; 0 mismatches exact vs torch reference vs C on every preset; the C folder and ONNX Runtime give the
program's codes and the qoperator file reads back as the same program; masks are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import kernels
import quant
from experiments.models.sequence import TransformerClassifier
from quant.contract.datapath import Datapath
from quant.lowering.lowerer import LoweringError
from quant.sim.recipe import datapath_recipe

PRESETS = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


class Encoder(nn.Module):
    """Tokens, a learned bias per token (a parameter), a 2-layer encoder (post-norm or pre-norm), mean pool."""

    def __init__(self, norm_first: bool = False, activation: str = "gelu") -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.bias = nn.Parameter(torch.randn(5, 16) * 0.1)
        layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first)  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x) + self.bias, **self.masks(x))
        out: torch.Tensor = self.fc(h.mean(dim=1))
        return out

    def masks(self, x: torch.Tensor) -> dict[str, Any]:
        return {}


def _lowered(model: nn.Module, preset: str, x: torch.Tensor) -> tuple[quant.QuantHandle, quant.IntegerProgram]:
    dp = Datapath.preset(preset)
    with pytest.warns(UserWarning, match="stay float: the model .*own parameters \\(bias\\)|'positions' \\(Embedding\\)"):
        handle = quant.attach(model.eval(), datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        model(x)
    return handle, quant.lower(model, handle, x[:1], datapath=dp)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("variant", ["post_norm_gelu", "pre_norm_relu"])
def test_the_encoder_runs_with_zero_mismatches(variant: str, preset: str) -> None:
    torch.manual_seed(0)
    model = Encoder(norm_first=variant.startswith("pre"), activation="relu" if variant.endswith("relu") else "gelu")
    x = torch.randn(24, 5, 3)
    handle, program = _lowered(model, preset, x)
    ops = [n.op for n in program.nodes]
    assert ops.count("matmul") == 4 and ops.count("layernorm") == 5 and ops.count("constant") == 1
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 24 * 4


def test_the_zoo_transformer_with_learned_positions_runs_with_zero_mismatches() -> None:
    torch.manual_seed(0)
    model = TransformerClassifier(1, 40, 10, width=16, heads=4)
    x = torch.randn(16, 1, 40)
    handle, program = _lowered(model, "tflite_int8", x)
    assert [n.op for n in program.nodes].count("matmul") == 4
    assert quant.verify(model, handle, program, x, progress=False).mismatches == 0


def test_the_c_folder_and_onnx_runtime_give_the_programs_codes(tmp_path: Path) -> None:
    from quant.export import export_onnx, import_onnx
    from quant.export.agreement import measure
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    torch.manual_seed(0)
    x = torch.randn(24, 5, 3)
    _, program = _lowered(Encoder(), "mlas", x)
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
    for form in ("qoperator", "qdq"):
        agreement = measure(program, x, form=form)
        assert agreement.refused is None and agreement.failed is None, agreement
    assert measure(program, x, form="qoperator").equal == 1.0
    export_onnx(program, tmp_path / "e.onnx", form="qoperator")
    assert import_onnx(tmp_path / "e.onnx").digest() == program.digest()


def test_masks_given_to_the_encoder_are_refused_by_name() -> None:
    class Masked(Encoder):
        def masks(self, x: torch.Tensor) -> dict[str, Any]:
            return {"mask": torch.zeros(5, 5, dtype=torch.bool)}

    torch.manual_seed(0)
    model = Masked()
    x = torch.randn(8, 5, 3)
    dp = Datapath.preset("tflite_int8")
    with pytest.warns(UserWarning, match="stay float"):
        handle = quant.attach(model.eval(), datapath_recipe(dp))
    with torch.no_grad(), handle.calibrate():
        model(x)
    with pytest.raises(LoweringError, match="TransformerEncoder 'encoder': masks and is_causal have no integer form"):
        quant.lower(model, handle, x[:1], datapath=dp)
