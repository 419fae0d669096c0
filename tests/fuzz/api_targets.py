"""Fuzz targets of the public C wrappers (``kernels.api``): each case runs on the C kernels and on the torch
reference, which must agree exactly, or refuse alike.

A case is a valid call of one op (random shapes, dtypes, codes at the range limits, datapath knobs), and
about one case in three carries a hostile change: geometry up to and past 2^31 (and past 2^63), empty
dimensions, multipliers that are zero, negative, denormal, huge or not finite, zero points outside their
range or not integers, output ranges that are empty, biases of the wrong length, groups that do not
divide, axes out of range, tables of the wrong length. The C-only changes (a non-contiguous array, a
dtype the C wrappers do not take) must be refused by C with a ``TypeError``/``ValueError`` naming the
argument. Everything a case holds is picklable; strided views are made in the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from hypothesis import strategies as st

import kernels
import quant.reference as ref
import quant.reference.packing as ref_packing
from quant.contract.attrs import SoftmaxAttrs, softmax_table
from quant.contract.backend import get_backend
from quant.contract.custom import CustomOpAttrs
from quant.contract.datapath import Datapath
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from tests.edge_values import EDGE_INT32, code_limits
from tests.fuzz.server import Verdict
from tests.kernels.support import BACKENDS, bias, codes, datapaths, int32_values, multiplier, output, zero_point

__all__ = ["API_TARGETS", "ApiCase"]

#: Geometry values from small to past every integer width the kernels use.
HUGE: list[int] = [2**15, 2**16, 2**20, 2**29 - 1, 2**30, 2**31 - 1, 2**31, 2**32, 2**62, 2**63, 2**64]
BAD_MULTIPLIERS: list[float] = [0.0, -0.5, math.nan, math.inf, -math.inf, 1e-45, 5e-324, 2.0**31, 2.0**40, 1e300]
BAD_ZERO_POINTS: list[Any] = [-(2**31), 2**31, 2**63, 300, -129, 256, True, 1.5, math.nan, "0"]
CLEAN_ERRORS = (TypeError, ValueError, OverflowError)


@dataclass
class ApiCase:
    """One call: ``op``, positional ``args`` and keyword ``kw`` (NumPy arrays), the ``hostile`` change made
    (or ""), the names of array arguments to pass as strided views, and whether only C is judged."""

    op: str
    args: list[Any]
    kw: dict[str, Any]
    hostile: str = ""
    strided: list[str] = field(default_factory=list)
    c_only: bool = False


# ----------------------------------------------------------------------------- running a case


def _strided(a: np.ndarray) -> np.ndarray:
    """The values of ``a`` as a non-contiguous view (every other element of a twice-wide array)."""
    if not a.ndim:
        return a
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _materialize(case: ApiCase) -> tuple[list[Any], dict[str, Any]]:
    args, kw = list(case.args), dict(case.kw)
    for name in case.strided:
        if name.isdigit():
            args[int(name)] = _strided(args[int(name)])
        else:
            kw[name] = _strided(kw[name])
    return args, kw


Outcome = tuple[str, Any]


def _outcome(fn: Callable[[], Any]) -> Outcome:
    """("ok", int64 array), ("error", (type name, message)) for a clean refusal, ("unclear", text) otherwise."""
    try:
        return "ok", np.asarray(fn()).astype(np.int64)
    except CLEAN_ERRORS as err:
        return "error", (type(err).__name__, str(err))
    except Exception as err:  # noqa: BLE001 - any other exception is the finding
        return "unclear", f"{type(err).__name__}: {err}"


def _message_problem(outcome: Outcome) -> Optional[str]:
    """Why a refusal's message is unclear (a raw status of the kernels, an empty message), or None."""
    if outcome[0] != "error":
        return None
    name, message = outcome[1]
    if "qk_status" in message or not message.strip():
        return f"{name}: {message!r}"
    return None


def _judge(c: Outcome, r: Optional[Outcome]) -> Verdict:
    for side, o in (("C", c), ("reference", r)):
        if o is None:
            continue
        if o[0] == "unclear":
            return Verdict("unclear", f"{side}: {o[1]}")
        problem = _message_problem(o)
        if problem:
            return Verdict("unclear", f"{side}: {problem}")
    if r is None:  # a C-only change: C must refuse it
        if c[0] != "error" or c[1][0] not in ("TypeError", "ValueError"):
            return Verdict("disagree", f"C accepted an input it must refuse: {c[0]}")
        return Verdict("refused")
    if c[0] != r[0]:
        return Verdict("disagree", f"C {c[0]} {_short(c)}, reference {r[0]} {_short(r)}")
    if c[0] == "error":
        if c[1][0] != r[1][0]:
            return Verdict("disagree", f"C raised {c[1]}, reference {r[1]}")
        return Verdict("refused")
    if c[1].shape != r[1].shape or not np.array_equal(c[1], r[1]):
        bad = int(np.count_nonzero(c[1] != r[1])) if c[1].shape == r[1].shape else -1
        return Verdict("disagree", f"results differ: shapes {c[1].shape} / {r[1].shape}, {bad} values")
    return Verdict("ok")


def _short(o: Outcome) -> str:
    return str(o[1])[:300] if o[0] != "ok" else f"shape {o[1].shape}"


def _c_call(case: ApiCase) -> Callable[[], Any]:
    args, kw = _materialize(case)
    fn = getattr(kernels, case.op)
    return lambda: fn(*args, **kw)


def _keyword_ref(op: str) -> Callable[..., Any]:
    """The torch reference of ``op`` called like ``kernels`` (NumPy in, int64 NumPy out)."""
    backend = BACKENDS["torch_ref"]
    if op == "softmax":
        return lambda x, **kw: get_backend("torch_ref").softmax(SoftmaxAttrs.build(**kw), x)
    if op == "pack":
        return lambda c, bits, **kw: ref_packing.pack(torch.from_numpy(c), bits, **kw).numpy()
    if op == "unpack":
        return lambda p, bits, shape, signed=True: ref_packing.unpack(torch.from_numpy(p), bits, shape, signed).numpy()
    if op == "rounding_right_shift":
        return lambda v, k, mode: int(ref.rounding_right_shift(_int64(v, "v"), k, mode))
    if op == "saturating_rounding_doubling_high_mul":
        return lambda a, b, n=31: int(ref.saturating_rounding_doubling_high_mul(_int64(a, "a"), _int64(b, "b"), n))
    return getattr(backend, op)  # type: ignore[no-any-return]


def _int64(v: Any, name: str) -> Any:
    """A scalar for the reference's tensor primitives; a value past int64 is refused as the C wrapper does."""
    if isinstance(v, int) and not -(2**63) <= v < 2**63:
        raise ValueError(f"{name}={v} is outside the int64 range")
    return v


def run_api_case(case: ApiCase) -> Verdict:
    """Run ``case`` on C and (unless C-only) on the reference; the :class:`Verdict` of the pair."""
    c = _outcome(_c_call(case))
    if case.c_only:
        return _judge(c, None)
    args, kw = list(case.args), dict(case.kw)
    fn = _keyword_ref(case.op)
    return _judge(c, _outcome(lambda: fn(*args, **kw)))


def run_custom_case(case: ApiCase) -> Verdict:
    """``detection.nms`` (a custom op with a C twin) on both backends' ``custom``."""
    attrs_kw, xs = case.kw["attrs"], case.args

    def on(name: str) -> Callable[[], Any]:
        return lambda: get_backend(name).custom(CustomOpAttrs.build(**attrs_kw), xs)

    return _judge(_outcome(on("c")), _outcome(on("torch_ref")))


# ----------------------------------------------------------------------------- strategies

_hostile = st.integers(0, 2).map(lambda v: v == 0)  # one case in three carries a hostile change


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _bad_output(draw: st.DrawFn, kw: dict[str, Any]) -> str:
    change = draw(st.sampled_from(["y_bits", "y_range", "y_zero_point"]))
    if change == "y_bits":
        kw["y_bits"] = draw(st.sampled_from([0, 9, -1, 2**31, True, 4.0]))
    elif change == "y_range":
        lo, hi = code_limits(kw.get("y_bits", 8), kw.get("y_signed", True))
        kw["y_min"], kw["y_max"] = draw(st.sampled_from([(hi, lo), (lo - 1, hi), (lo, hi + 1), (2**40, 2**41)]))
        if kw["y_min"] == kw["y_max"]:
            kw["y_max"] = kw["y_min"] - 1
    else:
        kw["y_zero_point"] = draw(st.sampled_from(BAD_ZERO_POINTS))
    return change


def _c_only_change(draw: st.DrawFn, case: ApiCase, arrays: list[str]) -> None:
    """Make one array argument non-contiguous, or of a dtype the C wrappers refuse."""
    name = draw(st.sampled_from(arrays))
    value = case.args[int(name)] if name.isdigit() else case.kw[name]
    if value is None or not isinstance(value, np.ndarray) or value.ndim == 0 or value.shape[-1] == 0:
        return
    case.c_only = True
    if value.size and value.shape[-1] >= 2 and draw(st.booleans()):  # (empty views, one per row: contiguous)
        case.strided = [name]
        case.hostile = f"strided {name}"
    else:
        dtype = draw(st.sampled_from([np.int16, np.int64, np.float32, np.uint16]))
        converted = value.astype(dtype)
        if name.isdigit():
            case.args[int(name)] = converted
        else:
            case.kw[name] = converted
        case.hostile = f"{name} as {np.dtype(dtype).name}"


def _geometry(draw: st.DrawFn) -> dict[str, Any]:
    return dict(
        stride=draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)])),
        padding=draw(st.sampled_from([0, 1, 2, (0, 1), (2, 0)])),
        dilation=draw(st.sampled_from([1, 2, (1, 2)])),
    )


def _huge_geometry(draw: st.DrawFn, kw: dict[str, Any], names: list[str]) -> str:
    name = draw(st.sampled_from(names))
    value = draw(st.sampled_from(HUGE + [0, -1]))
    kw[name] = draw(st.sampled_from([value, (value, 1), (1, value)]))
    if name == "padding" and draw(st.booleans()) and "stride" in names:
        kw["stride"] = draw(st.sampled_from([2**30, 2**31 - 1]))  # a valid 1x1 output around a huge padding
    return f"{name}={kw[name]}"


@st.composite
def conv2d_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    n, h, w = draw(st.sampled_from([0, 1, 1, 2])), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x = codes(draw, (n, c_in, h, w), dp.a_bits, dp.a_signed)
    wt = codes(draw, (c_out, c_in // groups, kh, kw_), dp.w_bits, dp.w_signed)
    kw: dict[str, Any] = dict(
        x_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        w_zero_point=zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point),
        multiplier=multiplier(draw, dp, c_out), groups=groups, datapath=dp, **_geometry(draw), **output(draw),
    )  # fmt: skip
    case = ApiCase("conv2d", [x, wt, bias(draw, dp, c_out)], kw)
    if hostile and draw(_hostile):
        case.hostile = _hostile_conv_linear(draw, case, ["stride", "padding", "dilation"])
    return case


@st.composite
def linear_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    m, k, n = draw(st.sampled_from([0, 1, 2, 5])), draw(st.integers(1, 9)), draw(st.integers(1, 6))
    x = codes(draw, (m, k), dp.a_bits, dp.a_signed)
    wt = codes(draw, (n, k), dp.w_bits, dp.w_signed)
    kw: dict[str, Any] = dict(
        x_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        w_zero_point=zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point),
        multiplier=multiplier(draw, dp, n), datapath=dp, **output(draw),
    )  # fmt: skip
    case = ApiCase("linear", [x, wt, bias(draw, dp, n)], kw)
    if hostile and draw(_hostile):
        case.hostile = _hostile_conv_linear(draw, case, [])
    return case


def _hostile_conv_linear(draw: st.DrawFn, case: ApiCase, geometry: list[str]) -> str:
    kinds = ["multiplier", "zero_point", "output", "bias", "empty", "c_only", "packed"] + (["geometry"] * 3 if geometry else [])
    kind = draw(st.sampled_from(kinds))
    x, w, b = case.args
    kw = case.kw
    if kind == "geometry":
        return _huge_geometry(draw, kw, geometry)
    if kind == "multiplier":
        kw["multiplier"] = draw(st.sampled_from(BAD_MULTIPLIERS + [[0.5] * (w.shape[0] + 1), np.ones((w.shape[0], 1))]))
        return f"multiplier={kw['multiplier']!r}"
    if kind == "zero_point":
        name = draw(st.sampled_from(["x_zero_point", "w_zero_point"]))
        kw[name] = draw(st.sampled_from(BAD_ZERO_POINTS + [np.zeros(w.shape[0] + 1, np.int32)]))
        return f"{name}={kw[name]!r}"
    if kind == "output":
        return _bad_output(draw, kw)
    if kind == "bias":
        lo_hi = draw(st.sampled_from(["long", "int64", "extreme"]))
        if lo_hi == "long":
            case.args[2] = np.zeros(w.shape[0] + 1, np.int32)
        elif lo_hi == "int64":  # the reference takes any integer dtype, the C wrapper int32 only
            case.args[2] = np.zeros(w.shape[0], np.int64)
            case.c_only = True
        else:
            case.args[2] = np.array(draw(st.lists(st.sampled_from(EDGE_INT32), min_size=w.shape[0], max_size=w.shape[0])),
                                    np.int32)  # fmt: skip
        return f"bias {lo_hi}"
    if kind == "empty":
        axis = draw(st.integers(1, x.ndim - 1))
        shape = list(x.shape)
        shape[axis] = 0
        case.args[0] = np.zeros(shape, x.dtype)
        return f"x of shape {tuple(shape)}"
    if kind == "packed":
        dp = kw["datapath"]
        if dp.w_bits in (1, 2, 4):
            case.args[1] = kernels.pack_weights(w, dp.w_bits, dp.w_signed)
            return "packed weights"
        return ""
    _c_only_change(draw, case, ["0", "1", "2"])
    return case.hostile


@st.composite
def requantize_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    shape = tuple(draw(st.lists(st.integers(0 if draw(st.booleans()) else 1, 4), min_size=1, max_size=3)))
    q = int32_values(draw, math.prod(shape)).reshape(shape)
    axis = draw(st.integers(0, len(shape) - 1)) if draw(st.booleans()) else None
    channels = shape[axis] if axis is not None else 1
    out = output(draw)
    for key in ("y_min", "y_max"):
        out.pop(key, None)
    kw: dict[str, Any] = dict(in_zero_point=int(draw(st.sampled_from([0, 1, -7, 2**31 - 1, -(2**31)]))),
                              multiplier=multiplier(draw, dp, max(channels, 2) if axis is not None else 1),
                              axis=axis, datapath=dp, **out)  # fmt: skip
    if axis is not None and channels >= 1 and not isinstance(kw["multiplier"], float):
        kw["multiplier"] = [0.25] * channels if draw(st.booleans()) else kw["multiplier"]
    case = ApiCase("requantize", [q], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["axis", "multiplier", "in_zero_point", "output", "c_only"]))
        if kind == "axis":
            kw["axis"] = draw(st.sampled_from([len(shape), -len(shape) - 1, 2**63, True, 1.0]))
        elif kind == "multiplier":
            kw["multiplier"] = draw(st.sampled_from(BAD_MULTIPLIERS))
        elif kind == "in_zero_point":
            kw["in_zero_point"] = draw(st.sampled_from([2**31, -(2**31) - 1, 2**63, 1.5]))
        elif kind == "output":
            kind = _bad_output(draw, kw)
            kw.pop("y_min", None), kw.pop("y_max", None)
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


def _elementwise_kw(draw: st.DrawFn, dp: Datapath) -> dict[str, Any]:
    return dict(a_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
                b_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point), datapath=dp, **output(draw))  # fmt: skip


@st.composite
def add_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=3)))
    a, b = codes(draw, shape, dp.a_bits, dp.a_signed), codes(draw, shape, dp.a_bits, dp.a_signed)
    if dp.requant == "pow2":
        ma, mb = (2.0 ** -draw(st.integers(-2, 12)) for _ in range(2))
    else:
        ma, mb = (float(2.0 ** draw(st.floats(-14.0, 1.0))) for _ in range(2))
    kw = dict(a_multiplier=ma, b_multiplier=mb, **_elementwise_kw(draw, dp))
    case = ApiCase("add", [a, b], kw)
    if hostile and draw(_hostile):

        def bad_multiplier() -> None:
            kw[draw(st.sampled_from(["a_multiplier", "b_multiplier"]))] = draw(st.sampled_from(BAD_MULTIPLIERS))

        def bad_shape() -> None:
            case.args[1] = codes(draw, shape + (2,), dp.a_bits, dp.a_signed)

        _hostile_binary(draw, case, {"multiplier": bad_multiplier, "shape": bad_shape})
    return case


def _hostile_binary(draw: st.DrawFn, case: ApiCase, changes: dict[str, Callable[[], None]], c_only: bool = True) -> None:
    """One hostile change of a two-operand op: one of its own ``changes``, or a zero point, output or (unless
    ``c_only`` is False) C-only one."""
    kind = draw(st.sampled_from([*changes, "zero_point", "output", *(["c_only"] if c_only else [])]))
    if kind in changes:
        changes[kind]()
    elif kind == "zero_point":
        case.kw[draw(st.sampled_from(["a_zero_point", "b_zero_point"]))] = draw(st.sampled_from(BAD_ZERO_POINTS))
    elif kind == "output":
        kind = _bad_output(draw, case.kw)
    else:
        _c_only_change(draw, case, ["0", "1"])
    case.hostile = case.hostile or kind


@st.composite
def mul_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    a = codes(draw, shape, dp.a_bits, dp.a_signed)
    keep = draw(st.integers(0, len(shape)))
    bshape = shape if draw(st.booleans()) else shape[:keep] + (1,) * (len(shape) - keep)
    b = codes(draw, bshape, dp.a_bits, dp.a_signed)
    kw = dict(multiplier=multiplier(draw, dp, 1), **_elementwise_kw(draw, dp))
    case = ApiCase("mul", [a, b], kw)
    if hostile and draw(_hostile):

        def bad_multiplier() -> None:
            kw["multiplier"] = draw(st.sampled_from(BAD_MULTIPLIERS + [[0.5, 0.5]]))

        def bad_broadcast() -> None:
            case.args[1] = codes(draw, tuple(reversed(shape)) + (3,), dp.a_bits, dp.a_signed)

        _hostile_binary(draw, case, {"multiplier": bad_multiplier, "broadcast": bad_broadcast})
    return case


@st.composite
def softmax_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    bits, signed = draw(st.integers(1, 8)), draw(st.booleans())
    if bits == 1:
        signed = False
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    if draw(st.integers(0, 5)) == 0:
        shape = (0,) + shape
    x = codes(draw, shape, bits, signed)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    y_bits = draw(st.integers(2, 8))
    kw: dict[str, Any] = dict(axis=axis, x_bits=bits, x_signed=signed,
                              table=softmax_table(float(2.0 ** draw(st.floats(-8.0, 2.0))), bits), y_bits=y_bits,
                              y_signed=draw(st.booleans()), datapath=dp)  # fmt: skip
    case = ApiCase("softmax", [x], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["axis", "table", "bits", "c_only"]))
        if kind == "axis":
            kw["axis"] = draw(st.sampled_from([len(shape), -len(shape) - 1, 2**63, None, 1.0]))
        elif kind == "table":
            t = list(kw["table"])
            kw["table"] = draw(st.sampled_from([t[:-1], t + [0], [t[0] + 1] + t[1:], [-1] * len(t), [2**31] * len(t),
                                                list(reversed(t)) if len(t) > 1 and t[0] != t[-1] else t[:-1]]))  # fmt: skip
        elif kind == "bits":
            kw[draw(st.sampled_from(["x_bits", "y_bits"]))] = draw(st.sampled_from([0, 9, 1, -3]))
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def layernorm_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    bits, signed = draw(st.integers(1, 8)), draw(st.booleans())
    length = draw(st.sampled_from([1, 2, 5, 16, 33]))
    lead = tuple(draw(st.lists(st.integers(0 if draw(st.integers(0, 5)) == 0 else 1, 4), max_size=2)))
    x = codes(draw, (*lead, length), bits, signed)
    gamma = codes(draw, (length,), 8, True) if draw(st.booleans()) else None
    kw: dict[str, Any] = dict(x_bits=bits, x_signed=signed, eps_term=int(draw(st.sampled_from([0, 1, 2**40, 2**62 - 1]))),
                              multiplier=multiplier(draw, dp, length), gamma=gamma,
                              gamma_zero_point=int(draw(st.integers(-128, 127))),
                              bias=int32_values(draw, length) if draw(st.booleans()) else None, datapath=dp,
                              **output(draw))  # fmt: skip
    case = ApiCase("layernorm", [x], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["eps", "gamma", "bias", "zero_point", "multiplier", "length", "output", "c_only"]))
        if kind == "eps":
            kw["eps_term"] = draw(st.sampled_from([-1, 2**62, 2**63, 2**64, 1.5, None, True]))
        elif kind == "gamma":
            kw["gamma"] = draw(st.sampled_from([np.zeros(length + 1, np.int8), np.zeros((1, length), np.int8),
                                                np.zeros(0, np.int8)]))  # fmt: skip
        elif kind == "bias":
            kw["bias"] = draw(st.sampled_from([np.zeros(length + 1, np.int32), np.zeros(0, np.int32)]))
        elif kind == "zero_point":
            kw["gamma_zero_point"] = draw(st.sampled_from(BAD_ZERO_POINTS))
        elif kind == "multiplier":
            kw["multiplier"] = draw(st.sampled_from(BAD_MULTIPLIERS + [[0.5] * (length + 1)]))
        elif kind == "length":
            case.args[0] = np.zeros((1, 2**14 + 1), x.dtype)
        elif kind == "output":
            kind = _bad_output(draw, kw)
        else:
            _c_only_change(draw, case, ["0", "gamma", "bias"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def recurrent_cases(draw: st.DrawFn, op: str = "lstm", hostile: bool = True) -> ApiCase:
    gates = 4 if op == "lstm" else 3
    dp: Datapath = draw(datapaths())
    f, h, t = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    n = draw(st.sampled_from([0, 1, 2]))
    x = codes(draw, (n, t, f), dp.a_bits, dp.a_signed)
    w_ih, w_hh = codes(draw, (gates * h, f), dp.w_bits, dp.w_signed), codes(draw, (gates * h, h), dp.w_bits, dp.w_signed)
    kw: dict[str, Any] = dict(
        x_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        h_zero_point=zero_point(draw, dp.a_bits, dp.a_signed, dp.a_zero_point),
        ih_zero_point=[zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point)],
        hh_zero_point=[zero_point(draw, dp.w_bits, dp.w_signed, dp.w_zero_point)],
        ih_multiplier=multiplier(draw, dp, gates * h), hh_multiplier=multiplier(draw, dp, gates * h),
        out_multiplier=multiplier(draw, dp, 1), reverse=draw(st.booleans()), datapath=dp,
    )  # fmt: skip
    if op == "lstm":
        kw["cell_shift"] = draw(st.integers(0, 15))
    else:
        kw["hq_multiplier"] = multiplier(draw, dp, 1)
    b_ih = bias(draw, dp, gates * h)
    b_hh = bias(draw, dp, gates * h)
    case = ApiCase(op, [x, w_ih, w_hh, b_ih, b_hh], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["cell_shift" if op == "lstm" else "reverse", "zero_point", "multiplier", "shape",
                                     "bias", "c_only"]))  # fmt: skip
        if kind == "cell_shift":
            kw["cell_shift"] = draw(st.sampled_from([-1, 16, 2**31, 1.5, None]))
        elif kind == "reverse":
            kw["reverse"] = draw(st.sampled_from([2, -1, None, "yes"]))
        elif kind == "zero_point":
            kw[draw(st.sampled_from(["x_zero_point", "h_zero_point"]))] = draw(st.sampled_from(BAD_ZERO_POINTS))
        elif kind == "multiplier":
            kw[draw(st.sampled_from(["ih_multiplier", "hh_multiplier", "out_multiplier"]))] = draw(
                st.sampled_from(BAD_MULTIPLIERS + [[0.5] * (gates * h + 1)]))
        elif kind == "shape":
            at = draw(st.sampled_from([0, 1, 2]))
            bits, signed = (dp.a_bits, dp.a_signed) if at == 0 else (dp.w_bits, dp.w_signed)
            case.args[at] = codes(draw, draw(st.sampled_from([(3, 5), (1, t, f + 1), (gates * h + 4, 1)])), bits, signed)
        elif kind == "bias":
            case.args[3] = np.zeros(gates * h + 1, np.int32)
        else:
            _c_only_change(draw, case, ["0", "1", "2"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def pool_cases(draw: st.DrawFn, op: str, hostile: bool = True) -> ApiCase:
    signed = draw(st.booleans())
    n, c, h, w = draw(st.sampled_from([0, 1, 2])), draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    x = codes(draw, (n, c, h, w), 8, signed)
    kernel = draw(st.sampled_from([None, 1, 2, 3, (1, 2), (3, 2)]))
    kw: dict[str, Any] = dict(stride=draw(st.sampled_from([None, 1, 2, (2, 1)])))
    if kernel is not None:
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        kw["padding"] = draw(st.sampled_from([0, (min(1, k[0] // 2), 0), (k[0] // 2, k[1] // 2)]))
    if op == "max_pool2d" and kernel is not None:
        kw["dilation"] = draw(st.sampled_from([1, 2, (2, 1)]))
    if op == "avg_pool2d":
        kw["zero_point"] = int(draw(st.integers(*code_limits(8, signed))))
        kw["datapath"] = draw(datapaths())
    case = ApiCase(op, [x, kernel], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["huge", "huge", "padding", "empty", "zero_point", "c_only"]))
        if kind == "huge":
            names = ["stride", "padding"] + (["dilation"] if op == "max_pool2d" else [])
            value = draw(st.sampled_from(HUGE))
            target = draw(st.sampled_from(["kernel"] + names))
            if target == "kernel":
                case.args[1] = draw(st.sampled_from([value, (value, 1)]))
                if draw(st.booleans()):  # a huge kernel around a huge padding: a valid output
                    kw["padding"] = value // 2
                    kw["stride"] = value
            else:
                kw[target] = draw(st.sampled_from([value, (1, value)]))
            kind = f"{target}={value}"
        elif kind == "padding":
            kw["padding"] = draw(st.sampled_from([3, -1, (0, 5)]))
        elif kind == "empty":
            case.args[0] = np.zeros((n, c, 0, w), x.dtype) if draw(st.booleans()) else np.zeros((n, 0, h, w), x.dtype)
        elif kind == "zero_point" and op == "avg_pool2d":
            kw["zero_point"] = draw(st.sampled_from(BAD_ZERO_POINTS))
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def lut_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    bits, signed = draw(st.integers(1, 8)), draw(st.booleans())
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=4)))
    channels = shape[1] if draw(st.booleans()) else 1
    x = codes(draw, shape, bits, signed)
    rng = _rng(draw)
    tdtype = draw(st.sampled_from([np.int8, np.uint8]))
    info = np.iinfo(tdtype)
    entries = 1 << bits
    tshape = (entries,) if channels == 1 else (channels, entries)
    table = rng.integers(int(info.min), int(info.max) + 1, size=tshape).astype(tdtype)
    kw: dict[str, Any] = dict(x_bits=bits, x_signed=signed, channels=channels)
    case = ApiCase("lut", [x, table], kw)
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["table", "channels", "codes", "c_only"]))
        if kind == "table":
            case.args[1] = table.reshape(-1)[:-1].copy()
        elif kind == "channels":
            kw["channels"] = draw(st.sampled_from([0, shape[1] + 1, 2**31, -1]))
        elif kind == "codes":
            kw["x_bits"] = max(1, bits - 1) if bits > 1 else 2
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def pack_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    c = codes(draw, shape, bits, signed)
    sign_arg = draw(st.sampled_from([None, signed]))
    case = ApiCase("pack", [c, bits], {} if sign_arg is None else {"signed": sign_arg})
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["bits", "values", "c_only"]))
        if kind == "bits":
            case.args[1] = draw(st.sampled_from([0, 9, -1, 2**63, True]))
        elif kind == "values":
            case.args[1] = max(1, bits - 1)
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


@st.composite
def unpack_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)))
    c = codes(draw, shape, bits, signed)
    packed = kernels.pack(c, bits, signed=signed)
    case = ApiCase("unpack", [packed, bits, shape], {"signed": signed})
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["shape", "huge", "bits", "c_only"]))
        if kind == "shape":
            case.args[2] = shape[:-1] + (shape[-1] + 3,)
        elif kind == "huge":
            case.args[2] = draw(st.sampled_from([(2**62, 1), (2**32, 2**32), (2**40, 2**40), (-1,), ()]))
        elif kind == "bits":
            case.args[1] = draw(st.sampled_from([0, 9, 3 if bits != 3 else 5]))
        else:
            _c_only_change(draw, case, ["0"])
        case.hostile = case.hostile or kind
    return case


_INT64_EDGES = [-(2**63), -(2**63) + 1, 2**63 - 1, 2**62, -(2**62)] + EDGE_INT32


@st.composite
def shift_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    v = draw(st.sampled_from(_INT64_EDGES) | st.integers(-(2**63), 2**63 - 1))
    k = draw(st.integers(0, 62))
    mode = draw(st.sampled_from(INTEGER_ROUNDING_MODES))
    case = ApiCase("rounding_right_shift", [v, k, mode], {})
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["v", "k", "mode"]))
        if kind == "v":
            case.args[0] = draw(st.sampled_from([2**63, -(2**63) - 1, 2**100, 1.5, True]))
        elif kind == "k":
            case.args[1] = draw(st.sampled_from([-1, 63, 64, 2**31, 2**63, 1.0]))
        else:
            case.args[2] = draw(st.sampled_from(["nearest", "", "HALF_EVEN"]))
        case.hostile = kind
    return case


@st.composite
def srdhm_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    a, b = (draw(st.sampled_from(EDGE_INT32) | st.integers(-(2**31), 2**31 - 1)) for _ in range(2))
    n = draw(st.integers(1, 31))
    case = ApiCase("saturating_rounding_doubling_high_mul", [a, b, n], {})
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["a", "n"]))
        if kind == "a":
            case.args[0] = draw(st.sampled_from([2**31, -(2**31) - 1, 2**63, 0.5]))
        else:
            case.args[2] = draw(st.sampled_from([0, 32, 63, -1, 2**40]))
        case.hostile = kind
    return case


@st.composite
def nms_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    lo, hi = code_limits(bits, signed)
    n, a = draw(st.sampled_from([0, 1, 2])), draw(st.integers(1, 9))
    rng = _rng(draw)
    dtype = np.int8 if signed else np.uint8
    boxes = rng.integers(lo, hi + 1, size=(n, a, 4)).astype(dtype)
    scores = rng.integers(lo, hi + 1, size=(n, a)).astype(dtype)
    params = dict(iou_q16=draw(st.sampled_from([0, 1, 32768, 65535, 65536])), score_min=draw(st.integers(lo - 1, hi + 1)),
                  max_detections=draw(st.integers(1, a + 1)), fill=draw(st.integers(lo, hi)))  # fmt: skip
    attrs = dict(op="detection.nms", params=params, x_bits=[bits, bits], x_signed=[signed, signed], y_bits=bits,
                 y_signed=signed, shape=(a,))  # fmt: skip
    case = ApiCase("detection.nms", [boxes, scores], {"attrs": attrs})
    if hostile and draw(_hostile):
        kind = draw(st.sampled_from(["params", "shape", "codes"]))
        if kind == "params":
            key = draw(st.sampled_from(sorted(params)))
            params[key] = draw(st.sampled_from([-1, 2**31, 2**63, 65537, lo - 2, hi + 2]))
        elif kind == "shape":
            case.args[1] = scores[..., :-1].copy() if a > 1 else np.zeros((n, a + 1), dtype)
        else:
            attrs["x_bits"] = [max(2, bits - 1)] * 2 if bits > 2 else [bits, bits]
        case.hostile = kind
    return case


@st.composite
def matmul_cases(draw: st.DrawFn, hostile: bool = True) -> ApiCase:
    dp: Datapath = draw(datapaths())
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    m, k, n = draw(st.integers(0, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    a = codes(draw, (*batch, m, k), dp.a_bits, dp.a_signed)
    b = codes(draw, (*batch, k, n), dp.a_bits, dp.a_signed)
    kw = dict(k=k, n=n, multiplier=multiplier(draw, dp, 1), **_elementwise_kw(draw, dp))
    case = ApiCase("matmul", [a, b], kw)
    if hostile and draw(_hostile):

        def bad_multiplier() -> None:
            kw["multiplier"] = draw(st.sampled_from(BAD_MULTIPLIERS + [[0.5, 0.5]]))

        def bad_shape() -> None:
            kw[draw(st.sampled_from(["k", "n"]))] = draw(st.sampled_from([0, k + 1, 2**31, -1]))

        # no C-only change: run_matmul hands each backend a contiguous copy (b's matrix is transposed anyway)
        _hostile_binary(draw, case, {"multiplier": bad_multiplier, "shape": bad_shape}, c_only=False)
    return case


def run_matmul_case(case: ApiCase) -> Verdict:
    """matmul (a contract composition over each backend's linear) on both backends."""
    from quant.contract.matmul import MatmulAttrs, run_matmul

    args, kw = _materialize(case)

    def on(name: str) -> Callable[[], Any]:
        return lambda: run_matmul(get_backend(name), MatmulAttrs.build(**kw), *args)

    return _judge(_outcome(on("c")), _outcome(on("torch_ref")))


#: Target name -> (strategy, runner).
API_TARGETS: dict[str, tuple[st.SearchStrategy[ApiCase], Callable[[ApiCase], Verdict]]] = {
    "api.conv2d": (conv2d_cases(), run_api_case),
    "api.linear": (linear_cases(), run_api_case),
    "api.requantize": (requantize_cases(), run_api_case),
    "api.add": (add_cases(), run_api_case),
    "api.mul": (mul_cases(), run_api_case),
    "api.softmax": (softmax_cases(), run_api_case),
    "api.layernorm": (layernorm_cases(), run_api_case),
    "api.lstm": (recurrent_cases("lstm"), run_api_case),
    "api.gru": (recurrent_cases("gru"), run_api_case),
    "api.avg_pool2d": (pool_cases("avg_pool2d"), run_api_case),
    "api.max_pool2d": (pool_cases("max_pool2d"), run_api_case),
    "api.lut": (lut_cases(), run_api_case),
    "api.pack": (pack_cases(), run_api_case),
    "api.unpack": (unpack_cases(), run_api_case),
    "api.rounding_right_shift": (shift_cases(), run_api_case),
    "api.saturating_rounding_doubling_high_mul": (srdhm_cases(), run_api_case),
    "custom.detection.nms": (nms_cases(), run_custom_case),
    "contract.matmul": (matmul_cases(), run_matmul_case),
}
