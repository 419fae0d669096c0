"""nn.LayerNorm lowers to the contract's integer LayerNorm (section 6.5) and runs with 0 mismatches, exact
simulation vs torch reference vs C kernels: with and without affine parameters, per-element and per-tensor
gamma scales, several normalized dimensions; its codes stay near the float simulation's; the qoperator ONNX
file round-trips to the same program and ONNX Runtime gives its codes; what cannot lower is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec
from quant.lowering.lowerer import LoweringError
from quant.sim.recipe import datapath_recipe
from tests.quant.lowering.support import lowered

PRESETS = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


class Normed(nn.Module):
    def __init__(self, shape: Any = 16, affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(shape, elementwise_affine=affine, bias=bias)
        self.b = nn.Linear(16, 3)
        if affine:
            with torch.no_grad():
                self.ln.weight.uniform_(0.5, 1.5)
                if bias:
                    self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if isinstance(self.ln.normalized_shape, tuple) and len(self.ln.normalized_shape) == 2:
            h = self.ln(h.reshape(-1, 3, 2, 8)).reshape(-1, 3, 16)
        else:
            h = self.ln(h)
        out: torch.Tensor = self.b(h)
        return out


def _lowered(model: nn.Module, preset: str, recipe: Any = None) -> tuple[quant.QuantHandle, quant.IntegerProgram, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(32, 3, 8)
    return (*lowered(model, preset, x, recipe), x)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("variant", ["affine", "no_affine", "no_bias", "two_dims"])
def test_layernorm_runs_with_zero_mismatches(variant: str, preset: str) -> None:
    torch.manual_seed(0)
    model = {"affine": lambda: Normed(), "no_affine": lambda: Normed(affine=False), "no_bias": lambda: Normed(bias=False),
             "two_dims": lambda: Normed((2, 8))}[variant]()  # fmt: skip
    handle, program, x = _lowered(model, preset)
    ops = [n.op for n in program.nodes]
    assert ops.count("layernorm") == 1
    node = next(n for n in program.nodes if n.op == "layernorm")
    assert ("gamma" in node.params) is (variant != "no_affine")
    if variant != "no_affine":  # a "*" rule's narrower weight scheme reaches the gain at 8 bits
        assert handle.quantizer("ln", "weight").spec.bits == 8
    assert ("bias" in node.params) is (variant in ("affine", "two_dims"))
    report = quant.verify(model, handle, program, x, progress=False)
    assert report.mismatches == 0 and report.output.compared == 32 * 3 * 3


def test_per_tensor_gamma_scales_and_the_float_simulation() -> None:
    """A per-tensor gamma scheme gives one multiplier; exact and fast simulation stay within a few output LSBs."""
    torch.manual_seed(0)
    model = Normed()
    dp = Datapath.preset("tflite_int8")
    recipe = {**datapath_recipe(dp), "ln": {"weight": QuantSpec(bits=8, signed=True, symmetric=True),
                                            "input": datapath_recipe(dp)["*"]["input"]}}  # fmt: skip
    handle, program, x = _lowered(model, "tflite_int8", recipe)
    node = next(n for n in program.nodes if n.op == "layernorm")
    assert node.attrs.requant.count == 1
    assert quant.verify(model, handle, program, x, progress=False).mismatches == 0
    with torch.no_grad():
        fast = model(x)
        handle.set_mode("exact", dp)
        exact = model(x)
        handle.set_mode("fast")
    step = program.tensors[program.outputs[0]].scale
    assert float((fast - exact).abs().max()) <= 4 * step


def test_a_layernorm_without_a_weight_scheme_is_refused_by_name() -> None:
    model = Normed()
    dp = Datapath.preset("tflite_int8")
    recipe = {"*": datapath_recipe(dp)["*"], nn.LayerNorm: None, "ln": {"input": datapath_recipe(dp)["*"]["input"]}}
    with pytest.raises(LoweringError, match="LayerNorm 'ln': its gamma needs a weight scheme"):
        _lowered(model, "tflite_int8", recipe)


def test_the_qoperator_file_round_trips_and_onnx_runtime_gives_the_codes(tmp_path: Path) -> None:
    from quant.export import export_onnx, import_onnx
    from quant.export.agreement import measure

    _, program, x = _lowered(Normed(), "mlas")
    export_onnx(program, tmp_path / "ln.onnx", form="qoperator")
    assert import_onnx(tmp_path / "ln.onnx").digest() == program.digest()
    for form in ("qoperator", "qdq"):
        agreement = measure(program, x, form=form)
        assert agreement.refused is None and agreement.failed is None, agreement
        if form == "qoperator":
            assert agreement.equal == 1.0 and agreement.max_lsb == 0
