"""``quant.register_op``: a custom op with a float function, an integer reference and a C twin.

The function :func:`register_op` returns is what a model calls, like any torch function::

    nms = quant.register_op("detection.nms", n_inputs=2, float_fn=..., integer_params=..., reference=...,
                            param_names=("iou_q16", "score_min", "max_detections", "fill"), c_symbol="qk_nms")
    scores = nms(boxes, scores, iou_threshold=0.5)      # inside forward()

It computes ``float_fn`` (so fast mode, training and float evaluation are the user's function),
and it takes part in torch's ``__torch_function__`` protocol, so ``torch.fx`` records it as one
graph node and the calibration's function recorder (:mod:`quant.sim.edges`) observes its output
as one tensor: a registered op is traced, calibrated, lowered (one program node whose record is
:class:`quant.contract.custom.CustomOpAttrs`), run on both backends and verified like a built-in
op. Tensors are its positional arguments; options (thresholds, sizes) are keyword arguments, which
``integer_params`` turns into the integer parameters of the record.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch.overrides import handle_torch_function, has_torch_function

from quant.contract.custom import (
    CustomOpAttrs,
    CustomOpDef,
    CustomOperand,
    register_custom_op,
    unregister_custom_op,
)
from quant.contract.datapath import Datapath

__all__ = ["custom_attrs", "custom_op_of", "elementwise", "elementwise_function_of", "register_op", "unregister_op"]

_ATTRIBUTE = "__quant_custom_op__"
_ELEMENTWISE = "__quant_elementwise__"


def elementwise(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Mark ``fn(x, *constants, **options)`` as an elementwise function of ``x`` (each output element depends
    on the input element at the same place only), so that it lowers to one exact lookup table over the
    input's ``2^b`` codes (docs/arithmetic.md section 9) instead of being traced into its parts::

        @quant.elementwise
        def swish_beta(x, beta=1.5):
            return x * torch.sigmoid(beta * x)

    The model calls it as before; ``torch.fx`` and calibration see one call, as for a custom op.
    """
    if not callable(fn):
        raise TypeError(f"elementwise: {fn!r} is not callable")

    @functools.wraps(fn)
    def function(x: Any, *args: Any, **kwargs: Any) -> Any:
        if has_torch_function((x,)):
            return handle_torch_function(function, (x,), x, *args, **kwargs)
        return fn(x, *args, **kwargs)

    setattr(function, _ELEMENTWISE, fn)
    return function


def elementwise_function_of(target: object) -> Optional[Callable[..., torch.Tensor]]:
    """The function :func:`elementwise` wrapped, when ``target`` (a traced node's target) is one, else None."""
    found = getattr(target, _ELEMENTWISE, None)
    return found if callable(found) else None


def register_op(
    name: str,
    *,
    float_fn: Callable[..., torch.Tensor],
    integer_params: Callable[..., Mapping[str, Any]],
    reference: Callable[..., torch.Tensor],
    param_names: Sequence[str],
    c_symbol: str,
    c_library: Optional[str] = None,
    c_sources: Sequence[str] = (),
    n_inputs: int = 1,
    output_like: Optional[int] = None,
    check_params: Optional[Callable[[CustomOpAttrs], None]] = None,
) -> Callable[..., torch.Tensor]:
    """Register the custom op ``name`` (a dotted name, e.g. ``"audio.log_mel"``) and return the function a
    model calls (see the module docstring and docs/arithmetic.md section 10).

    * ``float_fn(*tensors, **options)``: the real-valued op;
    * ``integer_params(inputs, output, datapath, **options)``: the integer parameters by name (exactly
      ``param_names``; ints or flat sequences of ints) from the :class:`~quant.contract.custom.CustomOperand`
      of each input and of the output (qparams, code type, per-sample shape);
    * ``reference(*codes, **params)``: the integer definition on int64 torch tensors of codes, returning
      the output codes ``(N, *output shape)``;
    * ``c_symbol`` in ``c_library`` (a shared library path; ``None``: the kernel library): the C twin, of
      the ABI of ``kernels/c/include/qk_custom.h``, receiving the parameters in ``param_names`` order;
    * ``c_sources``: the C99 sources of that function, which ``kernels.export_c`` copies into a standalone
      folder (not needed for a function of the kernel library);
    * ``output_like``: the index of the input whose qparams the output keeps, or ``None`` for qparams
      from calibration (the recipe's activation scheme, like any other tensor);
    * ``check_params(attrs)``: raises ``ValueError`` for parameters or code types the op cannot take;
      it runs when the op's record is built, so both backends refuse alike (and neither computes first).
    """
    definition = register_custom_op(CustomOpDef(
        name=name, n_inputs=n_inputs, param_names=tuple(param_names), float_fn=float_fn,
        integer_params=integer_params, reference=reference, c_symbol=c_symbol, c_library=c_library,
        output_like=output_like, doc=(float_fn.__doc__ or "").strip(), c_sources=tuple(str(s) for s in c_sources),
        check_params=check_params,
    ))  # fmt: skip

    def op(*tensors: Any, **options: Any) -> Any:
        if len(tensors) != definition.n_inputs:
            raise TypeError(f"{name}: takes {definition.n_inputs} tensor argument(s) (options as keywords), "
                            f"got {len(tensors)} positional argument(s)")  # fmt: skip
        if has_torch_function(tensors):
            return handle_torch_function(op, tensors, *tensors, **options)
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: argument {i} must be a tensor, got {type(t).__name__}")
        return float_fn(*tensors, **options)

    short = name.rsplit(".", 1)[1]
    op.__name__ = op.__qualname__ = short
    op.__doc__ = f"The registered custom op {name!r}: {definition.doc or 'no description'}"
    setattr(op, _ATTRIBUTE, definition)
    return op


def unregister_op(name: str) -> None:
    """Forget the custom op ``name`` (programs using it no longer load or run)."""
    try:
        unregister_custom_op(name)
    except KeyError:
        raise ValueError(f"unregister_op: no custom op named {name!r} is registered") from None


def custom_op_of(target: object) -> Optional[CustomOpDef]:
    """The custom op whose function ``target`` is (a traced node's target), or None."""
    found = getattr(target, _ATTRIBUTE, None)
    return found if isinstance(found, CustomOpDef) else None


def custom_attrs(
    op: CustomOpDef,
    inputs: Sequence[CustomOperand],
    output: CustomOperand,
    datapath: Datapath,
    options: Mapping[str, Any],
) -> CustomOpAttrs:
    """The validated record of one call of ``op``: its ``integer_params`` on the operands and options."""
    try:
        params = op.integer_params(tuple(inputs), output, datapath, **dict(options))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{op.name}: integer_params: {err}") from None
    return CustomOpAttrs.build(op=op.name, params=params, x_bits=[x.bits for x in inputs],
                               x_signed=[x.signed for x in inputs], y_bits=output.bits, y_signed=output.signed,
                               shape=output.shape)  # fmt: skip
