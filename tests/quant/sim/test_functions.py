"""Functional ops through attach (quant.sim.functions): Hugging Face-style attention written with nn.Linear,
torch.matmul and softmax gets every matmul operand and the softmax output quantized, one quantizer set per
call site, equal to a hand-written computation; what cannot work is refused by name."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import quant
from quant.contract.spec import QuantSpec

W8 = QuantSpec(bits=8, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=True, symmetric=False)
P8 = QuantSpec(bits=8, signed=False, symmetric=False)


class HFAttention(nn.Module):
    """Self-attention as Hugging Face writes it: projections, ``torch.matmul``, softmax, ``@``."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
        probs = F.softmax(scores, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(b, length, d)
        out: torch.Tensor = self.out(ctx)
        return out


RECIPE: dict[Any, Any] = {"*": {"weight": W8, "input": A8}, torch.matmul: {"input": A8}, F.softmax: {"output": P8}}


def _fq(x: torch.Tensor, q: Any) -> torch.Tensor:
    s, z = q.effective_qparams()
    out: torch.Tensor = quant.fake_quantize(x, s, z, q.spec)
    return out


def test_every_matmul_operand_and_the_softmax_output_are_quantized_per_call_site() -> None:
    torch.manual_seed(0)
    model = HFAttention()
    x = torch.randn(3, 5, 16)
    float_out = model(x).detach()
    handle = quant.attach(model, RECIPE, example_input=x)
    sites = {site for name, site, _ in handle.quantizers() if name == "<functions>"}
    assert sites == {"matmul0_input0", "matmul0_input1", "matmul1_input0", "matmul1_input1", "softmax0_output"}
    with torch.no_grad(), handle.calibrate():
        model(x)
    got = model(x)

    def q(site: str) -> Any:
        return handle.quantizer("<functions>", site)

    # hand-written: the same operations, each operand fake-quantized with its site's qparams
    b, length, d = x.shape
    lin = {name: (lambda t, name=name: F.linear(_fq(t, handle.quantizer(name, "input")),
                                                _fq(getattr(model, name).parametrizations.weight.original,
                                                    handle.quantizer(name, "weight")), getattr(model, name).bias))
           for name in ("query", "key", "value", "out")}  # fmt: skip

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, length, 2, 8).transpose(1, 2)

    qh, kh, vh = split(lin["query"](x)), split(lin["key"](x)), split(lin["value"](x))
    scores = torch.matmul(_fq(qh, q("matmul0_input0")), _fq(kh.transpose(-1, -2), q("matmul0_input1"))) / math.sqrt(8)
    probs = _fq(F.softmax(scores, dim=-1), q("softmax0_output"))
    ctx = torch.matmul(_fq(probs, q("matmul1_input0")), _fq(vh, q("matmul1_input1"))).transpose(1, 2).reshape(b, length, d)
    torch.testing.assert_close(got, lin["out"](ctx), rtol=0, atol=0)
    s0, s1 = (q(f"matmul{k}_input0").effective_qparams()[0] for k in (0, 1))
    assert not torch.equal(s0, s1)  # Q and P have scales of their own
    assert 25 < quant.sqnr_db(float_out, got) < 70


def test_qat_trains_the_sites_and_remove_and_copies_behave() -> None:
    torch.manual_seed(0)
    model = HFAttention()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 6, 16)
    lsq = {key: ({r: quant.QuantizerConfig(s, learn="lsq") for r, s in roles.items()}) for key, roles in RECIPE.items()}
    handle = quant.attach(model, lsq, example_input=x)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        loss: Any = model(x).square().mean()
        loss.backward()
        opt.step()
    site = handle.quantizer("<functions>", "matmul1_input0")
    assert site.scale.grad is not None
    clone, clone_handle = copy.deepcopy((model, handle))
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    clone_handle.remove()
    handle.remove()
    assert not hasattr(model, "function_quantizers") and not model._forward_pre_hooks and not model._forward_hooks
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)


def test_what_cannot_work_is_refused_by_name() -> None:
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"attach: the recipe quantizes functional ops \(matmul, softmax\); pass "
                                         r"example_input"):  # fmt: skip
        quant.attach(HFAttention(), RECIPE)
    with pytest.raises(ValueError, match=r"the example forward makes no call of bmm"):
        quant.attach(HFAttention(), {torch.bmm: {"input": A8}}, example_input=x)
    with pytest.raises(ValueError, match=r"the softmax rule's output scheme must be per-tensor .*per-channel\(0\)"):
        quant.attach(HFAttention(), {F.softmax: {"output": P8.with_(granularity="channel", axis=0)}}, example_input=x)
    with pytest.raises(ValueError, match=r"recipe rule 'matmul': a function rule takes a dict of the roles 'input'"):
        quant.attach(HFAttention(), {torch.matmul: {"weight": W8}}, example_input=x)

    class Data(nn.Module):  # data-dependent number of matmuls
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(int(x.shape[0])):
                x = torch.matmul(x, x.transpose(-1, -2)) @ x
            return x

    model = Data()
    quant.attach(model, {torch.matmul: {"input": A8}}, example_input=torch.randn(1, 3, 3))
    with pytest.raises(RuntimeError, match=r"matmul call #2 in this forward was not made by the example forward"):
        model(torch.randn(2, 3, 3))


def test_calls_inside_a_quantized_multihead_attention_belong_to_it() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = torch.matmul(self.attn(x, x, x)[0], x.transpose(-1, -2))
            return out

    model = Block()
    x = torch.randn(2, 4, 8)
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}, torch.matmul: {"input": A8}}, example_input=x)
    with torch.no_grad(), handle.calibrate():
        model(x)
    sites = {s for n, s, _ in handle.quantizers() if n == "<functions>"}
    assert sites == {"matmul0_input0", "matmul0_input1"}  # the attention's own bmm are its roles
    assert handle.quantizer("attn", "query").calibrated
