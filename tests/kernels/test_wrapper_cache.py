"""The cheap hot path of the conv2d/linear wrappers (issue 13, item 4) gives what a cold call gives.

``kernels.api`` keeps, per record, its C structs and the checks and geometry of each input shape
(``_Prepared``), one scratch buffer per thread, and the records ``kernels.conv2d``/``linear``
build from their arguments; ``kernels.backend`` keeps the validated wrapper of each packed
program parameter. Each test here compares a warm call against a cold one (a fresh copy of the
record, which no cache knows) and the torch reference: equal codes, equal exceptions with equal
messages, and every operand read anew on each call.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
from typing import Any, Callable, Union

import numpy as np
import pytest

import kernels
from kernels import _qk, api
from kernels._abi import conv2d_geometry, weights_struct
from kernels.status import named_status
from kernels.backend import CKernels
from quant.contract.attrs import Conv2dAttrs, LinearAttrs
from quant.contract.backend import get_backend
from quant.contract.datapath import PRESETS, Datapath
from quant.ir.program import PackedTensor

Record = Union[Conv2dAttrs, LinearAttrs]
REFERENCE = get_backend("torch_ref")
C = CKernels()


def _codes(rng: np.random.Generator, shape: tuple[int, ...], bits: int, signed: bool) -> Any:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = rng.integers(lo, hi + 1, shape)
    if bits == 1 and signed:
        values = np.where(values == 0, 1, values)
    return values.astype(np.int8 if signed else np.uint8)


def _case(preset: str, kind: str, seed: int = 0) -> tuple[Record, Any, Any, Any]:
    """A record and its operands: conv 3x3 4->6 (padding 1, stride 2) on 2x4x7x5, or linear 9 -> 6 on 3 rows."""
    rng = np.random.default_rng(seed)
    dp = PRESETS[preset]
    c_out = 6
    lo, hi = dp.bias_range
    bias = rng.integers(max(lo, -3000), min(hi, 3000) + 1, c_out).astype(np.int32)
    k = 4 * 3 * 3 if kind == "conv" else 9
    scale = 64.0 / (k * (1 << (dp.a_bits - 1)) * (1 << max(dp.w_bits - 1, 0)))  # outputs spread over the codes
    multiplier: Any = 2.0 ** round(np.log2(scale)) if dp.requant == "pow2" else [scale * (i + 1) / c_out for i in range(c_out)]
    zx = 1 if dp.a_zero_point and not dp.a_signed else 0
    common: dict[str, Any] = dict(x_zero_point=zx, w_zero_point=0, y_zero_point=-2, multiplier=multiplier, datapath=dp)
    if kind == "conv":
        w = _codes(rng, (c_out, 4, 3, 3), dp.w_bits, dp.w_signed)
        x = _codes(rng, (2, 4, 7, 5), dp.a_bits, dp.a_signed)
        attrs: Record = Conv2dAttrs.build(w_shape=w.shape, padding=1, stride=2, **common)
    else:
        w = _codes(rng, (c_out, 9), dp.w_bits, dp.w_signed)
        x = _codes(rng, (3, 9), dp.a_bits, dp.a_signed)
        attrs = LinearAttrs.build(w_shape=w.shape, **common)
    return attrs, x, w, bias


def _run(backend: Any, attrs: Record, x: Any, w: Any, bias: Any) -> Any:
    return (backend.conv2d if isinstance(attrs, Conv2dAttrs) else backend.linear)(attrs, x, w, bias)


def _cold(attrs: Record) -> Record:
    """An equal record that no cache has seen (the caches find records by identity)."""
    return dataclasses.replace(attrs)


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except (TypeError, ValueError, OverflowError) as err:
        return type(err).__name__, str(err)


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> None:
    assert a[0] == b[0], (a, b)
    if a[0] == "ok":
        assert a[1].dtype == b[1].dtype and a[1].shape == b[1].shape and np.array_equal(a[1], b[1])
    else:
        assert a[1] == b[1]


PRESET_NAMES = ["tflite_int8", "fbgemm_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_warm_calls_equal_cold_calls_and_the_reference(preset: str, kind: str) -> None:
    attrs, x, w, bias = _case(preset, kind)
    expected = _run(REFERENCE, attrs, x, w, bias)
    dp = attrs.datapath
    weights = [w] + ([api.pack_weights(w, dp.w_bits, dp.w_signed)] if dp.w_bits in (1, 2, 4) else [])
    for wt in weights:
        for b in (bias, None):
            want = _run(REFERENCE, attrs, x, w, b)
            for _ in range(3):  # the first call fills the caches, the others use them
                _same(_outcome(lambda: _run(C, attrs, x, wt, b)), ("ok", want))
            _same(_outcome(lambda: _run(C, _cold(attrs), x, wt, b)), ("ok", want))
    assert np.array_equal(_run(C, attrs, x, w, bias), expected)
    # another batch size on the same record: its own geometry, and both shapes stay right
    x1 = np.ascontiguousarray(x[:1])
    _same(_outcome(lambda: _run(C, attrs, x1, w, bias)), ("ok", _run(REFERENCE, attrs, x1, w, bias)))
    _same(_outcome(lambda: _run(C, attrs, x, w, bias)), ("ok", expected))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_operands_changed_in_place_between_calls_are_read_again(kind: str) -> None:
    attrs, x, w, bias = _case("w4a4_acc16_sat", kind)
    dp = attrs.datapath
    packed = api.pack_weights(w, dp.w_bits, dp.w_signed)
    program_param = PackedTensor(data=packed.data.copy(), bits=packed.bits, signed=packed.signed, shape=packed.shape)
    for wt in (w, packed, program_param):

        def codes() -> Any:
            if isinstance(wt, np.ndarray):
                return wt
            return api.PackedWeights(data=wt.data, bits=wt.bits, signed=wt.signed, shape=wt.shape).unpacked()

        before = _run(REFERENCE, attrs, x, codes(), bias)
        assert np.array_equal(_run(C, attrs, x, wt, bias), before)  # the caches hold this record and weight now
        x[...] = np.flip(x)
        bias[...] = -bias
        (wt if isinstance(wt, np.ndarray) else wt.data)[...] = np.flip(wt if isinstance(wt, np.ndarray) else wt.data)
        after = _run(REFERENCE, attrs, x, codes(), bias)
        assert not np.array_equal(before, after)  # the case is one the change shows in
        assert np.array_equal(_run(C, attrs, x, wt, bias), after)


def test_a_program_parameter_reshaped_in_place_is_validated_again() -> None:
    attrs, x, w, bias = _case("w4a4_acc16_sat", "linear")
    assert isinstance(attrs, LinearAttrs)
    packed = api.pack_weights(w, 4, True)
    param = PackedTensor(data=packed.data.copy(), bits=4, signed=True, shape=packed.shape)
    C.linear(attrs, x, param, bias)  # its validated wrapper is kept now
    param.data.shape = (param.data.size,)  # an ndarray's shape can be set in place

    def uncached() -> Any:  # what the backend does for a parameter it has not seen
        wrapper = api.PackedWeights(data=param.data, bits=param.bits, signed=param.signed, shape=param.shape)
        return api.run_linear(attrs, x, wrapper, bias)

    assert _outcome(lambda: C.linear(attrs, x, param, bias)) == _outcome(uncached)
    assert _outcome(uncached)[0] == "ValueError"


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_errors_of_a_warm_record_are_those_of_a_cold_one(kind: str) -> None:
    attrs, x, w, bias = _case("w4a4_acc16_sat", kind)  # bias_bits 16: the bias values are checked
    dp32 = dataclasses.replace(attrs, datapath=attrs.datapath.with_(bias_bits=32))
    bad_inputs: list[tuple[Record, Any, Any, Any]] = [
        (attrs, x.astype(np.int16), w, bias),
        (attrs, np.asfortranarray(x), w, bias),
        (attrs, x[:, :1].copy(), w, bias),  # a shape the record does not fit
        (attrs, np.zeros((0, *x.shape[1:]), x.dtype), w, bias),  # an empty batch: the empty output
        (attrs, np.full_like(x, 7 if attrs.datapath.a_signed else 15) + 1, w, bias),  # codes outside 4 bits
        (attrs, x, w.astype(np.uint8), bias),
        (attrs, x, w[:-1].copy(), bias),
        (attrs, x, w, bias[:-1].copy()),
        (attrs, x, w, np.full_like(bias, 40000)),  # outside the 16-bit bias range
        (dp32, x, w, bias[:-1].copy()),  # a 32-bit bias: only its length can fail
        (dp32, x, w, np.full_like(bias, 2**31 - 1)),
        (dataclasses.replace(attrs, x_zero_point=100), x, w, bias),  # unvalidated: the C core's status, named
    ]
    outcomes = []
    for record, xb, wb, bb in bad_inputs:
        _outcome(lambda: _run(C, record, x, w, bias))  # warm the record on good operands
        warm = _outcome(lambda: _run(C, record, xb, wb, bb))
        _same(warm, _outcome(lambda: _run(C, _cold(record), xb, wb, bb)))
        outcomes.append(warm[0])
    assert outcomes == ["TypeError", *["ValueError"] * 2, "ok", "ValueError", "TypeError", *["ValueError"] * 4, "ok",
                        "ValueError"]  # fmt: skip


def test_an_unsupported_isa_is_refused_after_the_checks_as_before() -> None:
    attrs, x, w, bias = _case("tflite_int8", "conv")
    assert isinstance(attrs, Conv2dAttrs)
    api.run_conv2d(attrs, x, w, bias)
    assert _outcome(lambda: api.run_conv2d(attrs, x, w, bias, isa="sse9")) == _outcome(
        lambda: api.run_conv2d(dataclasses.replace(attrs), x, w, bias, isa="sse9")
    )
    assert _outcome(lambda: api.run_conv2d(attrs, x.astype(np.int16), w, bias, isa="sse9"))[1].startswith(
        "conv2d: x must have dtype int8"
    )


def test_the_kept_scratch_holds_no_state_between_calls() -> None:
    attrs, x, w, bias = _case("tflite_int8", "conv")
    assert isinstance(attrs, Conv2dAttrs)
    expected = _run(REFERENCE, attrs, x, w, bias)
    for fill in (0x00, 0xFF, 0x5A):
        kept = api._scratch(1 << 16).base
        assert isinstance(kept, np.ndarray)
        kept[...] = fill  # the whole buffer of this thread, not only the view
        assert np.array_equal(api.run_conv2d(attrs, x, w, bias), expected)


def test_scratch_views_end_near_the_end_of_their_buffer() -> None:
    for n in (1, 63, 64, 1000, 5000):
        s = api._scratch(n)
        base = s.base
        assert isinstance(base, np.ndarray)
        tail = base.ctypes.data + base.size - (s.ctypes.data + n)
        assert 0 <= tail < api.SCRATCH_ALIGN and s.ctypes.data % api.SCRATCH_ALIGN == 0


def test_threads_get_their_own_scratch() -> None:
    cases = [_case(p, k, seed) for seed, (p, k) in enumerate([(p, k) for p in PRESET_NAMES for k in ("conv", "linear")])]
    expected = [_run(REFERENCE, *case) for case in cases]
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(30):
            for j, case in enumerate(cases[i:] + cases[:i]):
                if not np.array_equal(_run(C, *case), expected[(i + j) % len(cases)]):
                    failures.append(f"thread {i}, case {j}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_prepared_records_are_forgotten_when_they_die() -> None:
    attrs, x, w, bias = _case("tflite_int8", "linear")
    record = _cold(attrs)
    assert isinstance(record, LinearAttrs)
    api.run_linear(record, x, w, bias)
    key = id(record)
    assert api._prepared_of(record) is not None
    del record
    gc.collect()
    assert key not in api._PREPARED


def test_the_convenience_wrappers_cache_by_argument_types_and_values() -> None:
    x = np.array([[3, -1]], np.int8)
    w = np.array([[1, 2], [-3, 4]], np.int8)
    dp = Datapath.preset("tflite_int8")

    def linear(**over: Any) -> tuple[str, Any]:
        args: dict[str, Any] = dict(x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=[0.5, 0.25], datapath=dp)
        args.update(over)
        return _outcome(lambda: kernels.linear(x, w, None, **args))

    def fresh(**over: Any) -> tuple[str, Any]:
        api._BUILT.clear()
        return linear(**over)

    variants: list[dict[str, Any]] = [
        {}, {"y_zero_point": True}, {"y_zero_point": 1}, {"y_zero_point": np.int64(1)}, {"y_zero_point": 1.0},
        {"multiplier": [0.5, -0.0]}, {"multiplier": [0.5, 0.0]}, {"multiplier": np.array([0.5, 0.25], np.float32)},
        {"multiplier": np.array([0.5, 0.25])}, {"multiplier": (0.5, 0.25)}, {"multiplier": 0.5},
        {"multiplier": [0.5, float("nan")]}, {"w_zero_point": [0, 0]}, {"w_zero_point": np.zeros(2, np.int64)},
        {"datapath": dp.with_(rounding="half_even")}, {"datapath": "tflite_int8"}, {"y_signed": 1},
    ]
    for over in variants:  # in every order after every other: a hit gives what a cold build gives
        expected = fresh(**over)
        for other in variants:
            linear(**other)
            _same(linear(**over), expected)
    m = np.array([0.5, 0.25], np.float32)
    before = linear(multiplier=m)
    m[0] = 0.125  # the multiplier array changed in place: its new values are a new key
    _same(linear(multiplier=m), fresh(multiplier=m))
    assert not np.array_equal(before[1], linear(multiplier=m)[1])


def test_argument_keys_tell_types_and_signed_zeros_apart() -> None:
    key = api._argument_key
    distinct = [1, True, np.int64(1), 1.0, np.float32(1.0), 0.0, -0.0, (1,), [1], np.array([1]), np.array([1.0]), None]
    keys = [key(v) for v in distinct]
    assert all(k is not None for k in keys) and len(set(keys)) == len(keys)
    assert key(object()) is None and key([1, object()]) is None and key(np.array([None])) is None


# ----------------------------------------------------------------------------- weights caches


def _weights_caches() -> dict[int, Any]:
    found: dict[int, Any] = getattr(api._THREAD, "weights", {})
    return found


@pytest.mark.parametrize("preset", ["fbgemm_int8", "w4a4_acc16_sat", "w2a2_pow2_acc16"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_a_weights_cache_serves_every_isa_record_and_packing_with_the_uncached_codes(preset: str, kind: str) -> None:
    """One cache per weight array and thread: alternating instruction sets, another record on the same array
    (another output zero point and multiplier), its packed form, a view of it (an array of its own), and the
    cache is dropped with its array."""
    attrs, x, w, bias = _case(preset, kind)
    expected = _run(REFERENCE, attrs, x, w, bias)
    isas = [isa for isa in ("portable", "avx2", "avx512_vnni") if kernels.isa_available(isa)]
    for _ in range(2):
        for isa in isas:
            assert np.array_equal(_run(CKernels(isa), attrs, x, w, bias), expected), isa
    assert id(w) in _weights_caches()
    dp = attrs.datapath
    common: dict[str, Any] = dict(w_shape=attrs.w_shape, x_zero_point=attrs.x_zero_point, w_zero_point=0,
                                  y_zero_point=1, multiplier=2.0**-6, datapath=dp)  # fmt: skip
    shifted: Record = (
        Conv2dAttrs.build(padding=1, stride=2, **common) if kind == "conv" else LinearAttrs.build(**common)
    )
    for record in (attrs, shifted, attrs):
        assert np.array_equal(_run(C, record, x, w, bias), _run(REFERENCE, record, x, w, bias))
    if dp.w_bits in (1, 2, 4):
        packed = api.pack_weights(w, dp.w_bits, dp.w_signed)
        assert np.array_equal(_run(C, attrs, x, packed, bias), expected)
        assert id(packed.data) in _weights_caches()
    view = w.view()  # another array object on the same codes: a cache of its own
    assert np.array_equal(_run(C, attrs, x, view, bias), expected)
    assert id(view) in _weights_caches() and _weights_caches()[id(view)][1] is not _weights_caches()[id(w)][1]
    key = id(w)
    del w, view  # the view holds the array as its base
    gc.collect()
    assert key not in _weights_caches()


def test_each_thread_has_its_own_weights_cache() -> None:
    attrs, x, w, bias = _case("fbgemm_int8", "linear")
    expected = _run(REFERENCE, attrs, x, w, bias)
    results: list[Any] = []

    def work() -> None:
        for _ in range(20):
            results.append(_run(C, attrs, x, w, bias))
        results.append(id(w) in _weights_caches())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is True for r in results if isinstance(r, bool)) and sum(isinstance(r, bool) for r in results) == 4
    assert all(np.array_equal(r, expected) for r in results if not isinstance(r, bool))


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_a_weights_cache_smaller_than_its_query_is_refused_by_name(kind: str) -> None:
    attrs, x, w, bias = _case("fbgemm_int8", kind)
    prepared = api._prepare(attrs)
    short = np.zeros(64, dtype=np.uint8)
    ws = weights_struct(w, 0, attrs.w_zero_point, short)
    y = np.empty(attrs.output_shape(x.shape), dtype=prepared.y_dtype)
    with pytest.raises(ValueError, match="weights cache"):
        with named_status(attrs.op):
            if isinstance(attrs, Conv2dAttrs):
                geometry = conv2d_geometry(attrs, x.shape)
                scratch = np.zeros(int(_qk.conv2d_scratch_bytes(geometry, prepared.datapath)), dtype=np.uint8)
                _qk.conv2d(geometry=geometry, datapath=prepared.datapath, x=x, x_zero_point=attrs.x_zero_point,
                           weights=ws, bias=bias, requant=prepared.requant, y=y, scratch=scratch, isa=0)  # fmt: skip
            else:
                m, k, n = x.shape[0], x.shape[1], w.shape[0]
                scratch = np.zeros(int(_qk.linear_scratch_bytes(m, k, n, prepared.datapath)), dtype=np.uint8)
                _qk.linear(m=m, k=k, n=n, datapath=prepared.datapath, x=x, x_zero_point=attrs.x_zero_point,
                           weights=ws, bias=bias, requant=prepared.requant, y=y, scratch=scratch, isa=0)  # fmt: skip
