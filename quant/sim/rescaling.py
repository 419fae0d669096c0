"""Equivalent rescaling and bias correction held as quantizer state.

Cross-layer equalization and SmoothQuant move scale between two layers without changing what the float model
computes: for a producer whose output channel ``c`` feeds its consumer's input channel ``c`` through ops that
commute with a positive per-channel factor (ReLU, max pooling, nothing),

    producer:  W_p[c, ...] -> W_p[c, ...] / f_c,   b_p[c] -> b_p[c] / f_c
    consumer:  W_c[:, c, ...] -> W_c[:, c, ...] f_c

and bias correction adds a constant per output channel to what the quantized layer computes. :mod:`quant.ptq`
never writes such changes into the model's float parameters: the layer's weight quantizer holds them,

    prescale       per element of the weight (float32, the weight's shape): the quantizer quantizes
                   ``w * prescale`` (its codes, observed range and values are the rescaled weight's:
                   ``forward(w) = fake_quantize(w * prescale)``);
    bias_prescale  per element of the bias (float32, the bias's shape): the layer's bias is ``b * bias_prescale``;
    bias_shift     per element of the bias: added to the layer's bias while the quantizer quantizes (a correction
                   of the quantized model; a layer without a bias computes with the shift alone),

so the layer computes with ``b * bias_prescale + bias_shift`` (:func:`shifted_bias`). All of it applies only while
the quantizer is enabled: a disabled handle (``handle.disable()``) computes the original float model, and
``handle.remove()`` restores it bit for bit. With the quantizers enabled but passing through (``quantizing=False``)
the model is the rescaled float model: the same function as the original up to float rounding, without the
corrections. The lowering and exact mode take the rescaled weight's codes
(:meth:`quant.sim.quantizer.Quantizer.codes`) and the shifted bias, so the integer program computes what the
simulation does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, cast

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from quant.sim.quantizer import Quantizer

__all__ = ["SHIFTABLE", "bias_shape", "check_prescale", "check_bias_shift", "shifted_bias", "output_delta", "shift_output",
           "ensure_bias_hook", "remove_bias_hooks", "install_bias_hook_after_load"]

#: The module types whose weight quantizer may hold a bias shift: the shift's channel axis is the output's
#: axis 1 for a convolution, the trailing axes for a Linear and a LayerNorm.
SHIFTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LayerNorm)


def _float_tensor(t: torch.Tensor, shape: tuple[int, ...], what: str, fits: str, owner: str) -> torch.Tensor:
    """``t`` as a contiguous float32 tensor after checking it is a floating tensor of ``shape``."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{owner}: {what} must be a floating tensor, got {got}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{owner}: {what} of shape {tuple(t.shape)} does not fit {fits} {tuple(shape)}")
    return t.detach().to(torch.float32).contiguous()


def check_prescale(factors: torch.Tensor, shape: tuple[int, ...], owner: str) -> torch.Tensor:
    """``factors`` as a contiguous float32 tensor after checking it fits a tensor of ``shape`` (the same shape)
    with every factor finite and > 0 (a positive rescaling commutes with ReLU and max pooling; a sign flip
    would not); ``ValueError``/``TypeError`` naming ``owner`` otherwise."""
    out = _float_tensor(factors, shape, "prescale factors", "a tensor of shape", owner)
    usable = torch.isfinite(out) & (out > 0)
    if out.numel() and not bool(usable.all()):
        raise ValueError(f"{owner}: prescale factors must be finite and > 0, got {out[~usable].reshape(-1)[:4].tolist()}")
    return out


def check_bias_shift(shift: torch.Tensor, channels: tuple[int, ...], owner: str) -> torch.Tensor:
    """``shift`` as a contiguous float32 tensor of shape ``channels`` (the layer's bias shape), finite;
    ``ValueError``/``TypeError`` naming ``owner`` otherwise."""
    out = _float_tensor(shift, channels, "a bias shift", "the layer's bias shape", owner)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{owner}: a bias shift must be finite")
    return out


def bias_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape of ``module``'s bias (whether it has one or not): output channels, or LayerNorm's
    normalized shape; ``TypeError`` for a module outside :data:`SHIFTABLE`."""
    if isinstance(module, nn.LayerNorm):
        return tuple(module.normalized_shape)
    if isinstance(module, nn.Linear):
        return (module.out_features,)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return (module.out_channels,)
    raise TypeError(f"a bias shift applies to {', '.join(t.__name__ for t in SHIFTABLE)}, not {type(module).__name__}")


def _given(t: Optional[torch.Tensor]) -> bool:
    return t is not None and t.numel() > 0


def shifted_bias(bias: Optional[torch.Tensor], factors: Optional[torch.Tensor],
                 shift: Optional[torch.Tensor]) -> Optional[torch.Tensor]:  # fmt: skip
    """The bias a layer computes with, detached: ``bias * factors + shift`` (float32; an empty or None ``factors``
    or ``shift`` is none); ``shift`` alone without a bias; None when there is neither."""
    out = None if bias is None else bias.detach()
    if out is not None and _given(factors):
        out = out * factors.to(out.dtype)  # type: ignore[union-attr]
    if _given(shift):
        out = shift.detach().clone() if out is None else out + shift.to(out.dtype)  # type: ignore[union-attr]
    return out


def output_delta(bias: Optional[torch.Tensor], factors: Optional[torch.Tensor], shift: Optional[torch.Tensor],
                 quantizing: bool) -> Optional[torch.Tensor]:  # fmt: skip
    """What to add to the output of a layer that computed with its float bias: ``bias (factors - 1)`` plus
    ``shift`` while ``quantizing``; None when that is nothing."""
    delta = None
    if bias is not None and _given(factors):
        delta = bias * (factors.to(bias.dtype) - 1.0)  # type: ignore[union-attr]
    if quantizing and _given(shift):
        delta = shift if delta is None else delta + shift.to(delta.dtype)  # type: ignore[union-attr]
    return delta


def shift_output(module: nn.Module, output: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``output + shift`` (a bias-shaped tensor) along the layer's channel axes (axis 1 of a convolution's output, the trailing axes
    of a Linear's and a LayerNorm's)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return output + shift.to(output.dtype).reshape(-1, *([1] * (output.dim() - 2)))
    return output + shift.to(output.dtype)


def _weight_quantizer(module: nn.Module) -> Optional["Quantizer"]:
    """The weight quantizer under ``module``'s parametrization (dictionary lookups only: this runs per forward)."""
    plists = module._modules.get("parametrizations")
    plist = plists._modules.get("weight") if plists is not None else None
    if plist is None:
        return None
    for q in plist._modules.values():
        if q is not None and "bias_shift" in q._buffers:
            return cast("Quantizer", q)
    return None


def _shift_bias(module: nn.Module, args: tuple[object, ...], output: object) -> Optional[torch.Tensor]:
    """Forward hook (the module's first): the output with the weight quantizer's bias factors and shift while it
    is enabled (its shift while it quantizes); nothing without them."""
    q = _weight_quantizer(module)
    if q is None or not q.enabled or not isinstance(output, torch.Tensor):
        return None
    delta = output_delta(module._parameters.get("bias"), q._buffers["bias_prescale"], q._buffers["bias_shift"],
                         q.quantizing)  # fmt: skip
    return None if delta is None else shift_output(module, output, delta)


def ensure_bias_hook(module: nn.Module) -> None:
    """Give ``module`` the forward hook that applies its weight quantizer's bias factors and shift, first of its
    hooks (before an output quantizer's), unless it has it. Installed when they are set (a module without them
    pays nothing per forward) or loaded (:func:`install_bias_hook_after_load`)."""
    if _shift_bias not in module._forward_hooks.values():
        module.register_forward_hook(_shift_bias, prepend=True)


def install_bias_hook_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: the bias hook for a module whose loaded weight quantizer holds bias factors
    or a shift."""
    q = _weight_quantizer(module)
    if q is not None and (q.bias_shift.numel() or q.bias_prescale.numel()):
        ensure_bias_hook(module)


def remove_bias_hooks(module: nn.Module) -> None:
    """Take both hooks above off ``module``."""
    for hooks, fn in ((module._forward_hooks, _shift_bias), (module._load_state_dict_post_hooks, install_bias_hook_after_load)):
        for key in [k for k, v in hooks.items() if v is fn]:
            del hooks[key]
            module._forward_hooks_always_called.pop(key, None)
