"""quant.mixed.cost: MACs, BOPs and packed weight bytes per layer, each count derived here from the shapes."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn

import quant
from quant.contract.spec import QuantSpec
from quant.mixed.cost import FLOAT_BITS, cost, packed_bytes

A8 = QuantSpec(bits=8, signed=False, symmetric=False)


def w(bits: int) -> QuantSpec:
    return QuantSpec(bits=bits, granularity="channel", axis=0)


def conv_out(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


class TwoInputs(nn.Module):
    """A model called with two tensors (a tuple batch) or two keywords (a dict batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(3, 5, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.a(x) + self.b(y)
        return out


def attached(model: nn.Module, recipe: dict[object, object]) -> quant.QuantHandle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quant.attach(model, recipe)


def test_linear_and_conv_macs_come_from_their_shapes() -> None:
    cin, cout, k, stride, pad, size, groups = 4, 6, 3, 2, 1, 9, 2
    model = nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups), nn.Flatten())
    ho = conv_out(size, k, stride, pad)
    model.append(nn.Linear(cout * ho * ho, 7))
    c = cost(model, None, torch.randn(3, cin, size, size))
    conv, fc = c.layer("0"), c.layer("2")
    assert conv.macs == cout * (cin // groups) * k * k * ho * ho
    assert fc.macs == cout * ho * ho * 7
    assert conv.bops == conv.macs * FLOAT_BITS * FLOAT_BITS and conv.weight_bits == conv.input_bits == FLOAT_BITS
    assert conv.weight_elements == cout * (cin // groups) * k * k and conv.weight_bytes == 4 * conv.weight_elements
    assert (c.macs, c.bops, c.weight_bytes) == (conv.macs + fc.macs, conv.bops + fc.bops, conv.weight_bytes + fc.weight_bytes)


def test_a_linear_on_a_sequence_counts_every_position_and_a_transposed_conv_every_input() -> None:
    model = nn.Sequential(nn.Linear(8, 4))
    assert cost(model, None, torch.randn(2, 5, 8)).layer("0").macs == 5 * 8 * 4
    up = nn.Sequential(nn.ConvTranspose1d(3, 2, 4, stride=2))
    assert cost(up, None, torch.randn(2, 3, 10)).layer("0").macs == 3 * 10 * 2 * 4


@pytest.mark.parametrize("bits", [4, 2, 3])
def test_weights_are_packed_at_their_width_and_bops_take_both_operands(bits: int) -> None:
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    handle = attached(model, {"0": {"weight": w(bits), "input": A8}, "2": {"weight": w(bits)}})
    c = cost(model, handle, torch.randn(2, 3, 6, 6))
    conv, fc = c.layer("0"), c.layer("2")
    assert conv.weight_bytes == math.ceil(5 * 3 * 3 * 3 * bits / 8) and fc.weight_bytes == math.ceil(80 * 3 * bits / 8)
    assert conv.bops == conv.macs * bits * 8 and fc.bops == fc.macs * bits * FLOAT_BITS  # fc's input is float
    assert (conv.weight_bits, conv.input_bits, fc.input_bits) == (bits, 8, FLOAT_BITS)
    assert packed_bytes(5, bits) == -(-5 * bits // 8)


def test_a_tuple_and_a_dict_batch_count_one_sample() -> None:
    model = TwoInputs()
    x, y = torch.randn(4, 6), torch.randn(4, 3)
    for example in ((x, y), [x, y], {"x": x, "y": y}):
        c = cost(model, None, example)
        assert [(layer.name, layer.macs) for layer in c.layers] == [("a", 6 * 5), ("b", 3 * 5)]


def test_counting_changes_no_statistics_and_puts_every_flag_back() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).train()
    handle = attached(model, {"*": {"weight": w(4), "input": A8}})  # observing: a forward would update observers
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    cost(model, handle, torch.randn(5, 1, 6, 6))
    after = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any("running_mean" in k for k in before) and any("observer" in k for k in before)
    assert model.training and all(q.enabled and q.observing for _, _, q in handle.quantizers())


def test_a_model_with_no_handle_is_float_and_the_table_has_a_total() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    c = cost(model, None, torch.randn(1, 3))
    assert c.table().splitlines()[-1] == f"| total | | 6 | | | {6 * 32 * 32} | 6 | 24 |"


def test_bad_arguments_are_named() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    other = nn.Sequential(nn.Linear(3, 2))
    handle = attached(other, {"*": {"weight": w(4)}})
    with pytest.raises(ValueError, match="another model"):
        cost(model, handle, torch.randn(1, 3))
    with pytest.raises(TypeError, match="example must be a tensor"):
        cost(model, None, 3.0)
    with pytest.raises(ValueError, match="bits=33"):
        packed_bytes(4, 33)
