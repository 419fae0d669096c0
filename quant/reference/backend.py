"""The int64 torch reference as a :class:`quant.contract.backend.Backend` named ``"torch_ref"``.

NumPy operands become torch tensors (without a copy where possible), the ``run_<op>`` of
the reference computes in int64, and the result is returned as NumPy codes of the op's
output dtype (int8/uint8), exactly as the C backend returns them. Packed weights are unpacked
by :func:`quant.reference.packing.unpack`, the reference's own reading of section 3.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt
import torch

from quant.contract.attrs import (
    AddAttrs,
    AvgPool2dAttrs,
    Conv2dAttrs,
    LinearAttrs,
    LutAttrs,
    MaxPool2dAttrs,
    MulAttrs,
    RequantizeAttrs,
    SoftmaxAttrs,
)
from quant.contract.backend import Weights, register_backend
from quant.contract.custom import CustomOpAttrs
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs
from quant.reference.add import run_add
from quant.reference.conv2d import run_conv2d
from quant.reference.custom import run_custom
from quant.reference.layernorm import run_layernorm
from quant.reference.linear import run_linear
from quant.reference.gru import run_gru
from quant.reference.lstm import run_lstm
from quant.reference.lut import run_lut
from quant.reference.mul import run_mul
from quant.reference.packing import unpack
from quant.reference.pool import run_avg_pool2d, run_max_pool2d
from quant.reference.requantize import run_requantize
from quant.reference.softmax import run_softmax

__all__ = ["BACKEND", "TorchReference"]

Codes = npt.NDArray[Any]


def _tensor(a: Any) -> Any:
    """A NumPy array as a torch tensor sharing its memory; anything else unchanged (the ops name bad types)."""
    return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


def _weights(w: Weights) -> Any:
    if isinstance(w, np.ndarray):
        return _tensor(w)
    if all(hasattr(w, f) for f in ("data", "bits", "signed", "shape")):  # PackedCodes
        k = math.prod(w.shape[1:])
        return unpack(torch.from_numpy(w.data), w.bits, (w.shape[0], k), w.signed).reshape(w.shape)
    return w


def _codes(t: torch.Tensor, signed: bool) -> Codes:
    out: Codes = t.numpy().astype(np.int8 if signed else np.uint8)
    return out


class TorchReference:
    """``quant.reference`` behind the backend protocol."""

    name = "torch_ref"

    def conv2d(self, attrs: Conv2dAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.conv2d`."""
        return _codes(run_conv2d(attrs, _tensor(x), _weights(w), _tensor(bias)), attrs.output.signed)

    def linear(self, attrs: LinearAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.linear`."""
        return _codes(run_linear(attrs, _tensor(x), _weights(w), _tensor(bias)), attrs.output.signed)

    def requantize(self, attrs: RequantizeAttrs, q: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.requantize`."""
        return _codes(run_requantize(attrs, _tensor(q)), attrs.output.signed)

    def add(self, attrs: AddAttrs, a: Codes, b: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.add`."""
        return _codes(run_add(attrs, _tensor(a), _tensor(b)), attrs.output.signed)

    def mul(self, attrs: MulAttrs, a: Codes, b: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.mul`."""
        return _codes(run_mul(attrs, _tensor(a), _tensor(b)), attrs.output.signed)

    def softmax(self, attrs: SoftmaxAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.softmax`."""
        return _codes(run_softmax(attrs, _tensor(x)), attrs.output.signed)

    def layernorm(self, attrs: LayerNormAttrs, x: Codes, gamma: Optional[Codes], bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.layernorm`."""
        return _codes(run_layernorm(attrs, _tensor(x), _tensor(gamma), _tensor(bias)), attrs.output.signed)

    def lstm(self, attrs: LstmAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
             b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """See :meth:`quant.contract.backend.Backend.lstm`."""
        y = run_lstm(attrs, _tensor(x), _weights(w_ih), _weights(w_hh), _tensor(b_ih), _tensor(b_hh))
        return _codes(y, attrs.output.signed)

    def gru(self, attrs: GruAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
            b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """See :meth:`quant.contract.backend.Backend.gru`."""
        y = run_gru(attrs, _tensor(x), _weights(w_ih), _weights(w_hh), _tensor(b_ih), _tensor(b_hh))
        return _codes(y, attrs.output.signed)

    def avg_pool2d(self, attrs: AvgPool2dAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.avg_pool2d` (output in ``x``'s dtype)."""
        out: Codes = run_avg_pool2d(attrs, _tensor(x)).numpy().astype(x.dtype)
        return out

    def max_pool2d(self, attrs: MaxPool2dAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.max_pool2d` (output in ``x``'s dtype)."""
        out: Codes = run_max_pool2d(attrs, _tensor(x)).numpy().astype(x.dtype)
        return out

    def lut(self, attrs: LutAttrs, x: Codes, table: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.lut` (output in the table's dtype)."""
        out: Codes = run_lut(attrs, _tensor(x), _tensor(table)).numpy().astype(table.dtype)
        return out

    def custom(self, attrs: CustomOpAttrs, xs: Sequence[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.custom`."""
        return _codes(run_custom(attrs, *(_tensor(x) for x in xs)), attrs.y_signed)


#: The registered ``"torch_ref"`` backend.
BACKEND = register_backend(TorchReference())
