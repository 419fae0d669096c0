"""``AccumulatorTarget``: the accumulator an accumulator-aware weight quantizer guards (docs/arithmetic.md §4).

A conv2d or linear output accumulates ``acc = bias + sum_k (x_k - z_x) (q_k - z_w)`` in ``A = acc_bits``
bits (section 4: the bias first, then every product, each prefix sum inside ``[-2^(A-1), 2^(A-1) - 1]``
unless the datapath wraps, saturates or refuses it). With input codes ``x`` in the operand range
``[lo, hi]`` of ``input_bits`` bits and the input zero point ``z_x`` in that range too, every offset
``x - z_x`` lies in ``[lo - z_x, hi - z_x]``, whose largest magnitude over every admissible zero point is

    D = 2^N - 1       unsigned inputs, or signed inputs with a zero point (``z_x`` anywhere in range)
    D = 2^(N-1)       signed inputs without a zero point (``z_x = 0``: offsets in [-2^(N-1), 2^(N-1) - 1])
    D = 1             binary inputs {-1, +1}

for ``N = input_bits``. A channel of symmetric weight codes ``q`` (``z_w = 0``) then has
``|sum_k (x_k - z_x) q_k| <= D ||q||_1`` for every input, with equality for the input that puts
the offset of largest magnitude against every code's sign (the offsets' range contains 0 or, binary,
``{-1, +1}``, so every prefix sum is bounded by the same quantity). So the product sum can never leave
the accumulator, whatever the inputs and the zero point, exactly when

    ||q||_1 <= T = floor((2^(A-1) - 1) / D)                                 (:attr:`l1_limit`)

and ``T`` is the largest such limit: a channel of ``T + 1`` codes of one sign reaches ``D (T + 1) >
2^(A-1) - 1`` with the extreme input (signed inputs without a zero point: the negative end ``-2^(N-1)``
against negative codes gives ``+D (T + 1)``). A2Q (Colbert et al. 2023) writes the unsigned case as
``(2^(A-1) - 1) / (2^N - 1)``, which is this bound before the floor. A layer's bias is added into
the same accumulator and comes on top: ``quant.sim.accumulator.accumulator_bound`` reports the sum.

>>> t = AccumulatorTarget(acc_bits=16, input_bits=4, input_signed=False)
>>> t.max_input_offset, t.l1_limit            # 15 * 2184 = 32760 <= 32767 < 15 * 2185
(15, 2184)
>>> AccumulatorTarget(acc_bits=12, input_bits=8, input_signed=True, input_zero_point=False).l1_limit
15
>>> AccumulatorTarget.of(Datapath.preset("w4a4_acc16_sat")).describe()
'acc16 for uint4 inputs with a zero point (||q||_1 <= 2184)'
>>> AccumulatorTarget(acc_bits=8, input_bits=8, input_signed=False)
Traceback (most recent call last):
...
ValueError: AccumulatorTarget: acc_bits=8 cannot hold a single product of uint8 inputs (offsets up to 255): the L1 limit floor(127 / 255) is 0; acc_bits must be at least 9 for input_bits=8
"""

from __future__ import annotations

from dataclasses import dataclass

from quant.contract.codes import code_kind
from quant.contract.datapath import Datapath

__all__ = ["AccumulatorTarget", "max_input_offset"]


def max_input_offset(input_bits: int, input_signed: bool, input_zero_point: bool) -> int:
    """``D``: the largest ``|x - z_x|`` over input codes ``x`` and admissible zero points ``z_x`` (module doc).

    >>> max_input_offset(4, False, True), max_input_offset(8, True, False), max_input_offset(1, True, False)
    (15, 128, 1)
    """
    if input_bits == 1 and input_signed:
        return 1
    if input_signed and not input_zero_point:
        return 1 << (input_bits - 1)
    return (1 << input_bits) - 1


def _int_in(field: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"AccumulatorTarget.{field}={value!r} must be an integer in {lo}..{hi}")


@dataclass(frozen=True)
class AccumulatorTarget:
    """The accumulator width ``acc_bits`` (8..32, as :class:`Datapath`) and the input operand it must hold
    every product sum of: ``input_bits`` (1..8), ``input_signed``, ``input_zero_point`` (whether the
    datapath subtracts an input zero point, which may then lie anywhere in the code range). Refused: a
    binary input with a zero point, and a target whose L1 limit is 0 (no weight code could be non-zero)."""

    acc_bits: int
    input_bits: int
    input_signed: bool
    input_zero_point: bool = True

    def __post_init__(self) -> None:
        _int_in("acc_bits", self.acc_bits, 8, 32)
        _int_in("input_bits", self.input_bits, 1, 8)
        for name in ("input_signed", "input_zero_point"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AccumulatorTarget.{name}={getattr(self, name)!r} must be a bool (True or False)")
        if self.input_bits == 1 and self.input_signed and self.input_zero_point:
            raise ValueError("AccumulatorTarget.input_zero_point=True is not allowed for binary inputs "
                             "(input_bits=1, input_signed=True): codes are {-1, +1}")  # fmt: skip
        if self.l1_limit < 1:
            d = self.max_input_offset
            need = next(a for a in range(self.acc_bits, 34) if ((1 << (a - 1)) - 1) // d >= 1)
            raise ValueError(
                f"AccumulatorTarget: acc_bits={self.acc_bits} cannot hold a single product of "
                f"{self.input_kind} inputs (offsets up to {d}): the L1 limit floor({(1 << (self.acc_bits - 1)) - 1} "
                f"/ {d}) is 0; acc_bits must be at least {need} for input_bits={self.input_bits}"
            )

    @classmethod
    def of(cls, datapath: Datapath) -> "AccumulatorTarget":
        """The accumulator and activation operand of ``datapath``."""
        if not isinstance(datapath, Datapath):
            raise TypeError(f"AccumulatorTarget.of expects a Datapath, got {type(datapath).__name__}")
        return cls(datapath.acc_bits, datapath.a_bits, datapath.a_signed, datapath.a_zero_point)

    @property
    def input_kind(self) -> str:
        """``uint4``, ``int8``, ``binary``: the input code type."""
        return code_kind(self.input_bits, self.input_signed)

    @property
    def max_input_offset(self) -> int:
        """``D`` of the module doc."""
        return max_input_offset(self.input_bits, self.input_signed, self.input_zero_point)

    @property
    def l1_limit(self) -> int:
        """``T = floor((2^(A-1) - 1) / D)``: the largest per-channel L1 norm of weight codes that no input can
        make overflow (module doc)."""
        return ((1 << (self.acc_bits - 1)) - 1) // self.max_input_offset

    def describe(self) -> str:
        """One line for reprs and tables."""
        zp = "with a zero point" if self.input_zero_point else "without a zero point"
        return f"acc{self.acc_bits} for {self.input_kind} inputs {zp} (||q||_1 <= {self.l1_limit})"
