"""Shared pieces of the kernel tests: backends behind one interface, strategies, exact comparison.

``BACKENDS`` maps a backend name of :mod:`quant.contract.backend` (``"torch_ref"``, ``"c"``) to
a :class:`KeywordBackend`: the op methods of ``docs/arithmetic.md`` called with the keyword
arguments of ``kernels`` on NumPy arrays, through the op's validated record and the backend
protocol, returning int64 NumPy arrays, so a test can run the same case through either
backend and compare.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from hypothesis import strategies as st

import kernels
from kernels.backend import CKernels
from quant.contract.attrs import (
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    MulAttrs,
    RequantizeAttrs,
)
from quant.contract.backend import Backend, get_backend
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs
from quant.contract.datapath import OVERFLOW_MODES, PRESETS, REQUANT_MODES, Datapath
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from tests.edge_values import EDGE_INT32, code_limits

Array = np.ndarray


def assert_same(actual: Array, expected: Array, what: str) -> None:
    """Exact equality of integer arrays; a failure names the first differing index and both values."""
    act = np.asarray(actual).astype(np.int64)
    exp = np.asarray(expected).astype(np.int64)
    assert act.shape == exp.shape, f"{what}: shape {act.shape} != expected {exp.shape}"
    bad = np.argwhere(act != exp)
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {act.size} values differ; first at index {idx}: got {act[idx]}, expected {exp[idx]}"
        )


# ----------------------------------------------------------------------------- backends


class KeywordBackend:
    """A :class:`quant.contract.backend.Backend` called like ``kernels``: keyword arguments become the op's
    validated record (:mod:`quant.contract.attrs`), then the backend runs it; results as int64 arrays."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    def conv2d(self, x: Array, w: Any, bias: Optional[Array], **kw: Any) -> Array:
        attrs = Conv2dAttrs.build(w_shape=tuple(w.shape), **kw)
        return self.backend.conv2d(attrs, x, w, bias).astype(np.int64)

    def linear(self, x: Array, w: Any, bias: Optional[Array], **kw: Any) -> Array:
        attrs = LinearAttrs.build(w_shape=tuple(w.shape), **kw)
        return self.backend.linear(attrs, x, w, bias).astype(np.int64)

    def requantize(self, q: Array, **kw: Any) -> Array:
        return self.backend.requantize(RequantizeAttrs.build(**kw), q).astype(np.int64)

    def add(self, a: Array, b: Array, **kw: Any) -> Array:
        return self.backend.add(AddAttrs.build(**kw), a, b).astype(np.int64)

    def mul(self, a: Array, b: Array, **kw: Any) -> Array:
        return self.backend.mul(MulAttrs.build(**kw), a, b).astype(np.int64)

    def avg_pool2d(self, x: Array, *args: Any, **kw: Any) -> Array:
        return self.backend.avg_pool2d(AvgPool2dAttrs.build(*args, **kw), x).astype(np.int64)

    def max_pool2d(self, x: Array, *args: Any, **kw: Any) -> Array:
        return self.backend.max_pool2d(MaxPool2dAttrs.build(*args, **kw), x).astype(np.int64)

    def lut(self, x: Array, table: Array, **kw: Any) -> Array:
        return self.backend.lut(LutAttrs.build(**kw), x, table).astype(np.int64)

    def lstm(self, x: Array, w_ih: Any, w_hh: Any, b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
             **kw: Any) -> Array:  # fmt: skip
        shape_ih, shape_hh = tuple(getattr(w_ih, "shape", ())), tuple(getattr(w_hh, "shape", ()))
        if len(shape_ih) != 2 or len(shape_hh) != 2:
            raise ValueError(f"lstm: w_ih and w_hh must be 2-D, got {shape_ih} and {shape_hh}")
        attrs = LstmAttrs.build(hidden=shape_hh[1], features=shape_ih[1], **kw)
        return self.backend.lstm(attrs, x, w_ih, w_hh, b_ih, b_hh).astype(np.int64)

    def gru(self, x: Array, w_ih: Any, w_hh: Any, b_ih: Optional[Array] = None, b_hh: Optional[Array] = None,
            **kw: Any) -> Array:  # fmt: skip
        shape_ih, shape_hh = tuple(getattr(w_ih, "shape", ())), tuple(getattr(w_hh, "shape", ()))
        if len(shape_ih) != 2 or len(shape_hh) != 2:
            raise ValueError(f"gru: w_ih and w_hh must be 2-D, got {shape_ih} and {shape_hh}")
        attrs = GruAttrs.build(hidden=shape_hh[1], features=shape_ih[1], **kw)
        return self.backend.gru(attrs, x, w_ih, w_hh, b_ih, b_hh).astype(np.int64)

    def layernorm(self, x: Array, *, gamma: Optional[Array] = None, bias: Optional[Array] = None, **kw: Any) -> Array:
        if not isinstance(x, np.ndarray) or x.ndim < 1:
            raise TypeError("layernorm: x must be a numpy.ndarray of at least one dimension")
        attrs = LayerNormAttrs.build(length=int(x.shape[-1]), **kw)
        return self.backend.layernorm(attrs, x, gamma, bias).astype(np.int64)


def c_kernels(isa: str) -> KeywordBackend:
    """The C backend with a fixed instruction set for the hot loops."""
    return KeywordBackend(CKernels(isa))


#: Every instruction set this machine runs (results must be identical across them).
C_ISAS: list[str] = [i for i in ("portable", "avx2", "avx512_vnni") if kernels.isa_available(i)]
BACKENDS: dict[str, KeywordBackend] = {name: KeywordBackend(get_backend(name)) for name in ("torch_ref", "c")}


def outcome(fn: Callable[[], Array]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("error", exception type)`` for OverflowError/ValueError."""
    try:
        return "ok", fn()
    except (OverflowError, ValueError) as err:
        return "error", type(err)


def assert_same_outcome(actual: tuple[str, Any], expected: tuple[str, Any], what: str) -> None:
    """Both raised the same exception type, or both returned equal arrays."""
    assert actual[0] == expected[0], f"{what}: got {actual}, expected {expected}"
    if actual[0] == "ok":
        assert_same(actual[1], expected[1], what)
    else:
        assert actual[1] is expected[1], f"{what}: raised {actual[1].__name__}, expected {expected[1].__name__}"


# ----------------------------------------------------------------------------- strategies

PRESET_LIST: list[Datapath] = list(PRESETS.values())
PRESETS_BY_NAME: dict[str, Datapath] = dict(PRESETS)


@st.composite
def datapaths(draw: st.DrawFn) -> Datapath:
    """A preset (sometimes with its overflow/accumulator changed) or a random valid datapath."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.sampled_from(PRESET_LIST))
    if choice == 1:
        base = draw(st.sampled_from(PRESET_LIST))
        acc = draw(st.sampled_from([8, 12, 16, 24, 32]))
        return base.with_(acc_bits=acc, overflow=draw(st.sampled_from(OVERFLOW_MODES)), bias_bits=min(base.bias_bits, 32))
    w_bits, a_bits = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    w_signed, a_signed = draw(st.booleans()), draw(st.booleans())
    w_zp = False if (w_bits == 1 and w_signed) else draw(st.booleans())
    a_zp = False if (a_bits == 1 and a_signed) else draw(st.booleans())
    return Datapath(
        name="random",
        w_bits=w_bits, w_signed=w_signed, w_zero_point=w_zp,
        a_bits=a_bits, a_signed=a_signed, a_zero_point=a_zp,
        acc_bits=draw(st.integers(8, 32)),
        overflow=draw(st.sampled_from(OVERFLOW_MODES)),
        requant=draw(st.sampled_from(REQUANT_MODES)),
        multiplier_bits=draw(st.integers(8, 31)),
        fixed_point_rounding=draw(st.sampled_from(("double", "single"))),
        rounding=draw(st.sampled_from(INTEGER_ROUNDING_MODES)),
        multiplier_rounding=draw(st.sampled_from(INTEGER_ROUNDING_MODES)),
        zero_point_order=draw(st.sampled_from(("after_rounding", "before_rounding"))),
        bias_bits=draw(st.integers(8, 32)),
    )  # fmt: skip


def codes(draw: Callable[..., Any], shape: tuple[int, ...], bits: int, signed: bool) -> Array:
    """Random codes of ``shape`` (int8 when signed, else uint8), biased toward the range limits."""
    lo, hi = code_limits(bits, signed)
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(("uniform", "limits", "mixed")))
    if style == "uniform":
        v = rng.integers(lo, hi + 1, size=n)
    elif style == "limits":
        v = rng.choice(np.array([lo, hi]), size=n)
    else:
        v = np.where(rng.random(n) < 0.3, rng.choice(np.array([lo, hi]), size=n), rng.integers(lo, hi + 1, size=n))
    if bits == 1 and signed:
        v = np.where(v == 0, 1, v)
    return v.reshape(shape).astype(np.int8 if signed else np.uint8)


def zero_point(draw: Callable[..., Any], bits: int, signed: bool, supported: bool) -> int:
    if not supported or (bits == 1 and signed):
        return 0
    lo, hi = code_limits(bits, signed)
    return int(draw(st.sampled_from([lo, hi]) | st.integers(lo, hi)))


def multiplier(draw: st.DrawFn, dp: Datapath, channels: int) -> Any:
    """A valid multiplier for ``dp``: a float, a list, or a float32/float64 array (per channel)."""
    per_channel = channels > 1 and draw(st.booleans())
    count = channels if per_channel else 1

    def one() -> float:
        if dp.requant == "pow2":
            return 2.0 ** -draw(st.integers(-3, 24))
        exp = draw(st.floats(-22.0, 3.0))
        return float(2.0**exp)

    values = [one() for _ in range(count)]
    if not per_channel:
        form = draw(st.sampled_from(("float", "np32")))
        return np.float32(values[0]) if form == "np32" and dp.requant != "pow2" else values[0]
    form = draw(st.sampled_from(("list", "f64", "f32")))
    if form == "list":
        return values
    return np.array(values, dtype=np.float32 if (form == "f32" and dp.requant != "pow2") else np.float64)


def bias(draw: st.DrawFn, dp: Datapath, channels: int) -> Optional[Array]:
    if draw(st.integers(0, 3)) == 0:
        return None
    lo, hi = dp.bias_range
    scale = 1 << draw(st.integers(0, dp.bias_bits - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    v = rng.integers(max(lo, -scale), min(hi, scale) + 1, size=channels)
    if draw(st.integers(0, 5)) == 0:
        v[rng.integers(0, channels)] = draw(st.sampled_from([lo, hi]))
    return v.astype(np.int32)


def output(draw: st.DrawFn) -> dict[str, Any]:
    """y_bits, y_signed, y_zero_point and an optional fused clamp."""
    bits = draw(st.integers(1, 8))
    signed = False if bits == 1 else draw(st.booleans())
    lo, hi = code_limits(bits, signed)
    kw: dict[str, Any] = {"y_bits": bits, "y_signed": signed, "y_zero_point": int(draw(st.integers(lo, hi)))}
    if draw(st.integers(0, 3)) == 0:
        kw["y_min"] = int(draw(st.integers(lo, hi)))
        kw["y_max"] = int(draw(st.integers(kw["y_min"], hi)))
    return kw


def weight_arg(draw: st.DrawFn, w: Array, dp: Datapath) -> Any:
    """``w`` as given, or packed when the datapath's weight width is 1, 2 or 4 bits."""
    if dp.w_bits in (1, 2, 4) and draw(st.booleans()):
        return kernels.pack_weights(w, dp.w_bits, dp.w_signed)
    return w


def int32_values(draw: st.DrawFn, n: int) -> Array:
    """int32 values mixing the edge values of tests/edge_values.py and random ones."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    edges = np.array(EDGE_INT32, dtype=np.int64)
    scale = 1 << draw(st.integers(0, 31))
    rand = rng.integers(-scale, scale, size=n)
    pick = rng.random(n) < 0.4
    return np.where(pick, rng.choice(edges, size=n), rand).astype(np.int32)


def conv_output_size(h: int, k: int, s: int, p: int, d: int) -> int:
    return math.floor((h + 2 * p - d * (k - 1) - 1) / s) + 1
