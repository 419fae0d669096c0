"""Fast-mode quantization of ``nn.MultiheadAttention``: the in-projection weight and every matmul operand.

``nn.MultiheadAttention`` computes through ``F.multi_head_attention_forward``, reading
``in_proj_weight`` (or ``q/k/v_proj_weight``) and ``out_proj.weight`` directly, so hooks on the module
see neither its projections nor its two attention matmuls. Its roles (:data:`ATTENTION_ROLES`, beside
weight/input/output) and where each quantizer acts:

=============  ======================================================================================
``weight``     ``in_proj_weight`` (or ``q_proj_weight``; ``k_proj_weight``/``v_proj_weight`` get
               quantizers of their own, ``weight_k``/``weight_v``) by a parametrization. ``out_proj`` is
               a Linear of its own: a recipe quantizes its weight as that module's (weight role only).
``input``      the query fed to the in-projection; the key and value inputs have quantizers of their own
               (``input_key``, ``input_value``: used only when they are other tensors than the query)
``query``      ``Q / sqrt(d)``, the left operand of ``Q K^T``
``key``        ``K``, its right operand
``scores``     ``Q K^T / sqrt(d)``, the softmax input (before an additive mask, which holds ``-inf``)
``attention``  the softmax output (after dropout in training), the left operand of ``P V``
``value``      ``V``, its right operand
``context``    ``P V`` with the heads merged, the input of the out-projection
``output``     the attention output (the first element of the returned pair)
=============  ======================================================================================

A role the recipe does not set takes the ``input`` scheme when there is one, so that with a rule of
weight and input schemes every operand of every matmul is quantized (nothing stays float silently);
a rule may set any role on its own (e.g. ``attention`` as unsigned 8-bit, its range is [0, 1]). The
activation roles take per-tensor schemes only (``attach`` refuses others by name).

The computation stays PyTorch's own: the module's forward runs on its explicit (non-fused) path with
a ``TorchFunctionMode`` that fake-quantizes the operands of the in-projection ``linear``, of the two
``bmm``/``baddbmm`` and of the out-projection ``linear`` as they are called, so masks, dropout,
``batch_first``, ``bias_k``/``bias_v``, ``add_zero_attn`` and their validation are exactly
``nn.MultiheadAttention``'s. The fused fast paths are kept off: the attention's own while it runs,
and an enclosing ``nn.TransformerEncoderLayer``'s by a forward pre-hook on the attention (that layer
fuses only when no submodule has hooks). With every quantizer disabled the output equals the module's explicit
path (``need_weights=True``) bit for bit; ``need_weights=False`` returns ``None`` weights as usual.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from quant.sim.modes import ModuleAttachment
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import ATTENTION_ROLES, QuantizerConfig

__all__ = ["ATTENTION_QUANTIZERS", "AttentionAttachment", "attach_attention", "check_attention"]

#: The submodule (an ``nn.ModuleDict`` keyed by role) that holds the activation quantizers.
ATTENTION_QUANTIZERS = "attention_quantizers"
#: Activation sites in the order the forward meets them; ``input_key``/``input_value`` take the input scheme.
_SITES = ("input", "input_key", "input_value", "query", "key", "scores", "attention", "value", "context", "output")
_OPTIONAL = frozenset({"input_key", "input_value"})


def _weight_names(module: nn.MultiheadAttention) -> list[tuple[str, str]]:
    """(quantizer key, parameter name) of the projection weights the module reads."""
    if module._qkv_same_embed_dim:
        return [("weight", "in_proj_weight")]
    return [("weight", "q_proj_weight"), ("weight_k", "k_proj_weight"), ("weight_v", "v_proj_weight")]


def _site_config(configs: Mapping[str, QuantizerConfig], site: str) -> Optional[QuantizerConfig]:
    role = "input" if site in _OPTIONAL else site
    return configs.get(role) or (configs.get("input") if role in ATTENTION_ROLES else None)


def check_attention(name: str, module: nn.MultiheadAttention, configs: Mapping[str, QuantizerConfig]) -> None:
    """``ValueError`` naming the module for schemes its activation sites cannot take, or a taken attribute."""
    if ATTENTION_QUANTIZERS in module._modules or hasattr(module, ATTENTION_QUANTIZERS):
        raise ValueError(f"attach: module {name!r} already has an attribute {ATTENTION_QUANTIZERS!r}")
    for site in _SITES:
        config = _site_config(configs, site)
        if config is not None and config.spec.granularity != "tensor":
            role = "input" if site in _OPTIONAL else site
            raise ValueError(
                f"attach: module {name!r} (MultiheadAttention): the {role} role takes per-tensor schemes only, got "
                f"{config.spec.describe()} (its tensors are reshaped per head inside the attention)"
            )


class _Sites:
    """The quantizers of one attention forward and where it is in its sequence of projections and matmuls."""

    def __init__(self, quantizers: Mapping[str, Quantizer]) -> None:
        self.quantizers = quantizers
        self.matmuls = 0
        self.projections = 0

    def q(self, site: str, x: Any) -> Any:
        quantizer = self.quantizers.get(site)
        return quantizer(x) if quantizer is not None and isinstance(x, torch.Tensor) else x

    def linear(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.matmuls == 0:  # an in-projection: of the query, then the key, then the value
            site = ("input", "input_key", "input_value")[min(self.projections, 2)]
            self.projections += 1
        else:
            site = "context"
        return F.linear(self.q(site, x), *args, **kwargs)

    def operands(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left, right = ("query", "key") if self.matmuls == 0 else ("attention", "value")
        self.matmuls += 1
        return self.q(left, a), self.q(right, b)

    def product(self, y: torch.Tensor) -> torch.Tensor:
        """The first matmul's result is the scores (quantized), the second's the context (quantized later)."""
        return self.q("scores", y) if self.matmuls == 1 else y


_ACTIVE: list[_Sites] = []  # the attention forwards in progress, innermost last


def _linear(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return _ACTIVE[-1].linear(x, *args, **kwargs)


class _TorchWithQuantizedMatmuls:
    """``torch`` as the attention's code sees it: ``bmm`` and ``baddbmm`` quantize their operands first."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def bmm(a: torch.Tensor, b: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        sites = _ACTIVE[-1]
        return sites.product(torch.bmm(*sites.operands(a, b), **kwargs))

    @staticmethod
    def baddbmm(input: torch.Tensor, a: torch.Tensor, b: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """``input + a @ b`` (the mask plus the scores, which are quantized before the mask's -inf joins them)."""
        if set(kwargs) - {"beta", "alpha"} or kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
            return torch.baddbmm(input, *_ACTIVE[-1].operands(a, b), **kwargs)
        sites = _ACTIVE[-1]
        return input + sites.product(torch.bmm(*sites.operands(a, b)))


def _rebound(fn: Any, **names: Any) -> Any:
    """``fn`` (its own code, defaults and closure) with the global ``names`` bound to other objects."""
    scope = dict(fn.__globals__)
    scope.update(names)
    out = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    out.__kwdefaults__ = fn.__kwdefaults__
    return out


# PyTorch's own attention code, its linear and matmul names bound to the quantizing versions above. The
# rebinding keeps every other line of it (mask handling, dropout, bias_k/bias_v, shape checks) as it is;
# tests/quant/sim/test_attention.py proves the float path equal to nn.MultiheadAttention's.
_TORCH = _TorchWithQuantizedMatmuls()
_IN_PROJECTION_PACKED = _rebound(getattr(F, "_in_projection_packed"), linear=_linear)
_IN_PROJECTION = _rebound(getattr(F, "_in_projection"), linear=_linear)
_MHA_FORWARD = _rebound(F.multi_head_attention_forward, linear=_linear, torch=_TORCH,
                        _in_projection_packed=_IN_PROJECTION_PACKED, _in_projection=_IN_PROJECTION)  # fmt: skip


class _FunctionalWithQuantizedAttention:
    """``torch.nn.functional`` as ``nn.MultiheadAttention.forward`` sees it: the quantizing attention."""

    multi_head_attention_forward = staticmethod(_MHA_FORWARD)

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)


_MHA_FORWARD.__globals__["multi_head_attention_forward"] = _MHA_FORWARD  # what it hands to a TorchFunctionMode
_MODULE_FORWARD = _rebound(nn.MultiheadAttention.forward, F=_FunctionalWithQuantizedAttention())


def _quantized_attention_forward(
    self: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
    need_weights: bool = True,
    attn_mask: Optional[torch.Tensor] = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``nn.MultiheadAttention.forward`` on its explicit path with the operands fake-quantized (module doc)."""
    quantizers = self._modules[ATTENTION_QUANTIZERS]
    assert isinstance(quantizers, nn.ModuleDict)
    sites = {k: q for k, q in quantizers.items() if isinstance(q, Quantizer)}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel would skip the code above
    _ACTIVE.append(_Sites(sites))
    try:
        out, weights = _MODULE_FORWARD(self, query, key, value, key_padding_mask=key_padding_mask, need_weights=True,
                                       attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                       is_causal=is_causal)  # fmt: skip
    finally:
        _ACTIVE.pop()
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if "output" in sites:
        out = sites["output"](out)
    return out, (weights if need_weights else None)


def _no_fused_path(module: nn.Module, args: tuple[Any, ...]) -> None:
    """A forward pre-hook that changes nothing: ``nn.TransformerEncoderLayer`` takes its fused path, which never
    calls the attention's forward, only when no submodule has hooks, so this keeps it on the quantized one."""
    return None


@dataclass
class AttentionAttachment(ModuleAttachment):
    """The fast-mode wiring of one ``nn.MultiheadAttention``: weight parametrizations, the site quantizers
    (submodule :data:`ATTENTION_QUANTIZERS`) and the instance ``forward`` that applies them;
    ``parameter_order`` is the order of ``_parameters`` before."""

    parameter_order: tuple[str, ...] = field(default=())

    def remove(self) -> None:
        from quant.sim.fast import remove_tensor_quantizer, restore_parameter_order

        module = self.module
        assert isinstance(module, nn.MultiheadAttention)
        for site, tensor in _weight_names(module):
            q = self.quantizers.get(site)
            if q is not None:
                remove_tensor_quantizer(module, q, tensor)
        if module.__dict__.get("forward") is not None:
            del module.__dict__["forward"]
        for hook_id in [k for k, v in module._forward_pre_hooks.items() if v is _no_fused_path]:
            del module._forward_pre_hooks[hook_id]
        module._modules.pop(ATTENTION_QUANTIZERS, None)
        restore_parameter_order(module, self.parameter_order)


def attach_attention(
    name: str, module: nn.MultiheadAttention, configs: Mapping[str, QuantizerConfig], build: Any
) -> AttentionAttachment:
    """Wire ``configs`` into ``module`` (``build(config) -> Quantizer`` makes each quantizer)."""
    quantizers: dict[str, Quantizer] = {}
    weight = configs.get("weight")
    if weight is not None:
        for key, _ in _weight_names(module):
            quantizers[key] = build(weight)
    for site in _SITES:
        config = _site_config(configs, site)
        if config is not None:
            q = build(config)
            q.optional = site in _OPTIONAL
            quantizers[site] = q
    effective: dict[str, QuantizerConfig] = {"weight": weight} if weight is not None else {}
    for site in _SITES:  # what each role gets, defaults included, for the handle's repr
        config = _site_config(configs, site)
        if config is not None and site not in _OPTIONAL:
            effective[site] = config
    attachment = AttentionAttachment(name, module, effective, quantizers, tuple(module._parameters))
    try:
        for key, tensor in _weight_names(module):
            if key in quantizers:
                parametrize.register_parametrization(module, tensor, quantizers[key], unsafe=True)
        sites = {k: q for k, q in quantizers.items() if not k.startswith("weight")}
        if sites:
            module.add_module(ATTENTION_QUANTIZERS, nn.ModuleDict(sites))
            module.forward = types.MethodType(_quantized_attention_forward, module)  # type: ignore[method-assign]
            module.register_forward_pre_hook(_no_fused_path)
    except BaseException:
        attachment.remove()
        raise
    return attachment
