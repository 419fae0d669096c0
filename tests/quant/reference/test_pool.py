"""avg_pool2d and max_pool2d (docs §6) against Python window loops and torch's float pooling."""

from __future__ import annotations

from typing import Any

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from quant import Datapath
from quant.reference import avg_pool2d, max_pool2d
from tests.oracles import rounding
from tests.oracles.exact import assert_exact

MODES = ("half_away", "half_up", "half_even", "floor")


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    glob = draw(st.booleans())
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    x = np.array(draw(st.lists(st.integers(-128, 255), min_size=n * c * h * w, max_size=n * c * h * w))).reshape(n, c, h, w)
    if glob:
        return dict(x=x, k=None, s=None, p=(0, 0), d=(1, 1))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh = draw(st.integers(1, max(1, (h + 2 * ph - 1) // max(kh - 1, 1)))) if kh > 1 else 1
    dw = draw(st.integers(1, max(1, (w + 2 * pw - 1) // max(kw - 1, 1)))) if kw > 1 else 1
    s = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    return dict(x=x, k=(kh, kw), s=s, p=(ph, pw), d=(min(dh, 2), min(dw, 2)))


def _windows(c: dict[str, Any]) -> tuple[tuple[int, int, int, int], list[list[int]]]:
    x = c["x"]
    assert isinstance(x, np.ndarray)
    n, ch, h, w = x.shape
    k = c["k"] or (h, w)
    s = c["s"] or k
    (ph, pw), (dh, dw) = c["p"], c["d"]
    ho = (h + 2 * ph - dh * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * pw - dw * (k[1] - 1) - 1) // s[1] + 1
    out = []
    for b in range(n):
        for cc in range(ch):
            for i in range(ho):
                for j in range(wo):
                    vals = []
                    for u in range(k[0]):
                        for v in range(k[1]):
                            r, t = i * s[0] + u * dh - ph, j * s[1] + v * dw - pw
                            if 0 <= r < h and 0 <= t < w:
                                vals.append(int(x[b, cc, r, t]))
                    out.append(vals)
    return (n, ch, ho, wo), out


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40)
@given(c=pool_cases(), z=st.integers(-128, 255))
def test_avg_pool2d_matches_window_loops(mode: str, c: dict[str, Any], z: int) -> None:
    c["d"] = (1, 1)
    shape, wins = _windows(c)
    expected = [rounding.round_rational(Fraction(sum(v) - len(v) * z, len(v)), mode) + z for v in wins]
    got = avg_pool2d(torch.from_numpy(c["x"]), c["k"], c["s"], c["p"], zero_point=z,
                     datapath=Datapath(rounding=mode))
    assert_exact(got, np.array(expected).reshape(shape), f"avg_pool2d {mode}")


@settings(max_examples=60)
@given(c=pool_cases())
def test_max_pool2d_matches_loops_and_torch(c: dict[str, Any]) -> None:
    shape, wins = _windows(c)
    got = max_pool2d(torch.from_numpy(c["x"]), c["k"], c["s"], c["p"], c["d"])
    assert_exact(got, np.array([max(v) for v in wins]).reshape(shape), "max_pool2d")
    if c["k"] is not None:
        ref = F.max_pool2d(torch.from_numpy(c["x"]).double(), c["k"], c["s"], c["p"], c["d"])
        assert_exact(got, ref.to(torch.int64), "max_pool2d vs torch")


def test_avg_pool2d_half_even_matches_torch_count_exclude_pad() -> None:
    """torch's float64 average (count_include_pad=False) rounded half-even is the same for codes with z = 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 9, 8), generator=g)
    got = avg_pool2d(x, 3, 2, 1, zero_point=0, datapath=Datapath.preset("fbgemm_int8"))
    ref = torch.round(F.avg_pool2d(x.double(), 3, 2, 1, count_include_pad=False))
    assert_exact(got, ref.to(torch.int64), "avg_pool2d vs torch")


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 2, padding=2), ValueError, "at most half"),
        (lambda: max_pool2d(torch.zeros(1, 4, 4, dtype=torch.int64), 2), ValueError, "4 dimensions"),
        (lambda: max_pool2d(torch.zeros(1, 1, 4, 4), 2), TypeError, "integer"),
        (lambda: max_pool2d(torch.zeros(1, 1, 2, 2, dtype=torch.int64), 3), ValueError, "empty"),
        (lambda: avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64), None, 2, zero_point=0,
                            datapath=Datapath()), ValueError, "global"),
        (lambda: avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 2, zero_point=0.5,  # type: ignore[arg-type]
                            datapath=Datapath()), TypeError, "zero_point"),
    ],
)
def test_pool_errors(call: Callable[[], object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()
