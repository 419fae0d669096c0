"""Fuzz targets of the binding itself (``kernels._qk``): the structs and buffers a valid call would pass,
corrupted on their way into C.

A case is a valid :class:`~tests.fuzz.api_targets.ApiCase` and a plan of one to three corruptions. In the
worker, the wrapper runs with ``kernels.api._qk`` replaced by a proxy that applies the plan to the keyword
arguments of each binding call before passing them on: a struct field or a size argument set to an edge
value (0, -1, 2^15 .. 2^31-1, past int32, powers of two whose products wrap 64 bits), a buffer made
shorter, longer, empty, None, strided or of another element type. The C core must refuse what it cannot
use (``ValueError``/``TypeError``/``OverflowError``) or compute within its buffers (which ASan watches):
never crash, hang or raise anything else (a ``SystemError`` is a binding bug). The free functions
(output size and scratch queries, struct encoding, status sentences, ISA query) take random fields
directly; ``raw.custom.detection.nms`` corrupts the ABI structs of a custom op's C call
(``qk_custom.h``: tensor fields, shapes, parameter counts and values, the scratch) within what the ABI
lets a callee detect.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

import kernels.api
from kernels import _qk
from tests.fuzz import api_targets as api
from tests.fuzz.server import Verdict

__all__ = ["RAW_TARGETS", "RawCase"]

#: Values for int32 struct fields and Py_ssize_t sizes, and past them.
RAW_INTS: list[int] = [0, 1, -1, 2, 3, 7, 8, 9, 16, 31, 32, 33, 62, 63, 64, 255, 256, 2**15, 2**16, 46341, 2**30,
                       2**31 - 1, -(2**31), 2**31, 2**32, 2**33, 2**48, 2**62, 2**63 - 1, -(2**63), 2**64]  # fmt: skip
BUFFER_CHANGES = ["shorter", "longer", "empty", "none", "strided", "int8", "uint8", "int32", "float32", "bytes"]


@dataclass
class RawCase:
    """A valid call (``base``) and its corruptions: ``(field index, change index, value index)`` triples."""

    base: api.ApiCase
    plan: list[tuple[int, int, int]]


def _clean(fn: Callable[[], Any], clean: tuple[type[Exception], ...] = api.CLEAN_ERRORS) -> Verdict:
    """The verdict of calling ``fn``: "ok", "refused" (one of the ``clean`` exceptions) or "unclear"."""
    try:
        fn()
    except clean:
        return Verdict("refused")
    except Exception as err:  # noqa: BLE001 - any other exception is the finding
        return Verdict("unclear", f"{type(err).__name__}: {err}")
    return Verdict("ok")


def _leaves(kw: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the corruptible values of a binding call: top-level ints and buffers, and the items of dicts."""
    paths: list[tuple[str, ...]] = []
    for key in sorted(kw):
        value = kw[key]
        if isinstance(value, dict):
            paths.extend((key, sub) for sub in sorted(value))
        elif isinstance(value, (int, np.ndarray)) or value is None:
            paths.append((key,))
    return paths


def _changed_buffer(value: Any, change: str) -> Any:
    a = value if isinstance(value, np.ndarray) else np.zeros(4, np.int8)
    flat = a.reshape(-1)
    if change == "shorter":
        return flat[: max(0, flat.size - 1)].copy()
    if change == "longer":
        return np.concatenate([flat, flat[:1] if flat.size else np.zeros(1, a.dtype)])
    if change == "empty":
        return flat[:0].copy()
    if change == "none":
        return None
    if change == "strided":
        return api._strided(flat) if flat.size else flat
    if change == "bytes":
        return bytes(flat.tobytes())
    return flat.astype(change)


def _corrupt(kw: dict[str, Any], plan: list[tuple[int, int, int]]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in kw.items()}
    paths = _leaves(out)
    if not paths:
        return out
    for field_index, change_index, value_index in plan:
        path = paths[field_index % len(paths)]
        holder = out if len(path) == 1 else out[path[0]]
        current = holder[path[-1]]
        if isinstance(current, np.ndarray) or current is None:
            holder[path[-1]] = _changed_buffer(current, BUFFER_CHANGES[change_index % len(BUFFER_CHANGES)])
        else:
            holder[path[-1]] = RAW_INTS[value_index % len(RAW_INTS)]
    return out


class _CorruptingBinding:
    """``kernels._qk`` whose kernels see their keyword arguments (the primitives their positionals) corrupted first."""

    def __init__(self, plan: list[tuple[int, int, int]]) -> None:
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        real = getattr(_qk, name)
        if not callable(real):
            return real

        def call(*args: Any, **kw: Any) -> Any:
            if kw:
                kw = _corrupt(kw, self.plan)
            elif not name.endswith(("_scratch_bytes", "_cache_bytes")) and not any(isinstance(a, dict) for a in args):
                # the scalar primitives take positional arguments
                named = _corrupt({f"arg{i}": a for i, a in enumerate(args)}, self.plan)
                args = tuple(named[f"arg{i}"] for i in range(len(args)))
            # The scratch and weights-cache queries pass unchanged: the wrapper allocates what they answer
            # (the free-function target fuzzes them directly).
            return real(*args, **kw)

        return call


def run_raw_case(case: RawCase) -> Verdict:
    """The wrapper of ``case.base`` with its binding calls corrupted per ``case.plan``: a clean outcome or not."""
    module: Any = kernels.api  # its binding, swapped for the call
    saved = module._qk
    module._qk = _CorruptingBinding(case.plan)
    try:
        return _clean(api._c_call(case.base))
    finally:
        module._qk = saved


@st.composite
def raw_cases(draw: st.DrawFn, base: st.SearchStrategy[api.ApiCase]) -> RawCase:
    triple = st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(0, 63))
    return RawCase(draw(base), draw(st.lists(triple, min_size=1, max_size=3)))


# ----------------------------------------------------------------------------- the custom-op ABI

#: What a corruption may set in the ABI structs of a custom op's call (qk_custom.h): each field only to
#: values the callee can detect (a shape or count may shrink or turn invalid, never grow past a buffer,
#: and a pointer may only become NULL: the ABI carries no lengths, so a larger lie is the caller's fault).
_TENSOR_FIELDS: dict[str, list[int]] = {"ndim": [-1, 0, 9, 2**31 - 1], "bits": [0, 9, -1, 2**31 - 1],
                                        "is_signed": [2, -1], "reserved": [1, -1]}  # fmt: skip
_SHAPE_VALUES = [0, -1, -(2**63), 1]
_PARAM_VALUES = [-1, 0, 2**16, 65537, 2**31, 2**62, -(2**63), 2**63 - 1]


def _corrupted_call(plan: list[tuple[int, int, int]], args: list[Any]) -> list[Any]:
    """The arguments of a custom-op C call (inputs, n_inputs, params, n_params, output, ...) after ``plan``."""
    from kernels.custom import CustomParam, CustomTensor

    inputs, n_inputs, params, n_params, output = args[:5]
    ins = (CustomTensor * n_inputs)(*(CustomTensor.from_buffer_copy(inputs[i]) for i in range(n_inputs)))
    out = CustomTensor.from_buffer_copy(getattr(output, "_obj", output))  # passed byref
    held = [[params[j].values[0]] * max(1, params[j].count) for j in range(n_params)]
    value_arrays = [(ctypes.c_int64 * len(v))(*v) for v in held]
    ps = (CustomParam * max(1, n_params))()
    for j, arr in enumerate(value_arrays):
        ps[j].values = ctypes.cast(arr, ctypes.POINTER(ctypes.c_int64))
        ps[j].count = params[j].count
    rest = list(args[5:])
    tensors = list(ins) + [out]
    for field_index, change, value_index in plan:
        slot = field_index % 6
        if slot == 0:  # a tensor field
            t = tensors[change % len(tensors)]
            name = sorted(_TENSOR_FIELDS)[value_index % len(_TENSOR_FIELDS)]
            setattr(t, name, _TENSOR_FIELDS[name][change % len(_TENSOR_FIELDS[name])])
        elif slot == 1:  # a shape entry: smaller or invalid
            t = tensors[change % len(tensors)]
            t.shape[value_index % max(1, min(t.ndim, 8))] = _SHAPE_VALUES[change % len(_SHAPE_VALUES)]
        elif slot == 2 and n_params:  # a parameter's count or value
            j = change % n_params
            if value_index % 2:
                ps[j].count = [0, 2, -1, 2**62][change % 4]
            else:
                ps[j].values[0] = _PARAM_VALUES[change % len(_PARAM_VALUES)]
        elif slot == 3:  # fewer inputs or parameters than there are
            if change % 2:
                n_inputs = [0, -1, max(0, n_inputs - 1)][value_index % 3]
            else:
                n_params = [0, -1, max(0, n_params - 1)][value_index % 3]
        elif slot == 4 and len(rest) == 2:  # the scratch: smaller, or NULL with its size
            if change % 2 and rest[1]:
                rest[1] = rest[1] - 1 - value_index % rest[1]
            else:
                rest[0] = None
        elif slot == 5:  # a NULL tensor pointer
            tensors[change % len(tensors)].data = None
    _keep_alive.extend([ins, out, value_arrays, ps])
    return [ins, n_inputs, ps, n_params, ctypes.byref(out), *rest]


_keep_alive: list[Any] = []


def run_raw_custom_case(case: RawCase) -> Verdict:
    """``case.base`` (a custom-op case) with the ABI structs of its C calls corrupted per ``case.plan``."""
    import kernels.custom as custom

    real = custom.custom_function

    def corrupting(op: Any) -> tuple[Any, Any]:
        fn, scratch_fn = real(op)

        def call(*args: Any) -> Any:
            return fn(*_corrupted_call(case.plan, list(args)))

        def query(*args: Any) -> Any:
            assert scratch_fn is not None
            return scratch_fn(*_corrupted_call(case.plan, list(args)))

        return call, (query if scratch_fn is not None else None)

    module: Any = custom
    module.custom_function = corrupting
    try:
        # only a status of the C function (a ValueError naming it) is a clean refusal here: the structs
        # come from the wrapper, so a TypeError would be the harness's own fault
        verdict = _clean(lambda: _c_custom(case.base), (ValueError,))
    finally:
        module.custom_function = real
        _keep_alive.clear()
    return verdict


def _c_custom(case: api.ApiCase) -> Any:
    from quant.contract.backend import get_backend
    from quant.contract.custom import CustomOpAttrs

    return get_backend("c").custom(CustomOpAttrs.build(**case.kw["attrs"]), case.args)


# ----------------------------------------------------------------------------- the free functions


def _struct_fields(name: str) -> list[str]:
    return [field[0] for field in _qk.abi()[name][1]]


@st.composite
def free_cases(draw: st.DrawFn) -> tuple[str, list[Any]]:
    fn = draw(st.sampled_from(["conv2d_output_size", "conv2d_scratch_bytes", "linear_scratch_bytes", "struct_bytes",
                               "status_message", "isa_query", "lstm_scratch_bytes", "gru_scratch_bytes",
                               "conv2d_cache_bytes", "linear_cache_bytes"]))  # fmt: skip
    value = st.sampled_from(RAW_INTS) | st.integers(-(2**31), 2**31 - 1)

    def fields(struct: str) -> dict[str, Any]:
        return {f: draw(value) for f in _struct_fields(struct)}

    if fn == "conv2d_output_size":
        return fn, [fields("qk_conv2d_geometry")]
    if fn == "conv2d_scratch_bytes":
        return fn, [fields("qk_conv2d_geometry"), fields("qk_datapath")]
    if fn == "linear_scratch_bytes":
        return fn, [draw(value), draw(value), draw(value), fields("qk_datapath")]
    def weights() -> dict[str, Any]:
        return {"data": np.zeros(draw(st.integers(0, 64)), dtype=draw(st.sampled_from([np.int8, np.uint8]))),
                "packed_bits": draw(st.sampled_from([0, 1, 2, 4, 3, -1])),
                "zero_point": np.zeros(draw(st.integers(0, 3)), dtype=np.int32)}  # fmt: skip

    if fn == "conv2d_cache_bytes":
        return fn, [fields("qk_conv2d_geometry"), fields("qk_datapath"), weights()]
    if fn == "linear_cache_bytes":
        return fn, [draw(value), draw(value), fields("qk_datapath"), weights()]
    if fn in ("lstm_scratch_bytes", "gru_scratch_bytes"):
        return fn, [draw(value), draw(value)]
    if fn == "struct_bytes":
        struct = draw(st.sampled_from(sorted(_qk.abi())))
        return fn, [struct, fields(struct)]
    return fn, [draw(value)]


def run_free_case(case: tuple[str, list[Any]]) -> Verdict:
    fn, args = case
    return _clean(lambda: getattr(_qk, fn)(*args))


def _raw(base: st.SearchStrategy[api.ApiCase]) -> tuple[st.SearchStrategy[RawCase], Callable[[RawCase], Verdict]]:
    return raw_cases(base), run_raw_case


#: Target name -> (strategy, runner).
RAW_TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], Verdict]]] = {
    "raw.conv2d": _raw(api.conv2d_cases(hostile=False)),
    "raw.linear": _raw(api.linear_cases(hostile=False)),
    "raw.requantize": _raw(api.requantize_cases(hostile=False)),
    "raw.add": _raw(api.add_cases(hostile=False)),
    "raw.mul": _raw(api.mul_cases(hostile=False)),
    "raw.softmax": _raw(api.softmax_cases(hostile=False)),
    "raw.layernorm": _raw(api.layernorm_cases(hostile=False)),
    "raw.lstm": _raw(api.recurrent_cases("lstm", hostile=False)),
    "raw.gru": _raw(api.recurrent_cases("gru", hostile=False)),
    "raw.avg_pool2d": _raw(api.pool_cases("avg_pool2d", hostile=False)),
    "raw.max_pool2d": _raw(api.pool_cases("max_pool2d", hostile=False)),
    "raw.lut": _raw(api.lut_cases(hostile=False)),
    "raw.pack": _raw(api.pack_cases(hostile=False)),
    "raw.unpack": _raw(api.unpack_cases(hostile=False)),
    "raw.rounding_right_shift": _raw(api.shift_cases(hostile=False)),
    "raw.srdhm": _raw(api.srdhm_cases(hostile=False)),
    "raw.custom.detection.nms": (raw_cases(api.nms_cases(hostile=False)), run_raw_custom_case),
    "raw.free_functions": (free_cases(), run_free_case),
}
