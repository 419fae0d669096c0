"""Hypothesis-generated small networks (random depth, op mix, channels, strides, residuals) lower and verify
with zero mismatches between exact simulation, the torch reference and the C kernels, on random presets."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quant
from quant.contract.datapath import PRESETS
from quant.lowering import LoweringError, lower
from tests.quant.lowering.test_lowering import ZOO_PRESETS, calibrated

ACTIVATIONS = ["none", "relu", "relu6", "hardswish", "sigmoid", "tanh", "prelu"]


class RandomNet(nn.Module):
    """Conv blocks described by ``blocks`` (dicts), then global average pooling and a classifier."""

    def __init__(self, c_in: int, hw: int, blocks: list[dict[str, Any]], classes: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.convs = nn.ModuleList()
        self.residual: list[bool] = []
        self.pool: list[str] = []
        self.prelus = nn.ModuleDict()  # per-channel slopes: one lookup table per channel
        c = c_in
        for i, b in enumerate(blocks):
            groups = c if b["depthwise"] else 1
            c_out = c if b["depthwise"] or b["residual"] else b["c_out"]
            self.convs.append(nn.Conv2d(c, c_out, b["k"], stride=b["stride"], padding=b["k"] // 2, groups=groups,
                                        bias=b["bias"]))  # fmt: skip
            self.residual.append(b["residual"] and b["stride"] == 1 and c_out == c)  # shapes known statically
            if b["act"] == "prelu":
                prelu = nn.PReLU(c_out)
                nn.init.uniform_(prelu.weight, -0.5, 1.0)
                self.prelus[str(i)] = prelu
            hw = (hw - 1) // b["stride"] + 1
            self.pool.append(b["pool"] if hw >= 2 else "none")
            hw = hw // 2 if self.pool[-1] != "none" else hw
            c = c_out
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, b, residual, pool) in enumerate(zip(self.convs, self.blocks, self.residual, self.pool)):
            y = conv(x)
            act = b["act"]
            if act == "prelu":
                y = self.prelus[str(i)](y)
            elif act == "relu":
                y = F.relu(y)
            elif act == "relu6":
                y = F.relu6(y)
            elif act == "hardswish":
                y = F.hardswish(y)
            elif act == "sigmoid":
                y = torch.sigmoid(y)
            elif act == "tanh":
                y = torch.tanh(y)
            if residual:
                y = y + x
            if pool == "max":
                y = F.max_pool2d(y, 2)
            elif pool == "avg":
                y = F.avg_pool2d(y, 2)
            x = y
        out: torch.Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return out


blocks = st.fixed_dictionaries({
    "k": st.sampled_from([1, 3]),
    "stride": st.sampled_from([1, 1, 2]),
    "c_out": st.integers(2, 8),
    "depthwise": st.booleans(),
    "residual": st.booleans(),
    "bias": st.booleans(),
    "act": st.sampled_from(ACTIVATIONS),
    "pool": st.sampled_from(["none", "none", "max", "avg"]),
})  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.lists(blocks, min_size=1, max_size=4), st.sampled_from(ZOO_PRESETS),
       st.integers(0, 2**16))  # fmt: skip
def test_random_networks_verify_with_zero_mismatches(c_in: int, spec: list[dict[str, Any]], preset: str,
                                                     seed: int) -> None:  # fmt: skip
    torch.manual_seed(seed)
    dp = PRESETS[preset]
    batches = [torch.randn(4, c_in, 8, 8) for _ in range(2)]
    model, handle = calibrated(RandomNet(c_in, 8, spec, 3), dp, batches)
    try:
        program = lower(model, handle, batches[0], datapath=dp)
    except LoweringError as err:  # a scheme that does not fit: only a bias beyond a narrow bias_bits may refuse
        assert "bias_bits" in str(err) and dp.bias_bits < 32, str(err)
        return
    report = quant.verify(model, handle, program, torch.cat(batches), progress=False)
    assert report.mismatches == 0, f"{spec}\n{program}\n{report}"
