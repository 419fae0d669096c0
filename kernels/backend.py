"""The C99 kernels as a :class:`quant.contract.backend.Backend` named ``"c"``.

``CKernels(isa)`` runs the ``run_<op>`` wrappers of :mod:`kernels.api` with a fixed
instruction set for the hot loops ("auto": the widest available; every choice gives the same
bits). The registered ``"c"`` backend uses "auto"; tests build one per instruction set.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from kernels import api, custom
from kernels._abi import isa_code
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

__all__ = ["BACKEND", "CKernels"]

Codes = npt.NDArray[Any]


#: The :class:`kernels.PackedWeights` made for each packed parameter object (a program's
#: ``PackedTensor``), with the data shape it was validated at: validating costs about a small kernel
#: call. Only frozen dataclasses compared by identity are kept (their fields cannot be rebound and
#: equal-valued copies stay apart); the wrapper shares the parameter's data array, so an in-place
#: change of the codes reaches the next call, and one of the array's own shape, dtype or layout makes
#: the next call validate again.
_PACKED: weakref.WeakKeyDictionary[Any, tuple[api.PackedWeights, tuple[int, ...]]] = weakref.WeakKeyDictionary()


def _kept_by_identity(w: object) -> bool:
    params = getattr(type(w), "__dataclass_params__", None)
    return bool(getattr(params, "frozen", False)) and type(w).__hash__ is object.__hash__


def _c_weights(w: Weights) -> Union[Codes, api.PackedWeights]:
    """Codes as given; other packed weights as a (validated) :class:`kernels.PackedWeights`."""
    if isinstance(w, (np.ndarray, api.PackedWeights)):
        return w
    keep = _kept_by_identity(w)
    if keep:
        found = _PACKED.get(w)
        if found is not None:
            packed, data_shape = found
            data = packed.data
            if data is w.data and data.shape == data_shape and data.dtype == np.uint8 and data.flags.c_contiguous:
                return packed
    packed = api.PackedWeights(data=w.data, bits=w.bits, signed=w.signed, shape=tuple(w.shape))
    if keep:
        try:
            _PACKED[w] = (packed, packed.data.shape)
        except TypeError:  # no weak references to this type: validated on every call
            pass
    return packed


class CKernels:
    """``kernels`` behind the backend protocol, with instruction set ``isa``."""

    def __init__(self, isa: str = "auto") -> None:
        isa_code(isa)  # refuse an unknown name now, not at the first call
        self.isa = isa
        self.name = "c" if isa == "auto" else f"c[{isa}]"

    def conv2d(self, attrs: Conv2dAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.conv2d`."""
        return api.run_conv2d(attrs, x, _c_weights(w), bias, isa=self.isa)

    def linear(self, attrs: LinearAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.linear`."""
        return api.run_linear(attrs, x, _c_weights(w), bias, isa=self.isa)

    def requantize(self, attrs: RequantizeAttrs, q: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.requantize`."""
        return api.run_requantize(attrs, q, isa=self.isa)

    def add(self, attrs: AddAttrs, a: Codes, b: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.add`."""
        return api.run_add(attrs, a, b)

    def mul(self, attrs: MulAttrs, a: Codes, b: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.mul`."""
        return api.run_mul(attrs, a, b, isa=self.isa)

    def softmax(self, attrs: SoftmaxAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.softmax`."""
        return api.run_softmax(attrs, x)

    def layernorm(self, attrs: LayerNormAttrs, x: Codes, gamma: Optional[Codes], bias: Optional[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.layernorm`."""
        return api.run_layernorm(attrs, x, gamma, bias, isa=self.isa)

    def lstm(self, attrs: LstmAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
             b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """See :meth:`quant.contract.backend.Backend.lstm`."""
        return api.run_lstm(attrs, x, _c_weights(w_ih), _c_weights(w_hh), b_ih, b_hh)

    def gru(self, attrs: GruAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
            b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """See :meth:`quant.contract.backend.Backend.gru`."""
        return api.run_gru(attrs, x, _c_weights(w_ih), _c_weights(w_hh), b_ih, b_hh)

    def avg_pool2d(self, attrs: AvgPool2dAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.avg_pool2d`."""
        return api.run_avg_pool2d(attrs, x)

    def max_pool2d(self, attrs: MaxPool2dAttrs, x: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.max_pool2d`."""
        return api.run_max_pool2d(attrs, x)

    def lut(self, attrs: LutAttrs, x: Codes, table: Codes) -> Codes:
        """See :meth:`quant.contract.backend.Backend.lut`."""
        return api.run_lut(attrs, x, table)

    def custom(self, attrs: CustomOpAttrs, xs: Sequence[Codes]) -> Codes:
        """See :meth:`quant.contract.backend.Backend.custom` (the op's C function, whatever ``isa``)."""
        return custom.run_custom(attrs, xs)


#: The registered ``"c"`` backend (instruction set chosen at run time).
BACKEND = register_backend(CKernels())
