"""The backend registry and protocol: both built-in backends are found by name, run the same record to the
same codes and refuse the same operands with the same message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quant.contract.attrs import AvgPool2dAttrs, Conv2dAttrs, LinearAttrs
from quant.contract.backend import backend_names, get_backend, register_backend
from quant.contract.datapath import Datapath

TFL = Datapath.preset("tflite_int8")
BACKENDS = ["torch_ref", "c"]


def test_registry_names_and_refusals() -> None:
    assert set(BACKENDS) <= set(backend_names())
    assert get_backend("c") is get_backend("c")
    with pytest.raises(ValueError, match="backend='nope' is not one of"):
        get_backend("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_backend(get_backend("torch_ref"))

    class Nameless:
        name = ""

    with pytest.raises(ValueError, match="non-empty str name"):
        register_backend(Nameless())  # type: ignore[arg-type]


def test_both_backends_run_one_record_to_the_same_codes() -> None:
    rng = np.random.default_rng(7)
    attrs = Conv2dAttrs.build(w_shape=(4, 3, 3, 3), x_zero_point=-2, w_zero_point=0, y_zero_point=1,
                              multiplier=[0.01, 0.02, 0.005, 0.03], padding=1, stride=2, datapath=TFL)  # fmt: skip
    x = rng.integers(-128, 128, (2, 3, 9, 9), dtype=np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-500, 500, 4, dtype=np.int32)
    ys = [get_backend(name).conv2d(attrs, x, w, bias) for name in BACKENDS]
    assert ys[0].dtype == ys[1].dtype == np.int8 and ys[0].shape == (2, 4, 5, 5)
    assert np.array_equal(ys[0], ys[1])
    pool = AvgPool2dAttrs.build(2, zero_point=3, datapath=TFL)
    pooled = [get_backend(name).avg_pool2d(pool, x) for name in BACKENDS]
    assert np.array_equal(pooled[0], pooled[1])


@pytest.mark.parametrize(
    "operands, match",
    [
        (dict(w=np.zeros((4, 2), np.int8)), r"w has shape \(4, 2\), the op's attributes are for \(4, 3\)"),
        (dict(x=np.zeros((2, 5), np.int8)), "x has K=5 but w has K=3"),
        (dict(bias=np.zeros(3, np.int32)), "bias has 3 values, expected one per output channel"),
        (dict(bias=np.full(4, 2**31 - 1, np.int32)), None),
    ],
)
def test_both_backends_refuse_the_same_operands(operands: dict[str, Any], match: Any) -> None:
    attrs = LinearAttrs.build(w_shape=(4, 3), x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=0.5,
                              datapath=TFL.with_(bias_bits=16))  # fmt: skip
    args: dict[str, Any] = dict(x=np.zeros((2, 3), np.int8), w=np.zeros((4, 3), np.int8), bias=None)
    args.update(operands)
    messages = []
    for name in BACKENDS:
        with pytest.raises(ValueError, match=match) as err:
            get_backend(name).linear(attrs, args["x"], args["w"], args["bias"])
        messages.append(str(err.value))
    assert messages[0] == messages[1]
