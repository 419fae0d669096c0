"""One integer LSTM layer (docs/arithmetic.md section 6.6): both backends against the element-by-element oracle on
random sizes, datapaths (every overflow mode), zero points, multipliers, cell scales and directions; the
dequantized hidden states against torch's float LSTM; the contract's tables against sigmoid and tanh; refusals,
alike in both backends."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.contract.datapath import PRESETS, Datapath
from quant.contract.lstm import LSTM_TABLE_SIZE, LstmAttrs, sigmoid_table, tanh_table
from tests.edge_values import code_limits
from tests.kernels import support
from tests.kernels.support import BACKENDS, assert_same
from tests.oracles import ops as oracle

NAMES = sorted(n for n, dp in PRESETS.items() if not (dp.w_bits == 1 and dp.w_signed))


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    dp: Datapath = PRESETS[draw(st.sampled_from(NAMES))]
    if draw(st.booleans()):
        dp = dp.with_(acc_bits=draw(st.sampled_from([12, 16, 24])), overflow=draw(st.sampled_from(["wrap", "saturate", "error"])),
                      bias_bits=min(dp.bias_bits, 12))  # fmt: skip
    f, h, t, n = (draw(st.integers(1, 4)) for _ in range(4))
    n = draw(st.sampled_from([0, n]))
    x = support.codes(draw, (n, t, f), dp.a_bits, dp.a_signed)
    w_ih, w_hh = (support.codes(draw, shape, dp.w_bits, dp.w_signed) for shape in ((4 * h, f), (4 * h, h)))
    lo, hi = dp.bias_range
    bias = st.lists(st.integers(max(lo, -(1 << 12)), min(hi, 1 << 12)), min_size=4 * h, max_size=4 * h)
    b_ih = np.array(draw(bias), np.int32) if draw(st.booleans()) else None
    b_hh = np.array(draw(bias), np.int32) if draw(st.booleans()) else None
    alo, ahi = code_limits(dp.a_bits, dp.a_signed)
    wlo, whi = code_limits(dp.w_bits, dp.w_signed)
    zx, zh = ((draw(st.integers(alo, ahi)) if dp.a_zero_point else 0) for _ in range(2))
    zw = [draw(st.integers(wlo, whi)) for _ in range(4 * h)] if dp.w_zero_point else [0]
    if dp.requant == "pow2":
        mult: Any = st.integers(-2, 12).map(lambda e: 2.0**-e)
        out: Any = st.integers(16, 30).map(lambda e: 2.0**-e)
    else:
        mult, out = st.floats(2.0**-12, 64.0), st.floats(2.0**-32, 2.0**-16)
    return dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, dp=dp, args=dict(
        x_zero_point=zx, h_zero_point=zh, ih_zero_point=zw, hh_zero_point=zw,
        ih_multiplier=[draw(mult) for _ in range(4 * h)], hh_multiplier=draw(mult), out_multiplier=draw(out),
        cell_shift=draw(st.integers(0, 15)), reverse=draw(st.booleans())))  # fmt: skip


def _attrs(case: dict[str, Any]) -> LstmAttrs:
    rows, f = case["w_ih"].shape
    return LstmAttrs.build(hidden=rows // 4, features=f, **case["args"], datapath=case["dp"])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_lstm_matches_the_oracle(backend: str, case: dict[str, Any]) -> None:
    attrs = _attrs(case)
    be = BACKENDS[backend].backend
    try:
        expected = oracle.lstm(case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"], **case["args"],
                               datapath=case["dp"])  # fmt: skip
    except OverflowError:
        with pytest.raises(OverflowError):
            be.lstm(attrs, case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
        return
    got = be.lstm(attrs, case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
    assert_same(got, expected, f"lstm {backend}")


def test_the_tables_are_sigmoid_and_tanh_in_q0_15() -> None:
    sig, tanh = sigmoid_table(), tanh_table()
    assert len(sig) == len(tanh) == LSTM_TABLE_SIZE and sig[256] == 1 << 14 and tanh[256] == 0
    for n in range(0, LSTM_TABLE_SIZE, 7):
        v = (128 * n - (1 << 15)) / 4096.0
        assert abs(sig[n] - (1 << 15) / (1 + math.exp(-v))) <= 0.5
        assert abs(tanh[n] - min((1 << 15) - 1, (1 << 15) * math.tanh(v))) <= 0.5


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("preset", ["tflite_int8", "fbgemm_int8"])
def test_the_hidden_states_are_torchs_lstm_within_about_a_step(backend: str, preset: str) -> None:
    """8-bit operands, 16-bit gates and cell: within one output step of the float LSTM over 16 steps."""
    torch.manual_seed(0)
    f, h, t = 5, 8, 16
    lstm = torch.nn.LSTM(f, h, batch_first=True)
    x = torch.randn(6, t, f)
    with torch.no_grad():
        ref = lstm(x)[0].double()
    dp = Datapath.preset(preset)
    signed = dp.a_signed
    s_x, s_h = float(x.abs().max()) / 127, 2.0 / 255
    z = 0 if signed else 128

    def codes(w: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        s = w.abs().amax(dim=1) / 127
        return torch.round(w / s[:, None]).numpy().astype(np.int8), s.double()

    params = dict(lstm.named_parameters())
    wi, si = codes(params["weight_ih_l0"].detach())
    wh, sh = codes(params["weight_hh_l0"].detach())
    bi = torch.round(params["bias_ih_l0"].detach().double() / (s_x * si)).numpy().astype(np.int32)
    bh = torch.round(params["bias_hh_l0"].detach().double() / (s_h * sh)).numpy().astype(np.int32)
    xq = np.clip(np.round(x.numpy() / s_x) + z, -128 if signed else 0, 127 if signed else 255)
    xq = xq.astype(np.int8 if signed else np.uint8)
    attrs = LstmAttrs.build(hidden=h, features=f, x_zero_point=z, h_zero_point=z, ih_zero_point=[0], hh_zero_point=[0],
                            ih_multiplier=(s_x * si * 4096).tolist(), hh_multiplier=(s_h * sh * 4096).tolist(),
                            out_multiplier=2.0**-30 / s_h, cell_shift=11, datapath=dp)  # fmt: skip
    y = BACKENDS[backend].backend.lstm(attrs, xq, wi, wh, bi, bh)
    err = (torch.from_numpy((y.astype(np.float64) - z) * s_h) - ref).abs()
    assert float(err.max()) <= 1.5 * s_h


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_bad_operands_are_refused_alike(backend: str) -> None:
    dp = PRESETS["tflite_int8"]
    attrs = LstmAttrs.build(hidden=2, features=3, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
                            ih_multiplier=1.0, hh_multiplier=1.0, out_multiplier=2.0**-20, cell_shift=11, datapath=dp)  # fmt: skip
    be = BACKENDS[backend].backend
    x, wi, wh = np.zeros((1, 4, 3), np.int8), np.zeros((8, 3), np.int8), np.zeros((8, 2), np.int8)
    with pytest.raises(ValueError, match="x must be \\(N, T, 3\\)"):
        be.lstm(attrs, np.zeros((1, 4, 2), np.int8), wi, wh, None, None)
    with pytest.raises(ValueError, match="w_ih must be \\(8, 3\\) and w_hh \\(8, 2\\)"):
        be.lstm(attrs, x, wi[:4], wh, None, None)
    with pytest.raises(ValueError, match="bias has 7 values, expected one per output channel \\(8\\)"):
        be.lstm(attrs, x, wi, wh, np.zeros(7, np.int32), None)
    with pytest.raises(ValueError, match="at least one step"):
        be.lstm(attrs, np.zeros((1, 0, 3), np.int8), wi, wh, None, None)
    assert be.lstm(attrs, np.zeros((0, 4, 3), np.int8), wi, wh, None, None).shape == (0, 4, 2)


@pytest.mark.parametrize(("change", "message"), [
    ({"cell_shift": 16}, "cell_shift=16 must be in 0..15"),
    ({"ih_zero_point": [0, 0, 0]}, "ih_zero_point must hold 1 or 4 \\* hidden = 8 values"),
    ({"ih_multiplier": [1.0] * 3}, "multiplier has 3 values"),
    ({"out_multiplier": [1.0, 1.0]}, "multiplier has 2 values"),
    ({"y_bits": 4}, "the output is the next step's operand"),
    ({"hidden": 0}, "hidden=0 must be in"),
])  # fmt: skip
def test_bad_attributes_are_refused_by_name(change: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = dict(hidden=2, features=3, x_zero_point=0, h_zero_point=0, ih_zero_point=[0],
                                hh_zero_point=[0], ih_multiplier=1.0, hh_multiplier=1.0, out_multiplier=2.0**-20,
                                cell_shift=11, datapath=PRESETS["tflite_int8"])  # fmt: skip
    with pytest.raises(ValueError, match=message):
        LstmAttrs.build(**{**args, **change})
