"""Lowering of calibrated models to integer programs: the model zoo on every preset it fits, verified at
zero tolerance between the torch reference and the C kernels, and the refusals of what cannot lower."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import quant
from experiments.models.digits_cnn import DigitsCNN
from experiments.models.small import SMALL_MODELS
from quant.contract.codes import code_range
from quant.contract.datapath import PRESETS, Datapath
from quant.ir.program import IntegerProgram
from quant.contract.spec import QuantSpec
from quant.lowering import LoweringError, lower
from quant.sim.recipe import datapath_recipe

ZOO_PRESETS = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


def scheme(dp: Datapath) -> dict[str, Any]:
    """The natural recipe for ``dp`` (:func:`quant.sim.recipe.datapath_recipe`)."""
    return datapath_recipe(dp)


def calibrated(model: nn.Module, dp: Datapath, batches: list[torch.Tensor]) -> tuple[nn.Module, quant.QuantHandle]:
    model = quant.fold_bn(model.eval())
    handle = quant.attach(model, scheme(dp))
    with torch.no_grad(), handle.calibrate():
        for x in batches:
            model(x)
    return model, handle


def digits_input(batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8) * 16


ZOO: dict[str, tuple[Any, Any]] = {name: (cls, cls.example_input) for name, cls in SMALL_MODELS.items()}  # type: ignore[attr-defined]
ZOO["digits"] = (DigitsCNN, digits_input)


@pytest.mark.parametrize("preset", ZOO_PRESETS)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_lowers_and_verifies_with_zero_mismatches(name: str, preset: str) -> None:
    torch.manual_seed(0)
    cls, make_input = ZOO[name]
    dp = PRESETS[preset]
    batches = [make_input(8) for _ in range(3)]
    model, handle = calibrated(cls(), dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    report = quant.verify(model, handle, program, torch.cat(batches), batch_size=8, progress=False)
    assert report.samples == 24 and report.ops and all(o.compared > 0 for o in report.ops)
    assert report.mismatches == 0, str(report)
    assert report.backends == ("exact", "torch", "c")
    graph_tensors = set(program.origins.values())  # the program's own tensors (requantize, 1-D as 2-D) aside
    assert all(o.in_exact for o in report.ops if o.name in graph_tensors) and graph_tensors >= set(program.outputs)
    # fast simulation and the datapath round differently, by at most a few of the coarsest LSBs per op
    out_scale = program.tensors[program.outputs[0]].scale
    coarsest = max(t.scale for t in program.tensors.values())
    assert report.fast_max_lsb * out_scale <= 3 * len(program.nodes) * coarsest, str(report)
    with torch.no_grad():
        handle.remove()
        float_out = model(batches[0])
        again = model(batches[0])
    outs = float_out if isinstance(float_out, tuple) else (float_out,)
    assert all(torch.equal(a, b) for a, b in zip(outs, again if isinstance(again, tuple) else (again,)))


def test_program_output_is_close_to_fast_simulation_at_8_bits() -> None:
    torch.manual_seed(1)
    dp = PRESETS["tflite_int8"]
    batches = [SMALL_MODELS["residual"].example_input(16) for _ in range(4)]  # type: ignore[attr-defined]
    model, handle = calibrated(SMALL_MODELS["residual"](), dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    report = quant.verify(model, handle, program, torch.cat(batches), progress=False)
    assert report.sqnr_db > 30 and report.agreement()["fast_datapath"] > 0.9, str(report)


def test_fusion_requantize_and_lookup_tables_appear_where_they_should() -> None:
    torch.manual_seed(0)
    dp = PRESETS["tflite_int8"]
    batches = [SMALL_MODELS["activations"].example_input(8)]  # type: ignore[attr-defined]
    model, handle = calibrated(SMALL_MODELS["activations"](), dp, batches)
    ops = [n.op for n in lower(model, handle, batches[0], datapath=dp).nodes]
    assert ops.count("lut") == 4 and ops.count("linear") == 3 and "add" in ops  # sigmoid, gelu, tanh, hardswish
    batches = [SMALL_MODELS["bn_cnn"].example_input(8)]  # type: ignore[attr-defined]
    model, handle = calibrated(SMALL_MODELS["bn_cnn"](), dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    ops = [n.op for n in program.nodes]
    assert ops == ["conv2d", "conv2d", "max_pool2d", "conv2d", "avg_pool2d", "reshape", "requantize", "linear"]
    conv2 = program.nodes[1]
    out = program.tensors[conv2.output]
    six = round(6.0 / out.scale)
    assert conv2.attrs.output.lo == out.zero_point and conv2.attrs.output.hi == min(127, out.zero_point + six)


def test_a_standalone_relu_is_an_exact_table() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc1(x)
            out: torch.Tensor = self.fc2(F.relu(y) + y)
            return out

    torch.manual_seed(0)
    dp = PRESETS["fbgemm_int8"]
    batches = [torch.randn(16, 6)]
    model, handle = calibrated(Net(), dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    lut = next(n for n in program.nodes if n.op == "lut")
    src, dst = program.tensors[lut.inputs[0]], program.tensors[lut.output]
    codes = np.arange(0, 256)
    expected = np.clip(np.rint(np.maximum(src.scale * (codes - src.zero_point), 0) / dst.scale) + dst.zero_point, 0, 255)
    table = lut.params["table"]
    assert isinstance(table, np.ndarray) and table.tolist() == expected.astype(int).tolist()


def test_lowering_refusals_name_the_problem() -> None:
    dp = PRESETS["tflite_int8"]

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(x) if x.sum() > 0 else -self.fc(x)
            return out

    model = Branchy()
    handle = quant.attach(model, scheme(dp))
    with torch.no_grad(), handle.calibrate():
        model(torch.ones(2, 4))
    with pytest.raises(LoweringError, match="torch.fx cannot trace the model"):
        lower(model, handle, torch.ones(2, 4), datapath=dp)

    class Cumulative(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(self.fc(x), dim=1)

    model2 = Cumulative()
    handle2 = quant.attach(model2, scheme(dp))
    with pytest.raises(ValueError, match="run handle.calibrate"):
        lower(model2, handle2, torch.ones(2, 4), datapath=dp)
    with torch.no_grad(), handle2.calibrate():
        model2(torch.randn(8, 4))
    with pytest.raises(LoweringError, match=r"cannot lower 'cumsum'.*graph node 'cumsum'.*test_lowering.py"):
        lower(model2, handle2, torch.ones(2, 4), datapath=dp)
    with pytest.raises(TypeError, match="datapath must be a Datapath"):
        lower(model2, handle2, torch.ones(2, 4), datapath="tflite_int8")  # type: ignore[arg-type]

    model3 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # BN in training mode: batch statistics
    handle3 = quant.attach(model3, scheme(dp))
    with torch.no_grad(), handle3.calibrate():
        model3(torch.randn(2, 3, 6, 6))
    with pytest.raises(LoweringError, match=r"BatchNorm '1' needs eval mode .*quant.fold_bn"):
        lower(model3, handle3, torch.randn(2, 3, 6, 6), datapath=dp)


def test_a_scheme_that_does_not_fit_the_datapath_names_the_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    w8 = QuantSpec(bits=8, granularity="channel", axis=0)
    handle = quant.attach(model, {"*": {"weight": w8, "input": QuantSpec(bits=8, signed=False, symmetric=False)}})
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(8, 4))
    with pytest.raises(LoweringError, match=r"input scheme of module .0.: activation spec uint8 asym.*outside the int8"):
        lower(model, handle, torch.randn(2, 4), datapath=PRESETS["tflite_int8"])
    with pytest.raises(LoweringError, match=r"weight spec int8 sym per-channel\(0\).*outside the int4 operand range"):
        lower(model, handle, torch.randn(2, 4), datapath=PRESETS["w4a8_acc32"].with_(a_signed=False))


def test_a_model_with_two_outputs() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.cls, self.box = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = F.relu(self.body(x))
            return self.cls(h), self.box(h)

    torch.manual_seed(0)
    dp = PRESETS["mlas"]
    x = torch.randn(16, 6)
    model, handle = calibrated(TwoHeads(), dp, [x])
    program = lower(model, handle, x[:2], datapath=dp)
    assert len(program.outputs) == 2
    outs = {be: program.run(x, backend=be) for be in ("torch", "c")}
    assert all(isinstance(o, tuple) and len(o) == 2 for o in outs.values())
    assert all(np.array_equal(a, b) for a, b in zip(outs["torch"], outs["c"]))
    handle.set_mode("exact", dp)
    with torch.no_grad():
        exact = model(x)
    for i in range(2):
        assert np.array_equal(exact[i].numpy(), program.dequantize(outs["c"][i], i))


@pytest.mark.parametrize("preset", ZOO_PRESETS)
def test_a_batchnorm_that_cannot_fold_is_an_exact_per_channel_affine(preset: str) -> None:
    class PostActivationBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Linear(6 * 4 * 4, 3)
            self.bn1d = nn.BatchNorm1d(6 * 4 * 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(F.relu(self.conv(x)))          # after the activation: nothing to fold into
            out: torch.Tensor = self.fc(F.relu(self.bn1d(torch.flatten(y, 1))))
            return out

    torch.manual_seed(0)
    dp = PRESETS[preset]
    net = PostActivationBN()
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for bn in (net.bn, net.bn1d):
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    batches = [torch.randn(8, 3, 4, 4) for _ in range(2)]
    model, handle = calibrated(net, dp, batches)
    assert isinstance(model.bn, nn.BatchNorm2d)  # fold_bn left it alone
    try:
        program = lower(model, handle, batches[0], datapath=dp)
    except LoweringError as err:  # a narrow bias cannot hold a large shift: named
        assert "bias_bits" in str(err) and dp.bias_bits < 32
        return
    depthwise = [n for n in program.nodes if n.op == "conv2d" and n.attrs.groups > 1]
    assert len(depthwise) == 2
    report = quant.verify(model, handle, program, torch.cat(batches), progress=False)
    assert report.mismatches == 0, str(report)
    if dp.a_bits == 8:
        assert report.sqnr_db > 25, str(report)


def test_tensors_without_statistics_are_named() -> None:
    """A weight-only recipe gives no activation scheme, so the tensors between layers have no statistics."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    handle = quant.attach(model, {"*": {"weight": QuantSpec(bits=8, granularity="channel", axis=0)}})
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(8, 4))
    with pytest.raises(ValueError, match="no edge statistics"):
        lower(model, handle, torch.randn(2, 4), datapath=PRESETS["tflite_int8"])


@pytest.mark.parametrize("preset", ZOO_PRESETS)
def test_prelu_with_per_channel_slopes_is_one_table_per_channel(preset: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(3, 5, 3, padding=1), nn.PReLU(5)
            self.fc, self.slope = nn.Linear(5 * 4 * 4, 4), nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.6]))
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(torch.flatten(self.act(self.conv(x)), 1))
            out: torch.Tensor = self.head(F.prelu(y, self.slope))
            return out

    torch.manual_seed(0)
    dp = PRESETS[preset]
    net = Net()
    with torch.no_grad():
        net.act.weight.copy_(torch.tensor([0.25, -0.5, 0.0, 1.0, 0.1]))
    batches = [torch.randn(8, 3, 4, 4) for _ in range(3)]
    model, handle = calibrated(net, dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    luts = [n for n in program.nodes if n.op == "lut"]
    assert [n.attrs.channels for n in luts] == [5, 4]
    table, src, dst = luts[0].params["table"], program.tensors[luts[0].inputs[0]], program.tensors[luts[0].output]
    assert isinstance(table, np.ndarray) and table.shape == (5, 1 << src.bits)
    lo = -(1 << (src.bits - 1)) if src.signed else 0
    real = src.scale * (np.arange(lo, lo + (1 << src.bits)) - src.zero_point)
    for c, a in enumerate([0.25, -0.5, 0.0, 1.0, 0.1]):  # row c is PReLU with slope a_c, to within a code
        want = np.where(real >= 0, real, a * real) / dst.scale + dst.zero_point
        assert np.abs(table[c].astype(np.int64) - np.clip(want, *code_range(dst.bits, dst.signed))).max() <= 0.5 + 1e-6
    report = quant.verify(model, handle, program, torch.cat(batches), batch_size=8, progress=False)
    assert report.mismatches == 0, str(report)
    saved = IntegerProgram.from_json(*program.to_json())
    np.testing.assert_array_equal(saved.run(batches[0], backend="c"), program.run(batches[0], backend="torch"))


@quant.elementwise
def swish_beta(x: torch.Tensor, beta: float = 1.5) -> torch.Tensor:
    """A user's activation: x * sigmoid(beta x)."""
    return x * torch.sigmoid(beta * x)


@pytest.mark.parametrize("preset", ["tflite_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"])
def test_a_function_the_user_writes_is_one_exact_table(preset: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc2(swish_beta(self.fc1(x), beta=2.0))
            return out

    torch.manual_seed(0)
    dp = PRESETS[preset]
    batches = [torch.randn(16, 6) for _ in range(2)]
    model, handle = calibrated(Net(), dp, batches)
    program = lower(model, handle, batches[0], datapath=dp)
    assert [n.op for n in program.nodes if n.op != "requantize"] == ["linear", "lut", "linear"]  # one table
    lut = next(n for n in program.nodes if n.op == "lut")
    src, dst = program.tensors[lut.inputs[0]], program.tensors[lut.output]
    lo = -(1 << (src.bits - 1)) if src.signed else 0
    real = torch.tensor(src.scale * (np.arange(lo, lo + (1 << src.bits)) - src.zero_point), dtype=torch.float32)
    want = torch.clamp(torch.round(real * torch.sigmoid(2.0 * real) / dst.scale) + dst.zero_point, *code_range(dst.bits, dst.signed))
    table = lut.params["table"]
    assert isinstance(table, np.ndarray) and np.abs(table.astype(np.int64) - want.numpy()).max() <= 1
    report = quant.verify(model, handle, program, torch.cat(batches), batch_size=8, progress=False)
    assert report.mismatches == 0, str(report)
    torch.testing.assert_close(swish_beta(batches[0]), batches[0] * torch.sigmoid(1.5 * batches[0]))
