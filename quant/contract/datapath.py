"""``Datapath``: the integer hardware a scheme must run on, as a frozen, validated dataclass.

A datapath fixes every knob of the integer arithmetic defined in ``docs/arithmetic.md``:
operand widths and zero-point support (section 1), accumulator width and overflow
behaviour (section 4), the requantization of the accumulator to output codes
(section 5), the rounding of each step (section 2), the bias width, and how float
inputs become codes at the model input (section 7). The same class is the Hydra
structured-config schema of the ``datapath`` config group: every field is a plain
scalar and a bad value raises ``ValueError`` naming the field and the allowed values.

>>> Datapath.preset("tflite_int8").requant
'fixed_point'
>>> Datapath(acc_bits=16, overflow="saturate").acc_range
(-32768, 32767)
>>> Datapath(overflow="clip")
Traceback (most recent call last):
...
ValueError: Datapath.overflow='clip' is not one of 'wrap', 'saturate', 'error'
>>> print(Datapath.preset("w4a4_acc16_sat").describe())
w4a4_acc16_sat: w int4 sym, a uint4 zp, acc16 saturate, fixed_point N=15 single half_up
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from quant.contract.codes import code_kind, code_range
from quant.contract.rounding import INTEGER_ROUNDING_MODES
from quant.contract.spec import QuantSpec

__all__ = [
    "Datapath",
    "OVERFLOW_MODES",
    "REQUANT_MODES",
    "FIXED_POINT_ROUNDINGS",
    "ZERO_POINT_ORDERS",
    "QUANTIZE_MODES",
    "PRESETS",
    "presets_table",
]

OVERFLOW_MODES: tuple[str, ...] = ("wrap", "saturate", "error")
REQUANT_MODES: tuple[str, ...] = ("fixed_point", "float32", "float64", "pow2")
FIXED_POINT_ROUNDINGS: tuple[str, ...] = ("double", "single")
ZERO_POINT_ORDERS: tuple[str, ...] = ("after_rounding", "before_rounding")
#: How ``quantize`` applies the scale and zero point (section 7): ``round(fp32(x) * fp32(1/s)) + z``,
#: ``round(fma(fp32(x), fp32(1/s), z))`` (PyTorch's fbgemm ``quantize_per_tensor``) or ``round(fp32(x) / s) + z``.
QUANTIZE_MODES: tuple[str, ...] = ("reciprocal", "reciprocal_fma", "division")
ROLES: tuple[str, ...] = ("weight", "activation")


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"Datapath.{field}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _int_in(field: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"Datapath.{field}={value!r} must be an integer in {lo}..{hi}")


def _operand_name(bits: int, signed: bool, zero_point: bool) -> str:
    return f"{code_kind(bits, signed)} {'zp' if zero_point else 'sym'}"


@dataclass(frozen=True)
class Datapath:
    """One integer datapath: every field is a knob of ``docs/arithmetic.md``.

    Operands (section 1): ``w_bits``/``a_bits`` in 1..8; signed operands hold
    ``[-2^(b-1), 2^(b-1)-1]`` (1 bit signed: {-1, +1}), unsigned ``[0, 2^b-1]``;
    ``*_zero_point`` says whether the datapath subtracts a zero point from that operand.

    Accumulation (section 4): ``acc_bits`` A in 8..32, ``overflow`` in wrap | saturate |
    error, ``bias_bits`` in 8..32 (a bias must fit it, signed).

    Requantization (section 5): ``requant`` in fixed_point | float32 | float64 | pow2;
    ``multiplier_bits`` N in 8..31 and ``fixed_point_rounding`` double | single
    (fixed_point only); ``rounding`` of the last requant step, of the add and of the
    average-pool division; ``multiplier_rounding`` of ``f * 2^N`` to ``M0``;
    ``zero_point_order`` (float32/float64 only) adds ``z_y`` after or before rounding.

    Quantization of float inputs (section 7): ``quantize_mode`` reciprocal |
    reciprocal_fma | division and ``quantize_rounding``.

    ``version`` is the schema version of serialized configs (1).
    """

    name: str = "custom"
    w_bits: int = 8
    w_signed: bool = True
    w_zero_point: bool = False
    a_bits: int = 8
    a_signed: bool = True
    a_zero_point: bool = True
    acc_bits: int = 32
    overflow: str = "wrap"
    requant: str = "fixed_point"
    multiplier_bits: int = 31
    fixed_point_rounding: str = "double"
    rounding: str = "half_away"
    multiplier_rounding: str = "half_away"
    zero_point_order: str = "after_rounding"
    bias_bits: int = 32
    quantize_rounding: str = "half_even"
    quantize_mode: str = "reciprocal"
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Datapath.name={self.name!r} must be a non-empty string")
        _int_in("w_bits", self.w_bits, 1, 8)
        _int_in("a_bits", self.a_bits, 1, 8)
        for name in ("w_signed", "w_zero_point", "a_signed", "a_zero_point"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Datapath.{name}={getattr(self, name)!r} must be a bool (True or False)")
        _int_in("acc_bits", self.acc_bits, 8, 32)
        _choice("overflow", self.overflow, OVERFLOW_MODES)
        _choice("requant", self.requant, REQUANT_MODES)
        _int_in("multiplier_bits", self.multiplier_bits, 8, 31)
        _choice("fixed_point_rounding", self.fixed_point_rounding, FIXED_POINT_ROUNDINGS)
        _choice("rounding", self.rounding, INTEGER_ROUNDING_MODES)
        _choice("multiplier_rounding", self.multiplier_rounding, INTEGER_ROUNDING_MODES)
        _choice("zero_point_order", self.zero_point_order, ZERO_POINT_ORDERS)
        _int_in("bias_bits", self.bias_bits, 8, 32)
        _choice("quantize_rounding", self.quantize_rounding, INTEGER_ROUNDING_MODES)
        _choice("quantize_mode", self.quantize_mode, QUANTIZE_MODES)
        _int_in("version", self.version, 1, 1)
        for role, bits, signed, zp in (
            ("w", self.w_bits, self.w_signed, self.w_zero_point),
            ("a", self.a_bits, self.a_signed, self.a_zero_point),
        ):
            if bits == 1 and signed and zp:
                raise ValueError(
                    f"Datapath.{role}_zero_point=True is not allowed for binary operands "
                    f"({role}_bits=1, {role}_signed=True): codes are {{-1, +1}}"
                )

    # ----------------------------------------------------------------- factories
    @classmethod
    def preset(cls, name: str) -> "Datapath":
        """The named preset (see :data:`PRESETS` and :func:`presets_table`).

        >>> Datapath.preset("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown datapath preset 'nope'; presets: tflite_int8, tflite_single, fbgemm_int8, onnx_ref, mlas, w4a8_acc32, w4a4_acc16_sat, w2a2_pow2_acc16
        """
        try:
            return PRESETS[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown datapath preset {name!r}; presets: {', '.join(PRESETS)}") from None

    def with_(self, **changes: object) -> "Datapath":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- derived
    @property
    def acc_range(self) -> tuple[int, int]:
        """``(-2^(A-1), 2^(A-1) - 1)``: the accumulator range."""
        return -(1 << (self.acc_bits - 1)), (1 << (self.acc_bits - 1)) - 1

    @property
    def bias_range(self) -> tuple[int, int]:
        """``(-2^(bias_bits-1), 2^(bias_bits-1) - 1)``: the range a bias must fit."""
        return -(1 << (self.bias_bits - 1)), (1 << (self.bias_bits - 1)) - 1

    @property
    def w_range(self) -> tuple[int, int]:
        """Code range of a weight operand (binary {-1, +1} reported as (-1, 1))."""
        return code_range(self.w_bits, self.w_signed)

    @property
    def a_range(self) -> tuple[int, int]:
        """Code range of an activation operand (binary {-1, +1} reported as (-1, 1))."""
        return code_range(self.a_bits, self.a_signed)

    @property
    def add_left_shift(self) -> int:
        """``L = max(0, acc_bits - 4 - a_bits)``: the headroom shift of fixed-point ``add`` (section 6.1).

        >>> Datapath.preset("tflite_int8").add_left_shift
        20
        """
        return max(0, self.acc_bits - 4 - self.a_bits)

    def describe(self) -> str:
        """One line that spells the whole datapath, e.g. for tables and logs.

        >>> print(Datapath.preset("fbgemm_int8").describe())
        fbgemm_int8: w int8 sym, a uint8 zp, acc32 wrap, float32 half_even zp after_rounding
        """
        w = _operand_name(self.w_bits, self.w_signed, self.w_zero_point)
        a = _operand_name(self.a_bits, self.a_signed, self.a_zero_point)
        if self.requant == "fixed_point":
            rq = f"fixed_point N={self.multiplier_bits} {self.fixed_point_rounding} {self.rounding}"
        elif self.requant in ("float32", "float64"):
            rq = f"{self.requant} {self.rounding} zp {self.zero_point_order}"
        else:
            rq = f"pow2 {self.rounding}"
        return f"{self.name}: w {w}, a {a}, acc{self.acc_bits} {self.overflow}, {rq}"

    def as_dict(self) -> dict[str, object]:
        """The fields as a plain dict (for logs and serialized configs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ----------------------------------------------------------------- checks
    def check_spec(self, spec: QuantSpec, role: str) -> None:
        """Raise ``ValueError`` if ``spec`` cannot run on this datapath as a ``role`` operand.

        ``role`` is ``"weight"`` or ``"activation"``. Refused: codes outside the operand
        range (too many bits, or signed codes on an unsigned operand and vice versa), an
        asymmetric spec (non-zero zero point) on an operand without zero-point support,
        a non-binary spec on a binary operand, a ``"float"`` scale constraint on a
        ``pow2`` datapath, per-group granularity (the datapath has one multiplier per
        output channel), weights per channel along an axis other than 0 (output
        channels), activations that are not per tensor, and stochastic rounding of
        activations (not reproducible by integer hardware).

        >>> Datapath.preset("tflite_int8").check_spec(QuantSpec(bits=8, signed=False, symmetric=False), "activation")
        Traceback (most recent call last):
        ...
        ValueError: activation spec uint8 asym per-tensor half_even has codes [0, 255] outside the int8 operand range [-128, 127] of datapath tflite_int8
        >>> Datapath.preset("w4a8_acc32").check_spec(QuantSpec(bits=4, granularity="channel", axis=0), "weight")
        """
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"spec must be a QuantSpec, got {type(spec).__name__}")
        _choice_role(role)
        weight = role == "weight"
        bits = self.w_bits if weight else self.a_bits
        signed = self.w_signed if weight else self.a_signed
        has_zp = self.w_zero_point if weight else self.a_zero_point
        lo, hi = code_range(bits, signed)
        operand = code_kind(bits, signed)
        where = f"datapath {self.name}"
        if bits == 1 and signed:
            if not spec.is_binary:
                raise ValueError(
                    f"{role} spec {spec.describe()} is not binary but the {role} operand of {where} is binary {{-1, +1}}"
                )
        elif spec.qmin < lo or spec.qmax > hi:
            raise ValueError(
                f"{role} spec {spec.describe()} has codes [{spec.qmin}, {spec.qmax}] outside the "
                f"{operand} operand range [{lo}, {hi}] of {where}"
            )
        if not spec.symmetric and not has_zp:
            raise ValueError(
                f"{role} spec {spec.describe()} is asymmetric (has a zero point) but {where} has "
                f"{'w' if weight else 'a'}_zero_point=False"
            )
        if self.requant == "pow2" and spec.scale != "pow2":
            raise ValueError(
                f"{role} spec {spec.describe()} has scale={spec.scale!r} but {where} has requant='pow2': "
                "use QuantSpec(scale='pow2')"
            )
        if spec.granularity == "group":
            raise ValueError(
                f"{role} spec {spec.describe()} is per group, but {where} has one multiplier per output channel"
            )
        if weight and spec.granularity == "channel" and spec.axis != 0:
            raise ValueError(
                f"weight spec {spec.describe()} must be per channel along axis 0 (output channels) on {where}"
            )
        if not weight and spec.granularity != "tensor":
            raise ValueError(f"activation spec {spec.describe()} must be per tensor on {where}")
        if not weight and spec.rounding == "stochastic":
            raise ValueError(
                f"activation spec {spec.describe()} uses stochastic rounding, which {where} cannot reproduce"
            )


def _choice_role(role: object) -> None:
    if not isinstance(role, str) or role not in ROLES:
        raise ValueError(f"role={role!r} is not one of {', '.join(map(repr, ROLES))}")


_TFLITE = Datapath(
    name="tflite_int8",
    w_bits=8, w_signed=True, w_zero_point=False,
    a_bits=8, a_signed=True, a_zero_point=True,
    acc_bits=32, overflow="wrap",
    requant="fixed_point", multiplier_bits=31, fixed_point_rounding="double",
    rounding="half_away", multiplier_rounding="half_away",
    quantize_rounding="half_away", quantize_mode="division",
)  # fmt: skip

_FLOAT_UINT8 = dict(
    w_bits=8, w_signed=True, w_zero_point=False,
    a_bits=8, a_signed=False, a_zero_point=True,
    acc_bits=32, overflow="wrap", rounding="half_even", quantize_rounding="half_even",
)  # fmt: skip

#: The shipped presets, by name (each is also a YAML file of the ``datapath`` config group).
PRESETS: dict[str, Datapath] = {
    p.name: p
    for p in (
        _TFLITE,
        _TFLITE.with_(name="tflite_single", fixed_point_rounding="single", rounding="half_up"),
        Datapath(
            name="fbgemm_int8", requant="float32", zero_point_order="after_rounding",
            quantize_mode="reciprocal_fma", **_FLOAT_UINT8,  # type: ignore[arg-type]
        ),
        Datapath(
            name="onnx_ref", requant="float64", zero_point_order="before_rounding",
            quantize_mode="division", **_FLOAT_UINT8,  # type: ignore[arg-type]
        ),
        Datapath(
            name="mlas", requant="float32", zero_point_order="after_rounding",
            quantize_mode="division", **_FLOAT_UINT8,  # type: ignore[arg-type]
        ),
        Datapath(
            name="w4a8_acc32", w_bits=4, w_signed=True, w_zero_point=False,
            a_bits=8, a_signed=True, a_zero_point=True, acc_bits=32, overflow="wrap",
            requant="fixed_point", multiplier_bits=31, fixed_point_rounding="double",
            rounding="half_away", multiplier_rounding="half_away",
        ),
        Datapath(
            name="w4a4_acc16_sat", w_bits=4, w_signed=True, w_zero_point=False,
            a_bits=4, a_signed=False, a_zero_point=True, acc_bits=16, overflow="saturate",
            requant="fixed_point", multiplier_bits=15, fixed_point_rounding="single",
            rounding="half_up", multiplier_rounding="half_away", bias_bits=16,
        ),
        Datapath(
            name="w2a2_pow2_acc16", w_bits=2, w_signed=True, w_zero_point=False,
            a_bits=2, a_signed=False, a_zero_point=True, acc_bits=16, overflow="saturate",
            requant="pow2", rounding="half_even", bias_bits=16,
        ),
    )
}  # fmt: skip


def presets_table() -> str:
    """A Markdown table of the presets, one row per preset, one column per field that varies.

    >>> print(presets_table().splitlines()[0])
    | name | w_bits | a_bits | a_signed | acc_bits | overflow | requant | multiplier_bits | fixed_point_rounding | rounding | zero_point_order | bias_bits | quantize_rounding | quantize_mode |
    """
    names = [f.name for f in fields(Datapath) if f.name not in ("version",)]
    rows = list(PRESETS.values())
    cols = [n for n in names if n == "name" or len({getattr(r, n) for r in rows}) > 1]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(getattr(r, c)) for c in cols) + " |")
    return "\n".join(lines)
