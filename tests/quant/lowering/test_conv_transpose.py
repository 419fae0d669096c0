"""ConvTranspose2d with kernel == stride (U-Net upsampling) lowers to a 1x1 conv2d and a depth-to-space of the
codes, and runs with 0 mismatches (per output channel and per tensor weights, bias, fused ReLU, unequal kernel
sides); the C folder and ONNX Runtime give its codes; other geometries are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels
import quant
from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec
from quant.lowering.lowerer import LoweringError
from quant.sim.recipe import datapath_recipe
from tests.quant.lowering.support import lowered


class Up(nn.Module):
    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, **{"kernel_size": 2, "stride": 2, **options})
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.up(F.relu(self.conv(x))))
        out: torch.Tensor = self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))
        return out


def _lowered(model: nn.Module, preset: str, recipe: Any = None) -> tuple[quant.QuantHandle, quant.IntegerProgram, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(16, 2, 6, 6)
    return (*lowered(model, preset, x, recipe), x)


@pytest.mark.parametrize("preset", ["tflite_int8", "fbgemm_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"])
@pytest.mark.parametrize("variant", ["2x2", "2x3 no bias", "per-tensor weights"])
def test_the_upsampling_runs_with_zero_mismatches(variant: str, preset: str) -> None:
    torch.manual_seed(0)
    options = {"2x2": {}, "2x3 no bias": {"kernel_size": (2, 3), "stride": (2, 3), "bias": False},
               "per-tensor weights": {}}[variant]  # fmt: skip
    model = Up(**options)
    dp = Datapath.preset(preset)
    recipe = None
    if variant == "per-tensor weights":
        base = datapath_recipe(dp)["*"]
        recipe = {"*": base, "up": {"weight": base["weight"].with_(granularity="tensor", axis=None), "input": base["input"]}}
    handle, program, x = _lowered(model, preset, recipe)
    assert handle.quantizer("up", "weight").spec.axis in (None, 1)  # a glob's axis 0 is taken per output channel
    ops = [n.op for n in program.nodes]
    assert ops[:5] == ["conv2d", "conv2d", "reshape", "permute", "reshape"]
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 16 * 3


def test_the_c_folder_and_onnx_runtime_give_the_programs_codes(tmp_path: Path) -> None:
    from quant.export.agreement import measure
    from tests.kernels.export.test_export_c import SANITIZE, build_and_run

    torch.manual_seed(0)
    _, program, x = _lowered(Up(), "mlas")
    kernels.export_c(program, tmp_path / "c", x[:4], intermediates=True, batch=2, quiet=True)
    done = build_and_run(tmp_path / "c", tmp_path, cflags=SANITIZE)
    assert done.returncode == 0 and done.stdout.strip().endswith("all equal"), done.stdout + done.stderr
    agreement = measure(program, x, form="qoperator")
    assert agreement.refused is None and agreement.failed is None and agreement.max_lsb <= 1, agreement


@pytest.mark.parametrize(("options", "recipe", "message"), [
    ({"kernel_size": 3, "stride": 2}, None, "only kernel == stride"),
    ({"padding": 1}, None, "only kernel == stride"),
    ({}, {"up": {"weight": QuantSpec(bits=8, granularity="channel", axis=0), "input": QuantSpec(bits=8)}},
     "not per tensor or per output channel"),
])  # fmt: skip
def test_other_geometries_and_schemes_are_refused_by_name(options: dict[str, Any], recipe: Any, message: str) -> None:
    torch.manual_seed(0)
    dp = Datapath.preset("tflite_int8")
    full = None if recipe is None else {**datapath_recipe(dp), **recipe}
    with pytest.raises(LoweringError, match=f"ConvTranspose2d 'up': .*{message}"):
        _lowered(Up(**options), "tflite_int8", full)
