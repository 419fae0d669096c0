"""Backends of the integer datapath: one protocol, two implementations, found by name.

A :class:`Backend` runs the ops of docs/arithmetic.md on NumPy arrays of codes, one method
per op, each taking the op's validated record from :mod:`quant.contract.attrs` and its
operands. Operand dtypes are the C kernels' (activation codes int8 when
``Datapath.a_signed`` else uint8, weight codes likewise per ``w_signed`` or packed weights,
biases and ``requantize`` inputs int32); results are output codes, int8 when
``attrs.output.signed`` else uint8 (pooling and ``lut`` keep the input's or the table's
dtype). Two backends are built in:

* ``"torch_ref"``: the int64 torch reference, :mod:`quant.reference.backend`;
* ``"c"``: the C99 kernels, :mod:`kernels.backend` (imported on first use: nothing in
  ``quant`` imports ``kernels``).

Others are added with :func:`register_backend`. ``get_backend(name)`` imports a built-in
backend's module the first time it is asked for.

>>> sorted(backend_names())
['c', 'torch_ref']
>>> get_backend("torch_ref").name
'torch_ref'
>>> get_backend("tpu")
Traceback (most recent call last):
...
ValueError: backend='tpu' is not one of 'c', 'torch_ref'
"""

from __future__ import annotations

import importlib
from typing import Any, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

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
from quant.contract.custom import CustomOpAttrs
from quant.contract.layernorm import LayerNormAttrs
from quant.contract.gru import GruAttrs
from quant.contract.lstm import LstmAttrs

__all__ = ["Backend", "PackedCodes", "backend_names", "get_backend", "register_backend"]

Codes = npt.NDArray[Any]


@runtime_checkable
class PackedCodes(Protocol):
    """Weights stored packed (section 3): ``data`` uint8 ``(C_out, ceil(K * bits / 8))``, the ``(C_out, K)``
    matrix view packed along ``K``; ``bits`` in {1, 2, 4}; ``signed``; ``shape`` the unpacked shape
    (``kernels.PackedWeights`` is one)."""

    @property
    def data(self) -> npt.NDArray[np.uint8]: ...

    @property
    def bits(self) -> int: ...

    @property
    def signed(self) -> bool: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


Weights = Union[Codes, PackedCodes]


class Backend(Protocol):
    """The ops of the integer datapath on one implementation (see the module docstring)."""

    name: str

    def conv2d(self, attrs: Conv2dAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """conv2d: ``x (N, C_in, H, W)``, ``w (C_out, C_in/groups, kh, kw)``, ``bias (C_out,)`` or None."""
        ...

    def linear(self, attrs: LinearAttrs, x: Codes, w: Weights, bias: Optional[Codes]) -> Codes:
        """linear: ``x (M, K)``, ``w (N, K)``, ``bias (N,)`` or None."""
        ...

    def requantize(self, attrs: RequantizeAttrs, q: Codes) -> Codes:
        """requantize of int32 ``q``."""
        ...

    def add(self, attrs: AddAttrs, a: Codes, b: Codes) -> Codes:
        """add of two same-shape activation code arrays."""
        ...

    def mul(self, attrs: MulAttrs, a: Codes, b: Codes) -> Codes:
        """elementwise product; ``b`` of ``a``'s shape or broadcast along its trailing dimensions."""
        ...

    def softmax(self, attrs: SoftmaxAttrs, x: Codes) -> Codes:
        """integer softmax over ``attrs.axis``."""
        ...

    def layernorm(self, attrs: LayerNormAttrs, x: Codes, gamma: Optional[Codes], bias: Optional[Codes]) -> Codes:
        """integer LayerNorm over the last axis (int8 ``gamma`` codes, int32 ``bias``, either may be None)."""
        ...

    def lstm(self, attrs: LstmAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
             b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """one integer LSTM layer over ``x (N, T, F)``: the hidden states ``(N, T, H)``."""
        ...

    def gru(self, attrs: GruAttrs, x: Codes, w_ih: Weights, w_hh: Weights, b_ih: Optional[Codes],
            b_hh: Optional[Codes]) -> Codes:  # fmt: skip
        """one integer GRU layer over ``x (N, T, F)``: the hidden states ``(N, T, H)``."""
        ...

    def avg_pool2d(self, attrs: AvgPool2dAttrs, x: Codes) -> Codes:
        """average pooling of ``x (N, C, H, W)``."""
        ...

    def max_pool2d(self, attrs: MaxPool2dAttrs, x: Codes) -> Codes:
        """max pooling of ``x (N, C, H, W)``."""
        ...

    def lut(self, attrs: LutAttrs, x: Codes, table: Codes) -> Codes:
        """``table[x - qmin]``."""
        ...

    def custom(self, attrs: CustomOpAttrs, xs: Sequence[Codes]) -> Codes:
        """A registered custom op (:mod:`quant.contract.custom`) on its input codes: ``(N, *attrs.shape)``."""
        ...


#: Built-in backends: name -> the module whose ``BACKEND`` implements it (imported on first use).
_BUILTIN: dict[str, str] = {"torch_ref": "quant.reference.backend", "c": "kernels.backend"}
_REGISTERED: dict[str, Backend] = {}


def backend_names() -> list[str]:
    """The names :func:`get_backend` knows: the built-in ones and the registered ones."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` available as ``get_backend(backend.name)``; a name is registered once."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a backend needs a non-empty str name, got {name!r}")
    if name in _REGISTERED:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTERED[name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a built-in one is imported (and registers itself) on first use."""
    if name not in _REGISTERED:
        module = _BUILTIN.get(name) if isinstance(name, str) else None
        if module is None:
            raise ValueError(f"backend={name!r} is not one of {', '.join(map(repr, backend_names()))}")
        importlib.import_module(module)
        if name not in _REGISTERED:
            raise RuntimeError(f"module {module} did not register the backend {name!r}")
    return _REGISTERED[name]
