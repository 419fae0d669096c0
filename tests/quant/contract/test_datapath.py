"""Datapath: validation of every field, presets, describe/table, check_spec (docs/arithmetic.md §1, §8)."""

from __future__ import annotations

from typing import Any

import dataclasses
from typing import Any

import pytest

from quant import Datapath, QuantSpec
from quant.contract.datapath import PRESETS, presets_table

VALID: dict[str, list[Any]] = {
    "name": ["x"],
    "w_bits": [1, 4, 8],
    "w_signed": [True, False],
    "w_zero_point": [True, False],
    "a_bits": [2, 3, 8],
    "a_signed": [True, False],
    "a_zero_point": [True, False],
    "acc_bits": [8, 16, 24, 32],
    "overflow": ["wrap", "saturate", "error"],
    "requant": ["fixed_point", "float32", "float64", "pow2"],
    "multiplier_bits": [8, 15, 31],
    "fixed_point_rounding": ["double", "single"],
    "rounding": ["half_away", "half_up", "half_even", "floor"],
    "multiplier_rounding": ["half_away", "half_up", "half_even", "floor"],
    "zero_point_order": ["after_rounding", "before_rounding"],
    "bias_bits": [8, 16, 32],
    "quantize_rounding": ["half_away", "half_up", "half_even", "floor"],
    "quantize_mode": ["reciprocal", "reciprocal_fma", "division"],
    "version": [1],
}

INVALID: dict[str, list[Any]] = {
    "name": ["", 3],
    "w_bits": [0, 9, 4.0, True, "8"],
    "w_signed": [1, "yes"],
    "w_zero_point": [0],
    "a_bits": [0, 9],
    "a_signed": [None],
    "a_zero_point": [1],
    "acc_bits": [7, 33, 64],
    "overflow": ["clip", None, "WRAP"],
    "requant": ["fixed", "float16"],
    "multiplier_bits": [7, 32, 0],
    "fixed_point_rounding": ["triple"],
    "rounding": ["stochastic", "nearest"],
    "multiplier_rounding": ["stochastic"],
    "zero_point_order": ["never"],
    "bias_bits": [7, 33],
    "quantize_rounding": ["stochastic"],
    "quantize_mode": ["multiply"],
    "version": [0, 2],
}


def test_every_field_is_covered() -> None:
    names = {f.name for f in dataclasses.fields(Datapath)}
    assert names == set(VALID) == set(INVALID)


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in VALID.items() for v in vs])
def test_valid_values(field: str, value: Any) -> None:
    dp = Datapath(**{field: value})
    assert getattr(dp, field) == value


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in INVALID.items() for v in vs])
def test_invalid_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"Datapath\.{field}="):
        Datapath(**{field: value})


def test_binary_operand_has_no_zero_point() -> None:
    with pytest.raises(ValueError, match="w_zero_point"):
        Datapath(w_bits=1, w_signed=True, w_zero_point=True)
    Datapath(w_bits=1, w_signed=False, w_zero_point=True)


def test_frozen_and_with() -> None:
    dp = Datapath()
    with pytest.raises(dataclasses.FrozenInstanceError):
        dp.acc_bits = 16  # type: ignore[misc]
    assert dp.with_(acc_bits=16).acc_bits == 16
    with pytest.raises(ValueError, match="acc_bits"):
        dp.with_(acc_bits=40)


def test_presets_as_specified() -> None:
    t = Datapath.preset("tflite_int8")
    assert (t.w_bits, t.w_signed, t.w_zero_point, t.a_bits, t.a_signed, t.a_zero_point) == (8, True, False, 8, True, True)
    assert (t.acc_bits, t.overflow, t.requant, t.multiplier_bits, t.fixed_point_rounding) == (32, "wrap", "fixed_point", 31, "double")
    assert (t.rounding, t.multiplier_rounding, t.quantize_rounding) == ("half_away", "half_away", "half_away")
    s = Datapath.preset("tflite_single")
    assert dataclasses.replace(s, name="tflite_int8", fixed_point_rounding="double", rounding="half_away") == t
    assert (s.fixed_point_rounding, s.rounding) == ("single", "half_up")
    for name, req, order in (("fbgemm_int8", "float32", "after_rounding"), ("onnx_ref", "float64", "before_rounding"),
                             ("mlas", "float32", "after_rounding")):
        p = Datapath.preset(name)
        assert (p.a_bits, p.a_signed, p.a_zero_point, p.w_bits, p.w_signed) == (8, False, True, 8, True)
        assert (p.requant, p.rounding, p.zero_point_order, p.acc_bits, p.overflow) == (req, "half_even", order, 32, "wrap")
        assert p.quantize_mode == {"fbgemm_int8": "reciprocal_fma", "onnx_ref": "division", "mlas": "division"}[name]
    p = Datapath.preset("w4a8_acc32")
    assert (p.w_bits, p.a_bits, p.a_signed, p.acc_bits, p.overflow, p.requant, p.fixed_point_rounding, p.rounding) == (
        4, 8, True, 32, "wrap", "fixed_point", "double", "half_away")
    p = Datapath.preset("w4a4_acc16_sat")
    assert (p.w_bits, p.w_signed, p.a_bits, p.a_signed, p.a_zero_point, p.acc_bits, p.overflow) == (
        4, True, 4, False, True, 16, "saturate")
    assert (p.requant, p.multiplier_bits, p.fixed_point_rounding, p.rounding) == ("fixed_point", 15, "single", "half_up")
    p = Datapath.preset("w2a2_pow2_acc16")
    assert (p.w_bits, p.w_signed, p.a_bits, p.a_signed, p.acc_bits, p.overflow, p.requant, p.rounding) == (
        2, True, 2, False, 16, "saturate", "pow2", "half_even")


def test_preset_names_and_unknown() -> None:
    assert set(PRESETS) == {"tflite_int8", "tflite_single", "fbgemm_int8", "onnx_ref", "mlas", "w4a8_acc32",
                            "w4a4_acc16_sat", "w2a2_pow2_acc16"}
    for name, dp in PRESETS.items():
        assert dp.name == name and Datapath.preset(name) is dp
    with pytest.raises(ValueError, match="tflite_int8"):
        Datapath.preset("tflite")


def test_describe_and_table() -> None:
    table = presets_table().splitlines()
    assert len(table) == 2 + len(PRESETS)
    for dp in PRESETS.values():
        assert dp.describe().startswith(dp.name + ": ")
        assert any(row.startswith(f"| {dp.name} |") for row in table)
    assert Datapath(**Datapath.preset("mlas").as_dict()) == Datapath.preset("mlas")  # type: ignore[arg-type]


def test_derived_ranges() -> None:
    dp = Datapath(acc_bits=24, bias_bits=16, w_bits=1, w_signed=True, a_bits=3, a_signed=False)
    assert dp.acc_range == (-(2**23), 2**23 - 1)
    assert dp.bias_range == (-(2**15), 2**15 - 1)
    assert dp.w_range == (-1, 1) and dp.a_range == (0, 7)
    assert Datapath.preset("tflite_int8").add_left_shift == 20
    assert Datapath(acc_bits=8, a_bits=8).add_left_shift == 0


# --------------------------------------------------------------------- check_spec
@pytest.mark.parametrize(
    "preset,spec,role",
    [
        ("tflite_int8", QuantSpec(bits=8, granularity="channel", axis=0), "weight"),
        ("tflite_int8", QuantSpec(bits=4, narrow=True), "weight"),
        ("tflite_int8", QuantSpec(bits=8, symmetric=False), "activation"),
        ("tflite_int8", QuantSpec(bits=7, signed=False, symmetric=False), "activation"),
        ("fbgemm_int8", QuantSpec(bits=8, signed=False, symmetric=False), "activation"),
        ("w4a4_acc16_sat", QuantSpec(bits=4, signed=False, symmetric=False), "activation"),
        ("w4a4_acc16_sat", QuantSpec.ternary(), "weight"),
        ("w2a2_pow2_acc16", QuantSpec(bits=2, scale="pow2"), "weight"),
    ],
)
def test_check_spec_accepts(preset: str, spec: QuantSpec, role: str) -> None:
    Datapath.preset(preset).check_spec(spec, role)


@pytest.mark.parametrize(
    "dp,spec,role,match",
    [
        (Datapath.preset("w4a8_acc32"), QuantSpec(bits=8), "weight", "outside the int4 operand range"),
        (Datapath.preset("tflite_int8"), QuantSpec(bits=8, signed=False, symmetric=False), "activation", "outside"),
        (Datapath.preset("fbgemm_int8"), QuantSpec(bits=8, signed=True), "activation", "outside the uint8"),
        (Datapath.preset("tflite_int8"), QuantSpec(bits=8, symmetric=False), "weight", "w_zero_point=False"),
        (Datapath(a_zero_point=False), QuantSpec(bits=8, symmetric=False), "activation", "a_zero_point=False"),
        (Datapath.preset("w2a2_pow2_acc16"), QuantSpec(bits=2), "weight", "scale='float'"),
        (Datapath(w_bits=1, w_signed=True), QuantSpec.ternary(), "weight", "not binary"),
        (Datapath(), QuantSpec(bits=8, granularity="group", axis=1, group_size=4), "weight", "per group"),
        (Datapath(), QuantSpec(bits=8, granularity="channel", axis=1), "weight", "axis 0"),
        (Datapath(), QuantSpec(bits=8, granularity="channel", axis=1, symmetric=False), "activation", "per tensor"),
        (Datapath(), QuantSpec(bits=8, rounding="stochastic"), "activation", "stochastic"),
        (Datapath(), QuantSpec(bits=8), "bias", "role="),
    ],
)
def test_check_spec_refuses(dp: Datapath, spec: QuantSpec, role: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dp.check_spec(spec, role)


def test_check_spec_binary_and_types() -> None:
    Datapath(w_bits=1, w_signed=True).check_spec(QuantSpec.binary(), "weight")
    with pytest.raises(TypeError, match="QuantSpec"):
        Datapath().check_spec("int8", "weight")  # type: ignore[arg-type]
