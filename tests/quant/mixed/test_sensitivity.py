"""quant.mixed.sensitivity: output SQNR per width and the HAWQ-v2 Hessian measure; Hutchinson's estimate against
the closed-form trace of a linear layer's MSE loss, ``tr(H) = 2 ||X||_F^2 / N`` (H = 2/(N out) I_out (x) X^T X)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.spec import QuantSpec
from quant.mixed.sensitivity import sensitivity


def per_channel(bits: int) -> QuantSpec:
    return QuantSpec(bits=bits, signed=True, symmetric=True, granularity="channel", axis=0)


def factory(model: nn.Module, bits_by_layer: dict[str, int]) -> quant.QuantHandle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quant.attach(model, {name: {"weight": per_channel(b)} for name, b in bits_by_layer.items()})


def exact_trace(xs: list[torch.Tensor]) -> float:
    """The Hessian trace of mean((X W^T + b - Y)^2) over all N x out outputs w.r.t. W: 2 ||X||_F^2 / N."""
    x = torch.cat(xs).double()
    return float(2 * (x * x).sum() / x.shape[0])


def test_hutchinson_is_exact_when_the_hessian_is_diagonal() -> None:
    """Orthogonal input columns make X^T X, hence H, diagonal: every Rademacher sample gives tr(H) exactly."""
    q, _ = torch.linalg.qr(torch.randn(16, 5, generator=torch.Generator().manual_seed(1)))
    x = q * torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0])
    model = nn.Linear(5, 3)
    s = sensitivity(model, factory, [x], [4], hessian_samples=3, progress=False)
    assert s.layers[0].hessian_trace == pytest.approx(exact_trace([x]), rel=1e-5)


def test_hutchinson_is_close_to_the_exact_trace_over_several_batches_of_any_kind() -> None:
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(24, 6, generator=gen) + 0.5 for _ in range(3)]

    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, *, inputs: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(inputs)
            return out

    s = sensitivity(Keyword(), factory, [{"inputs": x} for x in xs], [8], hessian_samples=300, progress=False)
    assert s.layers[0].hessian_trace == pytest.approx(exact_trace(xs), rel=0.05)
    assert s.samples == 72 and s.layers[0].mean_hessian_trace == pytest.approx(s.layers[0].hessian_trace / 24)


def test_narrower_weights_cost_more_output_sqnr_and_more_hessian_measure(digits_mlp: tuple[nn.Module, torch.Tensor]) -> None:
    float_model, x = digits_mlp
    model = copy.deepcopy(float_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [x[:128], x[128:]]
    s = sensitivity(model, factory, batches, [8, 2, 4], hessian_samples=4, progress=False)
    assert s.candidates == (2, 4, 8) and [layer.name for layer in s.layers] == ["1", "3", "5"]
    assert [(layer.weight_elements, layer.macs) for layer in s.layers] == [(64 * 32, 64 * 32), (32 * 32, 32 * 32), (320, 320)]
    for layer in s.layers:
        assert layer.sqnr_db[2] < layer.sqnr_db[4] < layer.sqnr_db[8], layer
        assert layer.noise(2) > layer.noise(4) > layer.noise(8) > 0
        assert layer.perturbation[2] > layer.perturbation[4] > layer.perturbation[8] > 0
        assert layer.hessian_trace > 0 and layer.hessian(2) > layer.hessian(4) > layer.hessian(8)
    after = model.state_dict()  # every handle removed: the float model bit for bit
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    again = sensitivity(model, factory, batches, [2, 4, 8], hessian_samples=4, progress=False)
    assert again == s  # deterministic for a seed
    assert "| 1 | Linear | 2048 | 2048 |" in s.table()


def test_the_layers_can_be_chosen_and_bad_arguments_fail_before_any_work() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = [torch.randn(8, 4)]
    assert [layer.name for layer in sensitivity(model, factory, x, [4], layers=["2"], hessian_samples=1,
                                                progress=False).layers] == ["2"]  # fmt: skip
    calls: list[dict[str, int]] = []

    def counting(m: nn.Module, bits: dict[str, int]) -> quant.QuantHandle:
        calls.append(bits)
        return factory(m, bits)

    for bad, match in (({"candidates": []}, "no candidate widths"), ({"candidates": [9]}, "width 9 must be an integer in 1..8"),
                       ({"hessian_samples": 0}, "hessian_samples=0"), ({"layers": ["1"]}, "'1' is not a weight layer")):  # fmt: skip
        kwargs: dict[str, object] = {"candidates": [4], **bad}
        with pytest.raises(ValueError, match=match):
            sensitivity(model, counting, x, progress=False, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no calibration batches"):
        sensitivity(model, counting, [], [4], progress=False)
    assert calls == []

    def wrong_width(m: nn.Module, bits: dict[str, int]) -> quant.QuantHandle:
        return factory(m, {name: 8 for name in bits})

    with pytest.raises(ValueError, match="gave layer '0' a 8-bit weight scheme; it must quantize that layer's weight at 4 bits"):
        sensitivity(model, wrong_width, x, [4], progress=False)
    assert not any("parametrizations" in k for k in model.state_dict())  # the wrong handle was removed
