"""What a quantized model costs: multiply-accumulates, bit operations and packed weight bytes, per layer.

For every *compute layer* of the model (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, ``nn.Linear``,
``nn.MultiheadAttention``, ``nn.LSTM``, ``nn.GRU``) that runs when the model is called on one sample of
``example``, counted with forward hooks (a layer called twice counts twice):

* ``macs``: multiply-accumulates of one sample, exactly as the shapes give them (no bias adds):

  - Linear on ``(N, ..., in)``: ``prod(...) * in * out``;
  - Conv: ``C_out * (C_in / groups) * prod(kernel) * prod(output spatial)``;
  - ConvTranspose: ``C_in * (C_out / groups) * prod(kernel) * prod(input spatial)`` (each input element
    scattered to ``C_out / groups x kernel`` outputs);
  - MultiheadAttention (query length ``Lq``, key length ``Lk``, embedding ``E``): the projections
    ``Lq E E + Lk kdim E + Lk vdim E``, the out-projection ``Lq E E``, and the two matmuls
    ``Lq Lk E`` (``Q K^T``) and ``Lq Lk E`` (``P V``);
  - LSTM/GRU over ``T`` steps, ``G`` gates (4 or 3) of width ``H``, ``D`` directions: per layer
    ``D T G H (input width)`` input products and ``D T G H H`` hidden products;

* ``bops``: the sum over the layer's products of ``MACs x bits of one operand x bits of the other``,
  32 bits for a float operand: weight x input for the weight products; weight x context for the
  attention's out-projection, query x key and attention x value for its matmuls, weight x hidden for the
  recurrent products (an operand role the handle does not quantize takes the layer's ``input`` width when
  it has one, else 32);
* ``weight_bytes``: every weight tensor of the layer (the parameters whose name contains ``weight``:
  ``weight``, ``in_proj_weight``, ``out_proj.weight``, ``weight_ih_l0``, ...; biases are not weights)
  packed: ``ceil(numel * bits / 8)`` bytes per tensor at its weight quantizer's width, ``4 * numel``
  bytes in float.

One sample is the first entry along dim 0 of every tensor of the batch (``example[:1]``; a tuple's or
dict's tensors each sliced): the model's batch dimension must be its first. The counting forward runs in
eval mode, without gradients, with the handle's quantizers turned off (in fast mode), so it changes
neither BatchNorm statistics nor observers; flags and training modes are put back afterwards.

>>> import torch, torch.nn as nn
>>> import quant
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
>>> c = cost(model, None, torch.zeros(5, 1, 8, 8))
>>> [(layer.name, layer.macs, layer.bops, layer.weight_bytes) for layer in c.layers]
[('0', 1296, 1327104, 144), ('2', 1440, 1474560, 5760)]
>>> w4 = quant.QuantSpec(bits=4, granularity="channel", axis=0)
>>> handle = quant.attach(model, {"*": {"weight": w4, "input": quant.QuantSpec(bits=8)}})
>>> c = cost(model, handle, torch.zeros(5, 1, 8, 8))
>>> c.macs, c.bops, c.weight_bytes     # 1296 * 4 * 8 + 1440 * 4 * 8; ceil(36 * 4 / 8) + 1440 * 4 / 8
(2736, 87552, 738)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from quant.ptq.calibration import call_model, eval_mode
from quant.sim.attach import QuantHandle
from quant.sim.quantizer import Quantizer
from quant.sim.recipe import QuantizerConfig

__all__ = ["COMPUTE_MODULES", "LayerCost", "ModelCost", "cost", "packed_bytes", "layer_macs"]

#: The module types whose products ``cost`` counts.
COMPUTE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.MultiheadAttention,
    nn.LSTM,
    nn.GRU,
)

#: Bits of a float operand.
FLOAT_BITS = 32

#: Operand roles that take the layer's input width when the handle does not quantize them (matmul operands).
_INPUT_LIKE = frozenset({"query", "key", "attention", "value", "context", "hidden"})


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes of ``numel`` values of ``bits`` bits packed densely: ``ceil(numel * bits / 8)``; 32 bits is float32.

    >>> packed_bytes(10, 4), packed_bytes(10, 3), packed_bytes(10, 2), packed_bytes(10, 32)
    (5, 4, 3, 40)
    """
    if numel < 0 or not 1 <= bits <= FLOAT_BITS:
        raise ValueError(f"packed_bytes: numel={numel} must be >= 0 and bits={bits} in 1..{FLOAT_BITS}")
    return -(-numel * bits // 8)


@dataclass(frozen=True)
class LayerCost:
    """One compute layer's cost for one sample (see the module docstring for each count)."""

    name: str
    #: The module's type name (before any parametrization), e.g. ``"Conv2d"``.
    kind: str
    macs: int
    bops: int
    #: Width of the layer's weight scheme, :data:`FLOAT_BITS` when its weights are float.
    weight_bits: int
    #: Width of the layer's input scheme, :data:`FLOAT_BITS` when its input is float.
    input_bits: int
    #: Elements of the layer's weight tensors.
    weight_elements: int
    weight_bytes: int


@dataclass(frozen=True)
class ModelCost:
    """Every compute layer's :class:`LayerCost` in ``named_modules()`` order, and the totals."""

    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def bops(self) -> int:
        return sum(layer.bops for layer in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def weight_elements(self) -> int:
        return sum(layer.weight_elements for layer in self.layers)

    def layer(self, name: str) -> LayerCost:
        """The cost of layer ``name``; ``KeyError`` listing the layers otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no compute layer {name!r}; layers: {[layer.name for layer in self.layers]}")

    def table(self) -> str:
        """The costs as a Markdown table, one row per layer and a total."""
        rows = ["| layer | type | MACs | W bits | A bits | BOPs | weights | weight bytes |", "|---|---|---|---|---|---|---|---|"]
        for c in self.layers:
            rows.append(f"| {c.name} | {c.kind} | {c.macs} | {_bits(c.weight_bits)} | {_bits(c.input_bits)} | {c.bops} | "
                        f"{c.weight_elements} | {c.weight_bytes} |")  # fmt: skip
        rows.append(f"| total | | {self.macs} | | | {self.bops} | {self.weight_elements} | {self.weight_bytes} |")
        return "\n".join(rows)


def _bits(bits: int) -> str:
    return "float" if bits == FLOAT_BITS else str(bits)


def cost(model: nn.Module, handle: Optional[QuantHandle], example: object) -> ModelCost:
    """MACs, BOPs and packed weight bytes of every compute layer of ``model`` under ``handle`` (None: float) for
    one sample of ``example`` (a tensor, a tuple/list of arguments or a dict of keyword arguments, as a
    calibration batch of :mod:`quant.ptq.calibration`). See the module docstring for the counts."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"cost: model must be an nn.Module, got {type(model).__name__}")
    if handle is not None and not isinstance(handle, QuantHandle):
        raise TypeError(f"cost: handle must be a QuantHandle or None, got {type(handle).__name__}")
    if handle is not None and handle.model is not model:
        raise ValueError("cost: the handle was attached to another model")
    sample = _first_sample(example)
    counts = count_products(model, handle, sample)
    configs: Mapping[str, Mapping[str, QuantizerConfig]] = handle.configs if handle is not None else {}
    named = dict(model.named_modules())
    layers = []
    for name, terms in counts.items():
        roles = configs.get(name, {})
        elements, nbytes = _weight_storage(name, named[name], configs)
        layers.append(LayerCost(
            name=name,
            kind=parametrize.type_before_parametrizations(named[name]).__name__,
            macs=sum(m for m, _, _ in terms),
            bops=sum(m * _role_bits(roles, a) * _role_bits(roles, b) for m, a, b in terms),
            weight_bits=_role_bits(roles, "weight"),
            input_bits=_role_bits(roles, "input"),
            weight_elements=elements,
            weight_bytes=nbytes,
        ))  # fmt: skip
    return ModelCost(tuple(layers))


def count_products(model: nn.Module, handle: Optional[QuantHandle], sample: object) -> dict[str, list[tuple[int, str, str]]]:
    """``{layer name: [(MACs, operand role, operand role), ...]}`` of one forward of ``sample`` (as given, not
    sliced), layers in ``named_modules()`` order; the forward as the module docstring says."""
    found: dict[str, list[tuple[int, str, str]]] = {}

    def hook(name: str) -> Any:
        def record(mod: nn.Module, args: Any, out: Any) -> None:
            found.setdefault(name, []).extend(layer_macs(mod, args, out))

        return record

    order = [n for n, m in model.named_modules() if isinstance(m, COMPUTE_MODULES)]
    hooks = [model.get_submodule(n).register_forward_hook(hook(n)) for n in order]
    flags: list[tuple[Quantizer, bool]] = []
    if handle is not None and handle.exact is None:  # exact mode computes from the quantizers' state: leave it
        flags = [(q, q.enabled) for _, _, q in handle.quantizers()]
        handle.disable()
    try:
        with torch.no_grad(), eval_mode(model):
            call_model(model, sample)
    finally:
        for h in hooks:
            h.remove()
        for q, enabled in flags:
            q.enabled = enabled
    return {n: found[n] for n in order if n in found}


def _first_sample(batch: object) -> object:
    """The batch's first entry along dim 0 of each of its tensors (``batch[:1]``)."""

    def first(x: object) -> object:
        return x[:1] if isinstance(x, torch.Tensor) and x.dim() > 0 else x

    if isinstance(batch, torch.Tensor):
        return first(batch)
    if isinstance(batch, tuple):
        return tuple(first(x) for x in batch)
    if isinstance(batch, list):
        return [first(x) for x in batch]
    if isinstance(batch, dict):
        return {k: first(v) for k, v in batch.items()}
    raise TypeError(f"cost: example must be a tensor, a tuple/list of arguments or a dict of keyword arguments, "
                    f"got {type(batch).__name__}")  # fmt: skip


def _role_bits(roles: Mapping[str, QuantizerConfig], role: str) -> int:
    """The bits of ``role``'s scheme (a matmul operand or a hidden state: the input's by default), 32 if float."""
    if role in roles:
        return int(roles[role].spec.bits)
    if role in _INPUT_LIKE and "input" in roles:
        return int(roles["input"].spec.bits)
    return FLOAT_BITS


def _is_machinery(name: str) -> bool:
    parts = name.split(".")
    return "parametrizations" in parts or any(p in ("input_quantizer", "output_quantizer") for p in parts)


def _weight_storage(name: str, module: nn.Module, configs: Mapping[str, Mapping[str, QuantizerConfig]]) -> tuple[int, int]:
    """``(elements, packed bytes)`` of the weight tensors of ``module`` (itself and its submodules): at their
    weight quantizer's width where the handle quantizes them (``configs``), else 4 bytes per element."""
    elements = nbytes = 0
    for sub_name, sub in module.named_modules():
        if _is_machinery(sub_name) or isinstance(sub, Quantizer):
            continue
        full = f"{name}.{sub_name}" if name and sub_name else (name or sub_name)
        quantized = "weight" in configs.get(full, {})
        for pname, p in sub._parameters.items():
            if p is not None and "weight" in pname:
                elements += p.numel()
                nbytes += packed_bytes(p.numel(), FLOAT_BITS)
        if parametrize.is_parametrized(sub):
            plists: Any = sub.parametrizations
            for pname, plist in plists.items():
                if "weight" not in pname:
                    continue
                numel = int(plist.original.numel())
                bits = [q.spec.bits for q in plist if isinstance(q, Quantizer)]
                elements += numel
                nbytes += packed_bytes(numel, bits[0] if bits and quantized else FLOAT_BITS)
    return elements, nbytes


def layer_macs(mod: nn.Module, args: Sequence[Any], out: Any) -> list[tuple[int, str, str]]:
    """``(MACs, operand role, operand role)`` of one call of ``mod`` on one sample (see the module docstring)."""
    if isinstance(mod, nn.Linear):
        per_sample = out.numel() // max(1, out.shape[0]) if out.dim() > 1 else out.numel()
        return [(per_sample * mod.in_features, "weight", "input")]
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):
        x = args[0]
        per_input = mod.out_channels // mod.groups * math.prod(mod.kernel_size)
        return [(x[0].numel() * per_input, "weight", "input")]
    if isinstance(mod, nn.modules.conv._ConvNd):
        return [(out[0].numel() * mod.in_channels // mod.groups * math.prod(mod.kernel_size), "weight", "input")]
    if isinstance(mod, nn.MultiheadAttention):
        q, k = args[0], args[1]
        seq = 1 if mod.batch_first else 0
        lq, lk, e = q.shape[seq], k.shape[seq], mod.embed_dim
        return [(lq * e * e + lk * mod.kdim * e + lk * mod.vdim * e, "weight", "input"), (lq * e * e, "weight", "context"),
                (lq * lk * e, "query", "key"), (lq * lk * e, "attention", "value")]  # fmt: skip
    if isinstance(mod, (nn.LSTM, nn.GRU)):
        x = args[0]
        steps = x.shape[1 if mod.batch_first else 0] if x.dim() == 3 else x.shape[0]
        gates = (4 if isinstance(mod, nn.LSTM) else 3) * mod.hidden_size
        dirs = 2 if mod.bidirectional else 1
        terms = []
        for layer in range(mod.num_layers):
            width = mod.input_size if layer == 0 else mod.hidden_size * dirs
            terms += [(dirs * steps * gates * width, "weight", "input"), (dirs * steps * gates * mod.hidden_size, "weight", "hidden")]
        return terms
    return []
