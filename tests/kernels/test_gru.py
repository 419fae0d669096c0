"""One integer GRU layer (docs/arithmetic.md section 6.7): both backends against the element-by-element oracle on
random sizes, datapaths (every overflow mode), zero points, multipliers and directions; the dequantized hidden
states against torch's float GRU; refusals, alike in both backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.contract.datapath import PRESETS, Datapath
from quant.contract.gru import GruAttrs
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
    f, h, t = (draw(st.integers(1, 4)) for _ in range(3))
    n = draw(st.sampled_from([0, 1, 3]))
    x = support.codes(draw, (n, t, f), dp.a_bits, dp.a_signed)
    w_ih, w_hh = (support.codes(draw, shape, dp.w_bits, dp.w_signed) for shape in ((3 * h, f), (3 * h, h)))
    lo, hi = dp.bias_range
    bias = st.lists(st.integers(max(lo, -(1 << 12)), min(hi, 1 << 12)), min_size=3 * h, max_size=3 * h)
    b_ih = np.array(draw(bias), np.int32) if draw(st.booleans()) else None
    b_hh = np.array(draw(bias), np.int32) if draw(st.booleans()) else None
    alo, ahi = code_limits(dp.a_bits, dp.a_signed)
    wlo, whi = code_limits(dp.w_bits, dp.w_signed)
    zx, zh = ((draw(st.integers(alo, ahi)) if dp.a_zero_point else 0) for _ in range(2))
    zw = [draw(st.integers(wlo, whi)) for _ in range(3 * h)] if dp.w_zero_point else [0]
    if dp.requant == "pow2":
        mult: Any = st.integers(-2, 12).map(lambda e: 2.0**-e)
        hq: Any = st.integers(-12, -4).map(lambda e: 2.0**-e)
        out: Any = st.integers(16, 30).map(lambda e: 2.0**-e)
    else:
        mult, hq, out = st.floats(2.0**-12, 64.0), st.floats(16.0, 4096.0), st.floats(2.0**-32, 2.0**-16)
    return dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, dp=dp, args=dict(
        x_zero_point=zx, h_zero_point=zh, ih_zero_point=zw, hh_zero_point=zw,
        ih_multiplier=[draw(mult) for _ in range(3 * h)], hh_multiplier=draw(mult), hq_multiplier=draw(hq),
        out_multiplier=draw(out), reverse=draw(st.booleans())))  # fmt: skip


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_gru_matches_the_oracle(backend: str, case: dict[str, Any]) -> None:
    rows, f = case["w_ih"].shape
    attrs = GruAttrs.build(hidden=rows // 3, features=f, **case["args"], datapath=case["dp"])
    be = BACKENDS[backend].backend
    try:
        expected = oracle.gru(case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"], **case["args"],
                              datapath=case["dp"])  # fmt: skip
    except OverflowError:
        with pytest.raises(OverflowError):
            be.gru(attrs, case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
        return
    got = be.gru(attrs, case["x"], case["w_ih"], case["w_hh"], case["b_ih"], case["b_hh"])
    assert_same(got, expected, f"gru {backend}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_hidden_states_are_torchs_gru_within_about_a_step(backend: str) -> None:
    """8-bit operands, 16-bit gates: within 1.5 output steps of the float GRU over 16 steps."""
    torch.manual_seed(0)
    f, h, t = 5, 8, 16
    gru = torch.nn.GRU(f, h, batch_first=True)
    x = torch.randn(6, t, f)
    with torch.no_grad():
        ref = gru(x)[0].double()
    dp = Datapath.preset("tflite_int8")
    s_x, s_h = float(x.abs().max()) / 127, 1.0 / 127
    params = dict(gru.named_parameters())

    def codes(w: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        s = w.abs().amax(dim=1) / 127
        return torch.round(w / s[:, None]).numpy().astype(np.int8), s.double()

    wi, si = codes(params["weight_ih_l0"].detach())
    wh, sh = codes(params["weight_hh_l0"].detach())
    bi = torch.round(params["bias_ih_l0"].detach().double() / (s_x * si)).numpy().astype(np.int32)
    bh = torch.round(params["bias_hh_l0"].detach().double() / (s_h * sh)).numpy().astype(np.int32)
    xq = np.clip(np.round(x.numpy() / s_x), -128, 127).astype(np.int8)
    attrs = GruAttrs.build(hidden=h, features=f, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
                           ih_multiplier=(s_x * si * 4096).tolist(), hh_multiplier=(s_h * sh * 4096).tolist(),
                           hq_multiplier=s_h * 2**15, out_multiplier=2.0**-30 / s_h, datapath=dp)  # fmt: skip
    y = BACKENDS[backend].backend.gru(attrs, xq, wi, wh, bi, bh)
    err = (torch.from_numpy(y.astype(np.float64) * s_h) - ref).abs()
    assert float(err.max()) <= 1.5 * s_h


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_bad_operands_are_refused_alike(backend: str) -> None:
    attrs = GruAttrs.build(hidden=2, features=3, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
                           ih_multiplier=1.0, hh_multiplier=1.0, hq_multiplier=256.0, out_multiplier=2.0**-20,
                           datapath=PRESETS["tflite_int8"])  # fmt: skip
    be = BACKENDS[backend].backend
    x, wi, wh = np.zeros((1, 4, 3), np.int8), np.zeros((6, 3), np.int8), np.zeros((6, 2), np.int8)
    with pytest.raises(ValueError, match="w_ih must be \\(6, 3\\) and w_hh \\(6, 2\\)"):
        be.gru(attrs, x, wi[:4], wh, None, None)
    with pytest.raises(ValueError, match="bias has 5 values, expected one per output channel \\(6\\)"):
        be.gru(attrs, x, wi, wh, np.zeros(5, np.int32), None)
    assert be.gru(attrs, np.zeros((0, 4, 3), np.int8), wi, wh, None, None).shape == (0, 4, 2)
    with pytest.raises(ValueError, match="hq_multiplier|multiplier has 2 values"):
        GruAttrs.build(hidden=2, features=3, x_zero_point=0, h_zero_point=0, ih_zero_point=[0], hh_zero_point=[0],
                       ih_multiplier=1.0, hh_multiplier=1.0, hq_multiplier=[1.0, 1.0], out_multiplier=1.0,
                       datapath=PRESETS["tflite_int8"])  # fmt: skip
