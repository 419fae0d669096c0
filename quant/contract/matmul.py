"""``matmul`` of two activation tensors (docs/arithmetic.md section 6.4): the attention's ``Q K^T`` and ``P V``.

``y[..., m, n] = requant(sum_k (a[..., m, k] - z_a) (b[..., k, n] - z_b))``: per batch index the arithmetic
of ``linear`` (sections 4, 5) with ``b^T`` as its ``(N, K)`` operand, ``z_b`` its zero point and no bias,
both operands being activation codes of the datapath (``a_bits``, ``a_signed``, its activation zero
points), one per-tensor multiplier ``M = s_a s_b / s_y``. The record holds the :class:`LinearAttrs` of that
linear, built once, so both backends run it through their own ``linear`` (the C kernels included) and
agree by construction with everything proven of ``linear``.

>>> import numpy as np
>>> from quant.contract.backend import get_backend
>>> from quant.contract.datapath import Datapath
>>> attrs = MatmulAttrs.build(k=2, n=2, a_zero_point=1, b_zero_point=-1, multiplier=0.5, y_zero_point=0,
...                           datapath=Datapath.preset("tflite_int8"))
>>> a = np.array([[[3, 1], [1, 5]]], dtype=np.int8); b = np.array([[[1, 0], [-1, 2]]], dtype=np.int8)
>>> run_matmul(get_backend("torch_ref"), attrs, a, b).tolist()   # (a - 1) @ (b + 1) = [[4, 2], [0, 12]], halved
[[[2, 1], [0, 6]]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

from quant.contract.args import check_datapath, scalar_int
from quant.contract.attrs import MAX_DIM, LinearAttrs, OutputCodes
from quant.contract.backend import Backend
from quant.contract.datapath import Datapath
from quant.contract.multiplier import MultiplierLike, multiplier_values

__all__ = ["MatmulAttrs", "run_matmul"]

Codes = npt.NDArray[Any]


def _renamed(err: ValueError) -> ValueError:
    """A message of the inner linear record in matmul's own argument names."""
    text = str(err).replace("linear:", "matmul:").replace("x_zero_point", "a_zero_point")
    return ValueError(text.replace("w_zero_point", "b_zero_point").replace("w_bits", "a_bits"))


@dataclass(frozen=True)
class MatmulAttrs:
    """matmul (section 6.4): the reduction length ``k``, the output columns ``n``, and the linear it is."""

    k: int
    n: int
    linear: LinearAttrs
    op: str = "matmul"

    @classmethod
    def build(
        cls,
        *,
        k: int,
        n: int,
        a_zero_point: int,
        b_zero_point: int,
        multiplier: MultiplierLike,
        y_zero_point: int,
        y_bits: int = 8,
        y_signed: bool = True,
        y_min: Optional[int] = None,
        y_max: Optional[int] = None,
        datapath: Datapath,
    ) -> "MatmulAttrs":
        """The checked attributes of a matmul of ``(..., M, k)`` by ``(..., k, n)`` activation codes."""
        op = "matmul"
        dp = check_datapath(datapath)
        dims = [scalar_int(v, name, op) for v, name in ((k, "k"), (n, "n"))]
        for v, name in zip(dims, ("k", "n")):
            if not 1 <= v <= MAX_DIM:
                raise ValueError(f"{op}: {name}={v} must be in 1..{MAX_DIM}")
        try:
            per_channel = bool(multiplier_values(multiplier, "multiplier")[1])
        except (TypeError, ValueError) as err:
            raise type(err)(f"{op}: {err}") from None
        if per_channel:
            raise ValueError(f"{op}: multiplier must be one value (both operands have per-tensor scales)")
        # b is an activation operand: the linear's weight operand takes the activation's code type
        as_linear = dp.with_(w_bits=dp.a_bits, w_signed=dp.a_signed, w_zero_point=dp.a_zero_point)
        try:
            linear = LinearAttrs.build(
                w_shape=(dims[1], dims[0]), x_zero_point=a_zero_point, w_zero_point=b_zero_point,
                y_zero_point=y_zero_point, multiplier=multiplier, y_bits=y_bits, y_signed=y_signed, y_min=y_min,
                y_max=y_max, datapath=as_linear,
            )  # fmt: skip
        except ValueError as err:
            raise _renamed(err) from None
        return cls(dims[0], dims[1], linear)

    @property
    def output(self) -> OutputCodes:
        """The output codes (the linear's)."""
        return self.linear.output

    def build_args(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`build` that give this record again (JSON-able, datapath apart)."""
        lin = self.linear.build_args()
        return {"k": self.k, "n": self.n, "a_zero_point": lin["x_zero_point"], "b_zero_point": lin["w_zero_point"][0],
                "multiplier": lin["multiplier"], **self.linear.output.build_args()}  # fmt: skip

    def output_shape(self, a_shape: Sequence[int], b_shape: Sequence[int]) -> tuple[int, ...]:
        """``(..., M, n)`` for ``a (..., M, k)`` and ``b (..., k, n)`` of the same batch shape."""
        op = self.op
        a, b = tuple(int(d) for d in a_shape), tuple(int(d) for d in b_shape)
        if len(a) < 2 or len(b) < 2 or len(a) != len(b):
            raise ValueError(f"{op}: a and b must be (..., M, K) and (..., K, N) of the same rank >= 2, got {a}, {b}")
        if a[:-2] != b[:-2]:
            raise ValueError(f"{op}: a and b must have the same batch dimensions, got {a[:-2]} and {b[:-2]}")
        if a[-1] != self.k or b[-2] != self.k or b[-1] != self.n:
            raise ValueError(f"{op}: a {a} and b {b} do not fit k={self.k}, n={self.n}")
        if any(d < 0 for d in a) or a[-2] < 0:
            raise ValueError(f"{op}: negative dimension in {a}")
        return (*a[:-1], self.n)


def run_matmul(backend: Backend, attrs: MatmulAttrs, a: Codes, b: Codes) -> Codes:
    """matmul of ``attrs`` on ``backend``: one ``linear`` per batch index, ``b``'s matrix transposed."""
    out_shape = attrs.output_shape(a.shape, b.shape)
    m, batch = a.shape[-2], math.prod(a.shape[:-2])
    a2 = np.ascontiguousarray(a).reshape(batch, m, attrs.k)
    b2 = np.ascontiguousarray(b).reshape(batch, attrs.k, attrs.n)
    dtype = np.int8 if attrs.linear.output.signed else np.uint8
    y = np.empty((a2.shape[0], m, attrs.n), dtype=dtype)
    for i in range(a2.shape[0]):  # an empty batch: no linear, the empty output (section 6)
        y[i] = backend.linear(attrs.linear, np.ascontiguousarray(a2[i]), np.ascontiguousarray(b2[i].T), None)
    return y.reshape(out_shape)
