"""The edge recorder: calibration observes every tensor the forward materializes (functional activations,
``x + y``, reshapes, leaf modules), in the order torch.fx traces them, and leaves the model as it was."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import quant
from quant.contract.spec import QuantSpec

A8 = QuantSpec(bits=8, signed=False, symmetric=False)
W8 = QuantSpec(bits=8, granularity="channel", axis=0)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        z = F.relu(y) + y
        out: torch.Tensor = self.fc(torch.flatten(z, 1).view(x.shape[0], -1))
        return out


def test_sites_in_trace_order_and_statistics() -> None:
    torch.manual_seed(0)
    model = Net()
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    assert handle.edges is None
    xs = [torch.randn(2, 3, 5, 5) for _ in range(3)]
    with torch.no_grad(), handle.calibrate():
        for x in xs:
            model(x)
    edges = handle.edges
    assert edges is not None
    assert [s for s, _ in edges.sites] == ["input:0", "module:conv#0", "module:act#0", "call:0", "call:1", "call:2",
                                           "call:3", "module:fc#0"]  # fmt: skip
    assert [label for _, label in edges.sites][3:7] == ["relu", "add", "flatten", "view"]
    with torch.no_grad():
        lo = min(float(x.min()) for x in xs)
        hi = max(float(x.max()) for x in xs)
    s, z = edges.qparams("input:0")
    assert abs(s - (hi - lo) / 255) < 1e-6 and 0 <= z <= 255
    # nothing stays attached outside calibrate(): the forward runs no recorder hook
    before = len(edges.sites)
    with torch.no_grad():
        model(xs[0])
    assert len(edges.sites) == before


def test_a_failing_calibration_keeps_the_previous_statistics() -> None:
    model = Net()
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(2, 3, 5, 5))
    edges = handle.edges
    assert edges is not None
    saved = edges.qparams("call:1")
    try:
        with torch.no_grad(), handle.calibrate():
            model(torch.randn(2, 3, 5, 5) * 100)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert handle.edges is not None and handle.edges.qparams("call:1") == saved
    handle.remove()
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
