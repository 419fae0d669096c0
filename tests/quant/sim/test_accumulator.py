"""quant.sim.accumulator: the reported bound is the exact extreme of the accumulator the datapath forms.

Each layer is lowered (``quant.lower``) and its node's own weight codes, bias and zero points are run through
the integer reference's accumulation (``quant.reference.accumulate`` / ``conv2d_accumulate``): the adversarial
inputs (the extreme input code chosen per weight sign) reach the reported bound exactly, random inputs never
leave it, and the program itself, lowered with ``overflow="error"``, accepts the adversarial inputs at the
reported width and refuses them one bit narrower.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import quant
from quant.ir.program import IntegerProgram, PackedTensor
from quant.reference.accumulate import accumulate
from quant.reference.conv2d import conv2d_accumulate
from quant.reference.packing import unpack
from quant.sim.accumulator import AccumulatorReport, accumulator_bound, bits_needed, product_sum_extremes
from quant.sim.recipe import datapath_recipe

DP = quant.Datapath.preset("w4a4_acc16_sat")
WIDE = DP.with_(acc_bits=32, bias_bits=32, overflow="wrap")  # exact sums: what the accumulator would hold


@dataclass(frozen=True)
class Case:
    model: nn.Module
    handle: quant.QuantHandle
    example: torch.Tensor
    report: AccumulatorReport
    weight: torch.Tensor  # the program's weight codes: (O, K) or (O, C/g, kh, kw)
    bias: Optional[torch.Tensor]
    x_zero_point: int
    w_zero_point: torch.Tensor
    groups: int
    linear: bool


def _layer_program(program: IntegerProgram) -> Any:
    (node,) = [n for n in program.nodes if n.op in ("linear", "conv2d")]
    return node


def _weight_codes(node: Any) -> torch.Tensor:
    w = node.params["weight"]
    if isinstance(w, PackedTensor):
        matrix = (w.shape[0], int(np.prod(w.shape[1:])))  # packed as the (C_out, K) matrix (section 3)
        return unpack(torch.from_numpy(w.data), w.bits, matrix, w.signed).to(torch.int64).reshape(w.shape)
    return torch.from_numpy(np.asarray(w)).to(torch.int64)


def _case(layer: nn.Module, example: torch.Tensor, seed: int) -> Case:
    torch.manual_seed(seed)
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor):
        with torch.no_grad():
            bias.mul_(0.1)
    model = nn.Sequential(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, datapath_recipe(DP))
    with torch.no_grad(), handle.calibrate():
        model(torch.randn(64, *example.shape[1:]) + 0.5)  # an input range with a zero point inside it
    node = _layer_program(quant.lower(model, handle, example, datapath=WIDE))
    bias = node.params.get("bias")
    return Case(model, handle, example, accumulator_bound(handle, DP), _weight_codes(node),
                None if bias is None else torch.from_numpy(np.asarray(bias)).to(torch.int64),
                node.attrs.x_zero_point, torch.tensor(node.attrs.w_zero_point, dtype=torch.int64),
                getattr(node.attrs, "groups", 1), node.op == "linear")  # fmt: skip


@functools.lru_cache(maxsize=None)
def case(kind: str) -> Case:
    if kind == "linear":
        return _case(nn.Linear(64, 6), torch.zeros(1, 64), 0)
    if kind == "conv2d_groups":
        return _case(nn.Conv2d(8, 6, 3, groups=2, padding=1), torch.zeros(1, 8, 3, 3), 1)
    if kind == "conv1d":
        return _case(nn.Conv1d(4, 5, 5, bias=False), torch.zeros(1, 4, 5), 2)
    if kind == "conv_transpose2d":
        return _case(nn.ConvTranspose2d(16, 3, 2, stride=2), torch.zeros(1, 16, 1, 1), 3)
    raise AssertionError(kind)


KINDS = ("linear", "conv2d_groups", "conv1d", "conv_transpose2d")


def _accumulators(c: Case, x: torch.Tensor) -> torch.Tensor:
    """The exact accumulators (int64 ``(B, rows)``) of the program's layer for input codes ``x`` of
    ``(B, K)`` (linear) or ``(B, C_in, kh, kw)`` (conv2d: the one output position reading the whole kernel)."""
    ws = c.weight - c.w_zero_point.reshape((-1,) + (1,) * (c.weight.dim() - 1))
    xs = x - c.x_zero_point
    if c.linear:
        b = c.bias[None] if c.bias is not None else None
        return accumulate(xs[None], ws[None], b, WIDE, op="test")[0]
    acc = conv2d_accumulate(xs, ws, c.bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=c.groups,
                            datapath=WIDE)  # fmt: skip
    return acc.reshape(x.shape[0], -1)


def _adversarial(c: Case, maximize: bool) -> torch.Tensor:
    """One input per weight row: the extreme input code chosen by the sign of each weight offset."""
    lo, hi = DP.a_range
    ws = c.weight - c.w_zero_point.reshape((-1,) + (1,) * (c.weight.dim() - 1))
    up, down = (hi, lo) if maximize else (lo, hi)
    pick = torch.where(ws > 0, up, torch.where(ws < 0, down, c.x_zero_point))
    if c.linear:
        return pick
    rows, cg = ws.shape[0], ws.shape[1]
    per_group = rows // c.groups
    x = torch.full((rows, cg * c.groups, *ws.shape[2:]), c.x_zero_point, dtype=torch.int64)
    for r in range(rows):
        g = r // per_group
        x[r, g * cg : (g + 1) * cg] = pick[r]
    return x


def _per_channel(c: Case, rows: torch.Tensor, reduce: str) -> torch.Tensor:
    channels = c.report.layers[0].acc_max.numel()
    blocks = rows.numel() // channels
    r = rows.reshape(channels, blocks)
    return r.amax(dim=1) if reduce == "max" else r.amin(dim=1)


@pytest.mark.parametrize("kind", KINDS)
def test_the_bound_is_of_the_program_codes_and_adversarial_inputs_reach_it_exactly(kind: str) -> None:
    c = case(kind)
    (layer,) = c.report.layers
    assert layer.input_zero_point == c.x_zero_point and 0 < c.x_zero_point < 15
    if kind == "conv_transpose2d":  # the program's rows (C_out kh kw, C_in, 1, 1) are the codes' (o, u, v) columns
        codes = layer.codes.permute(1, 2, 3, 0).reshape(c.weight.shape)
    else:
        codes = layer.codes.reshape(c.weight.shape)
    assert torch.equal(codes, c.weight)
    for maximize in (True, False):
        acc = _accumulators(c, _adversarial(c, maximize)).diagonal()  # row r's input on row r
        want = layer.acc_max if maximize else layer.acc_min
        assert torch.equal(_per_channel(c, acc, "max" if maximize else "min"), want), (kind, maximize)
    ws = c.weight - c.w_zero_point.reshape((-1,) + (1,) * (c.weight.dim() - 1))
    assert torch.equal(_per_channel(c, ws.reshape(ws.shape[0], -1).abs().sum(1), "max"), layer.l1)


@settings(max_examples=25)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 8))
def test_random_inputs_never_leave_the_bound(kind: str, seed: int, batch: int) -> None:
    c = case(kind)
    (layer,) = c.report.layers
    lo, hi = DP.a_range
    g = torch.Generator().manual_seed(seed)
    shape = (batch, c.weight.shape[1]) if c.linear else (batch, c.weight.shape[1] * c.groups, *c.weight.shape[2:])
    x = torch.randint(lo, hi + 1, shape, generator=g)
    extremes = torch.tensor([lo, hi])  # inputs at the ends of the range, as the worst cases are
    x = torch.where(torch.rand(shape, generator=g) < 0.5, extremes[torch.randint(0, 2, shape, generator=g)], x)
    acc = _accumulators(c, x)
    channels = layer.acc_max.numel()
    per_row = acc.reshape(batch, channels, -1)
    assert bool((per_row <= layer.acc_max[None, :, None]).all()) and bool((per_row >= layer.acc_min[None, :, None]).all())


@pytest.mark.parametrize("kind", ["linear", "conv2d_groups"])
def test_the_programs_overflow_check_fires_exactly_below_the_reported_width(kind: str) -> None:
    c = case(kind)
    (layer,) = c.report.layers
    need = layer.bits_needed
    assert 9 <= need <= 16
    x = torch.cat([_adversarial(c, True), _adversarial(c, False)])
    codes = x.numpy().astype(np.uint8)
    fits = DP.with_(acc_bits=need, overflow="error")
    short = DP.with_(acc_bits=need - 1, overflow="error")
    assert accumulator_bound(c.handle, fits).fits and not accumulator_bound(c.handle, short).fits
    quant.lower(c.model, c.handle, c.example, datapath=fits).run_codes(codes)
    with pytest.raises(OverflowError, match="accumulator overflows"):
        quant.lower(c.model, c.handle, c.example, datapath=short).run_codes(codes)


@settings(max_examples=40)
@given(rows=st.integers(1, 3), k=st.integers(1, 3), bits=st.integers(1, 3), signed=st.booleans(), data=st.data())
def test_product_sum_extremes_is_the_brute_force_extreme(rows: int, k: int, bits: int, signed: bool, data: st.DataObject) -> None:
    lo, hi = (-1, 1) if (bits == 1 and signed) else ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))
    z = 0 if (bits == 1 and signed) else data.draw(st.integers(lo, hi))
    u = torch.tensor(data.draw(st.lists(st.lists(st.integers(-9, 9), min_size=k, max_size=k), min_size=rows, max_size=rows)))
    codes = [-1, 1] if (bits == 1 and signed) else list(range(lo, hi + 1))
    grid = torch.cartesian_prod(*[torch.tensor(codes)] * k).reshape(-1, k)  # every input
    sums = (grid - z) @ u.T  # (inputs, rows)
    low, high = product_sum_extremes(u, lo, hi, z)
    assert torch.equal(low, sums.amin(0)) and torch.equal(high, sums.amax(0))


def test_bits_needed_edges() -> None:
    for a in range(2, 33):
        top = (1 << (a - 1)) - 1
        assert bits_needed(-top - 1, top) == a and bits_needed(0, top + 1) == a + 1 and bits_needed(-top - 2, 0) == a + 1


def test_a_datapath_that_cannot_run_the_weights_is_refused_before_any_work() -> None:
    c = case("linear")
    with pytest.raises(ValueError, match=r"module '0' \(Linear\) cannot run on datapath w2a2_pow2_acc16: weight spec "
                                         r"int4 .* outside the int2 operand range"):  # fmt: skip
        accumulator_bound(c.handle, quant.Datapath.preset("w2a2_pow2_acc16"))
    with pytest.raises(ValueError, match="activation spec uint4 asym .* a_zero_point=False"):
        accumulator_bound(c.handle, DP.with_(a_zero_point=False))
    with pytest.raises(ValueError, match=r"inputs='codes' is not one of 'datapath', 'scheme'"):
        accumulator_bound(c.handle, DP, inputs="codes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="datapath must be a Datapath"):
        accumulator_bound(c.handle, "w4a4_acc16_sat")  # type: ignore[arg-type]


def test_an_uncalibrated_handle_is_refused_naming_the_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    handle = quant.attach(model, datapath_recipe(DP))
    with pytest.raises(ValueError, match=r"module '0' \(Linear\): its weight quantizer has no quantization parameters"):
        accumulator_bound(handle, DP)


def test_layers_without_an_accumulator_or_a_datapath_form_are_listed_as_skipped() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ConvTranspose2d(1, 1, 3, stride=1))
    w4 = datapath_recipe(DP)["*"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"0": {"weight": w4["weight"], "input": w4["input"]},
                                      "1": {"weight": w4["weight"].with_(axis=1), "input": w4["input"]}})  # fmt: skip
    with torch.no_grad(), handle.calibrate():
        model[0](torch.randn(8, 4))
        model[1](torch.randn(2, 1, 4, 4))
    report = accumulator_bound(handle, DP)
    assert [x.name for x in report.layers] == ["0"] and [n for n, _ in report.skipped] == ["1"]
    assert "kernel (3, 3) != stride (1, 1)" in report.skipped[0][1]
    table = report.table()
    assert "| 0 | Linear | 4 |" in table and "| 1 | skipped: a ConvTranspose2d" in table


def test_the_scheme_range_is_no_wider_than_the_datapath_range() -> None:
    c = case("linear")
    narrow = accumulator_bound(c.handle, DP.with_(a_bits=8), inputs="scheme")  # uint4 codes on an 8-bit operand
    wide = accumulator_bound(c.handle, DP.with_(a_bits=8))
    assert narrow.layers[0].input_range == (0, 15) and wide.layers[0].input_range == (0, 255)
    assert torch.equal(narrow.layers[0].acc_max, c.report.layers[0].acc_max)
    assert bool((wide.layers[0].acc_max > narrow.layers[0].acc_max).all())
