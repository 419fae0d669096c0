"""nn.MultiheadAttention through attach (quant.sim.attention): with the quantizers off it is the module's own
explicit path bit for bit, whatever the options; with them on it equals a hand-written attention that
fake-quantizes every matmul operand; recipes, QAT, removal and copies behave like any other module."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn as nn
import torch.nn.functional as F

import quant
from quant.contract.spec import QuantSpec
from quant.sim.recipe import ATTENTION_ROLES

W8 = QuantSpec(bits=8, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=False, symmetric=False)
W4 = QuantSpec(bits=4, granularity="channel", axis=0)


class _Wrap(nn.Module):
    """An attention inside a model, called with fixed keyword options."""

    def __init__(self, attn: nn.MultiheadAttention, **options: Any) -> None:
        super().__init__()
        self.attn = attn
        self.options = options

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
        return self.attn(q, k, v, **self.options)


def _explicit(attn: nn.MultiheadAttention, *args: Any, **options: Any) -> Any:
    """The module's own forward on its explicit path (the fused fast path disabled)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        out, weights = attn(*args, **{**options, "need_weights": True})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return out, (weights if options.get("need_weights", True) else None)


OPTION_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    "batch_first": ({"batch_first": True}, {}),
    "no_weights": ({"batch_first": True}, {"need_weights": False}),
    "per_head_weights": ({}, {"average_attn_weights": False}),
    "bool_attn_mask": ({}, {"attn_mask": "bool2d"}),
    "float_attn_mask_3d": ({"batch_first": True}, {"attn_mask": "float3d"}),
    "key_padding_mask": ({"batch_first": True}, {"key_padding_mask": "pad"}),
    "bias_kv_zero_attn": ({"add_bias_kv": True, "add_zero_attn": True}, {"key_padding_mask": "pad"}),
    "kdim_vdim": ({"kdim": 6, "vdim": 5, "batch_first": True}, {}),
    "no_bias": ({"bias": False}, {}),
    "causal": ({"batch_first": True}, {"attn_mask": "causal", "is_causal": True}),
}


def _inputs(module_kw: dict[str, Any], call_kw: dict[str, Any], seed: int = 0) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    b, lq, lk, e = 2, 4, 5, 8
    bf = module_kw.get("batch_first", False)
    cross = "kdim" in module_kw
    lk = lk if cross else lq

    def seq(length: int, dim: int) -> torch.Tensor:
        return torch.randn((b, length, dim) if bf else (length, b, dim), generator=g)

    q = seq(lq, e)
    k = seq(lk, module_kw.get("kdim", e)) if cross else q
    v = seq(lk, module_kw.get("vdim", e)) if cross else q
    kw = dict(call_kw)
    mask = kw.get("attn_mask")
    if mask == "bool2d":
        kw["attn_mask"] = torch.rand(lq, lk, generator=g) > 0.7
    elif mask == "float3d":
        kw["attn_mask"] = torch.randn(b * 2, lq, lk, generator=g)
    elif mask == "causal":
        kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(lq)
    if kw.get("key_padding_mask") == "pad":
        pad = torch.zeros(b, lk, dtype=torch.bool)
        pad[0, -1] = True
        kw["key_padding_mask"] = pad
    return (q, k, v), kw


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_with_the_quantizers_off_it_is_the_modules_own_explicit_path(case: str) -> None:
    module_kw, call_kw = OPTION_CASES[case]
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, **module_kw)
    twin = copy.deepcopy(attn)
    (q, k, v), kw = _inputs(module_kw, call_kw)
    model = _Wrap(attn, **kw)
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    assert isinstance(handle.modules["attn"], nn.MultiheadAttention)
    handle.disable()
    got, got_w = model(q, k, v)
    want, want_w = _explicit(twin, q, k, v, **kw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    if want_w is None:
        assert got_w is None
    else:
        torch.testing.assert_close(got_w, want_w, rtol=0, atol=0)


def test_dropout_in_training_consumes_the_same_random_numbers() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True).train()
    twin = copy.deepcopy(attn)
    x = torch.randn(2, 4, 8)
    handle = quant.attach(_Wrap(attn), {"*": {"weight": W8, "input": A8}})
    handle.disable()
    torch.manual_seed(5)
    got, _ = attn(x, x, x)
    torch.manual_seed(5)
    want, _ = _explicit(twin, x, x, x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def _fq(x: torch.Tensor, handle: Any, role: str, name: str = "attn") -> torch.Tensor:
    q = handle.quantizer(name, role)
    s, z = q.effective_qparams()
    out: torch.Tensor = quant.fake_quantize(x, s, z, q.spec)
    return out


def _hand_written(attn: nn.MultiheadAttention, x: torch.Tensor, handle: Any) -> torch.Tensor:
    """Self-attention, batch first, no mask: every matmul operand fake-quantized with the handle's qparams."""
    b, length, e = x.shape
    h = attn.num_heads
    d = e // h
    w_in = _fq(attn.parametrizations.in_proj_weight.original, handle, "weight")  # type: ignore[union-attr,arg-type]
    w_out = _fq(attn.out_proj.parametrizations.weight.original, handle, "weight", "attn.out_proj")  # type: ignore[union-attr,arg-type]
    xt = x.transpose(0, 1)  # (L, B, E)
    proj = F.linear(_fq(xt, handle, "input"), w_in, attn.in_proj_bias)
    q, k, v = proj.reshape(length, b, 3, e).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    q, k, v = (t.view(length, b * h, d).transpose(0, 1) for t in (q, k, v))
    scores = torch.bmm(_fq(q * math.sqrt(1.0 / float(d)), handle, "query"), _fq(k.transpose(-2, -1), handle, "key"))
    p = torch.softmax(_fq(scores, handle, "scores"), dim=-1)
    ctx = torch.bmm(_fq(p, handle, "attention"), _fq(v, handle, "value"))
    ctx = ctx.transpose(0, 1).contiguous().view(length * b, e)
    out = F.linear(_fq(ctx, handle, "context"), w_out, attn.out_proj.bias).view(length, b, e).transpose(0, 1)
    return _fq(out, handle, "output")


def test_every_matmul_operand_is_fake_quantized_as_a_hand_written_attention_does() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(3, 5, 8)
    model = _Wrap(attn, need_weights=False)
    float_out = model(x, x, x)[0].detach()
    handle = quant.attach(model, {"*": {"weight": W4, "input": A8, "output": A8}, "attn.out_proj": {"weight": W4},
                                  "attn": {"attention": QuantSpec(bits=4, signed=False, symmetric=False)}})  # fmt: skip
    with torch.no_grad(), handle.calibrate():
        model(x, x, x)
    got, weights = model(x, x, x)
    assert weights is None
    torch.testing.assert_close(got, _hand_written(attn, x, handle), rtol=0, atol=0)
    assert handle.quantizer("attn", "attention").spec.bits == 4 and handle.quantizer("attn", "value").spec.bits == 8
    assert 10 < quant.sqnr_db(float_out, got) < 60
    assert not handle.quantizer("attn", "input_key").calibrated  # self-attention: the query's quantizer serves


def test_a_rule_with_weight_and_input_quantizes_every_site_and_the_repr_shows_them() -> None:
    model = _Wrap(nn.MultiheadAttention(8, 2))
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    shown = repr(handle)
    for role in ("weight", "input", "output", *ATTENTION_ROLES):
        if role != "output":
            assert f"{role}=" in shown, role
    assert "output=" not in shown  # the output role is the rule's to set


def test_cross_attention_quantizes_the_key_and_value_inputs_on_their_own() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
    model = _Wrap(attn)
    (q, k, v), _ = _inputs({"kdim": 6, "vdim": 5, "batch_first": True}, {})
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    with torch.no_grad(), handle.calibrate():
        model(q, k, v)
    for site in ("input", "input_key", "input_value"):
        assert handle.quantizer("attn", site).calibrated
    for key in ("weight", "weight_k", "weight_v"):
        assert handle.quantizer("attn", key).spec == W8


def test_schemes_a_site_cannot_take_are_refused_at_attach() -> None:
    with pytest.raises(ValueError, match=r"module 'attn' \(MultiheadAttention\): the attention role takes per-tensor "
                                         r"schemes only, got uint8 asym per-channel\(0\)"):  # fmt: skip
        quant.attach(_Wrap(nn.MultiheadAttention(8, 2)), {"attn": {"attention": A8.with_(granularity="channel", axis=0)}})
    with pytest.raises(ValueError, match=r"module 'attn' \(MultiheadAttention\): the input role takes per-tensor"):
        quant.attach(_Wrap(nn.MultiheadAttention(8, 2)), {"attn": {"input": A8.with_(granularity="channel", axis=0)}})


def test_qat_trains_through_the_quantized_attention_and_remove_restores_it() -> None:
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    twin = copy.deepcopy(attn)
    model = _Wrap(attn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = quant.attach(model, {"*": {"weight": quant.QuantizerConfig(W4, learn="lsq"),
                                        "input": quant.QuantizerConfig(A8, learn="lsq")}})  # fmt: skip
    x = torch.randn(4, 5, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    original = attn.parametrizations.in_proj_weight.original  # type: ignore[union-attr]
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model(x, x, x)[0].square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert original.grad is not None and handle.quantizer("attn", "query").scale.grad is not None
    assert losses[-1] < losses[0]
    clone_model, clone_handle = copy.deepcopy((model, handle))
    torch.testing.assert_close(clone_model(x, x, x)[0], model(x, x, x)[0], rtol=0, atol=0)
    clone_handle.remove()
    handle.remove()
    assert type(attn) is nn.MultiheadAttention and "forward" not in attn.__dict__
    assert list(model.state_dict()) == list(before)
    twin.load_state_dict(attn.state_dict())
    torch.testing.assert_close(attn(x, x, x)[0], twin(x, x, x)[0], rtol=0, atol=0)


def test_a_transformer_encoder_layer_quantizes_end_to_end() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 6, 16)
    float_out = layer(x).detach()
    handle = quant.attach(layer, {"*": {"weight": W8, "input": A8}, "self_attn.out_proj": {"weight": W8}})
    assert {"self_attn", "self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"} <= set(handle.modules)
    assert handle.skipped == ()
    with torch.no_grad(), handle.calibrate():
        layer(x)
    assert quant.sqnr_db(float_out, layer(x)) > 25


def test_an_encoder_layers_fused_path_never_skips_the_quantized_attention() -> None:
    """Only the attention's activations quantized, in a model, in inference: the layer must not fuse past them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        float_out = model(x)
    handle = quant.attach(model, {"0.self_attn": {"input": QuantSpec(bits=3, signed=True, symmetric=False)}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    with torch.no_grad():
        inference = model(x)
    torch.testing.assert_close(inference, model(x).detach(), rtol=0, atol=0)  # grad-enabled: never fused
    assert not torch.equal(inference, float_out)
    handle.remove()
    attn: Any = model[0].self_attn
    assert not attn._forward_pre_hooks


def test_a_mask_of_the_wrong_shape_gets_pytorchs_own_message() -> None:
    model = _Wrap(nn.MultiheadAttention(8, 2, batch_first=True), attn_mask=torch.zeros(3, 3, dtype=torch.bool))
    quant.attach(model, {"*": {"weight": W8, "input": A8}})
    x = torch.randn(2, 4, 8)
    with pytest.raises(RuntimeError, match=r"The shape of the 2D attn_mask is torch.Size\(\[3, 3\]\), but should be "
                                           r"\(4, 4\)"):  # fmt: skip
        model(x, x, x)


def test_the_unused_key_and_value_input_quantizers_of_self_attention_block_nothing_downstream() -> None:
    """lower() and collect_layer_errors() refused a calibrated model over them (found by the sequence sweep)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)).eval()
    x = torch.randn(2, 5, 8)
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}, "0.self_attn.out_proj": {"weight": W8}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    assert quant.collect_layer_errors(model, handle, [x])
    program = quant.lower(model, handle, x[:1], datapath=quant.Datapath.preset("fbgemm_int8"))
    assert quant.verify(model, handle, program, x, progress=False).mismatches == 0


@settings(max_examples=25, deadline=None)
@given(heads=st.integers(1, 3), head_dim=st.integers(1, 4), batch=st.integers(1, 3), lq=st.integers(1, 5),
       lk=st.integers(1, 5), batch_first=st.booleans(), cross=st.booleans(), masked=st.booleans(),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_quantizers_off_equals_the_explicit_path_on_random_shapes(heads: int, head_dim: int, batch: int, lq: int,
                                                                  lk: int, batch_first: bool, cross: bool,
                                                                  masked: bool, seed: int) -> None:
    torch.manual_seed(seed)
    e = heads * head_dim
    attn = nn.MultiheadAttention(e, heads, batch_first=batch_first, kdim=e + 1 if cross else None,
                                 vdim=e + 2 if cross else None)  # fmt: skip
    twin = copy.deepcopy(attn)
    shape = (lambda length, dim: (batch, length, dim)) if batch_first else (lambda length, dim: (length, batch, dim))
    q = torch.randn(shape(lq, e))
    k, v = (torch.randn(shape(lk, e + 1)), torch.randn(shape(lk, e + 2))) if cross else (q, q)
    kw: dict[str, Any] = {}
    if masked:
        src = lk if cross else lq
        kw["attn_mask"] = torch.rand(lq, src) > 0.6
        kw["attn_mask"][:, 0] = False  # every query sees at least one key
    model = _Wrap(attn, **kw)
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8}})
    handle.disable()
    got, got_w = model(q, k, v)
    want, want_w = _explicit(twin, q, k, v, **kw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_w, want_w, rtol=0, atol=0)
