"""Exact simulation mode: the model's own forward returns the datapath's values (equal to the program's),
QAT runs through it with straight-through gradients, and switching back restores fast simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import quant
from experiments.models.small import ResidualCNN
from quant.contract.datapath import PRESETS
from tests.quant.lowering.test_lowering import calibrated


@pytest.mark.parametrize("preset", ["tflite_int8", "w4a8_acc32", "w2a2_pow2_acc16"])
def test_exact_forward_is_the_programs_output(preset: str) -> None:
    torch.manual_seed(0)
    dp = PRESETS[preset]
    batches = [ResidualCNN.example_input(8) for _ in range(2)]
    model, handle = calibrated(ResidualCNN(), dp, batches)
    program = quant.lower(model, handle, batches[0], datapath=dp)
    with torch.no_grad():
        fast = model(batches[1])
    handle.set_mode("exact", dp)
    assert handle.mode == "exact" and handle.exact is not None
    with torch.no_grad():
        exact = model(batches[1])
    assert np.array_equal(exact.numpy(), program.dequantize(program.run(batches[1], backend="c")))
    handle.set_mode("fast")
    with torch.no_grad():
        assert torch.equal(model(batches[1]), fast)
    handle.remove()


def test_qat_steps_through_exact_mode_use_fast_gradients() -> None:
    torch.manual_seed(0)
    dp = PRESETS["tflite_int8"]
    x = ResidualCNN.example_input(16)
    y = torch.randint(0, 10, (16,))
    model, handle = calibrated(ResidualCNN(), dp, [x])
    handle.set_mode("exact", dp)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()  # type: ignore[no-untyped-call]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval()
    exact = handle.exact
    assert exact is not None and exact.program is not None
    with torch.no_grad():  # the trained weights, still on the datapath: outputs are codes of the output tensor
        out = model(x)
    info = exact.program.tensors[exact.program.outputs[0]]
    codes = out.numpy() / info.scale + info.zero_point
    assert np.allclose(codes, np.round(codes), atol=1e-3)


def test_set_mode_refusals() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    handle = quant.attach(model, {"*": {"weight": quant.QuantSpec(bits=8), "input": quant.QuantSpec(bits=8, symmetric=False)}})
    with pytest.raises(ValueError, match="mode='slow'"):
        handle.set_mode("slow")
    with pytest.raises(ValueError, match="needs the datapath"):
        handle.set_mode("exact")
    with pytest.raises(TypeError, match="datapath must be a Datapath"):
        handle.set_mode("exact", "tflite_int8")  # type: ignore[arg-type]
    handle.remove()
    with pytest.raises(RuntimeError, match="was removed"):
        handle.set_mode("fast")
