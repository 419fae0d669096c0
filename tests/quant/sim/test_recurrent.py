"""nn.LSTM and nn.GRU through attach (quant.sim.recurrent): with the quantizers off the unrolled recurrence is
the fused module to float rounding; with them on it equals a hand-written LSTM that quantizes step by step;
every time step shares the layer's quantizers; what the recurrence cannot take is refused by name."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from quant.sim.learned import lsq_fake_quantize

import quant
from quant.contract.spec import QuantSpec
from quant.sim import fused

W8 = QuantSpec(bits=8, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=True, symmetric=False)
C16 = QuantSpec(bits=8, signed=True, symmetric=True)  # (8 bits: the spec's widest; TFLite keeps c in 16)

CONFIGS: list[dict[str, Any]] = [
    {},
    {"batch_first": True},
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 3, "dropout": 0.2, "batch_first": True},
    {"bias": False},
]


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(kw) or "plain")
def test_with_the_quantizers_off_it_is_the_fused_module_to_float_rounding(cls: type[nn.Module], kw: dict[str, Any]) -> None:
    torch.manual_seed(0)
    module = cls(5, 6, **kw).eval()
    twin = copy.deepcopy(module)
    x = torch.randn(3, 4, 5)
    dirs = 2 if kw.get("bidirectional") else 1
    h0 = torch.randn(kw.get("num_layers", 1) * dirs, 3 if kw.get("batch_first") else 4, 6)
    hx: Any = (h0, torch.randn_like(h0)) if cls is nn.LSTM else h0
    handle = quant.attach(nn.Sequential(module), {"*": {"weight": W8, "input": A8}})
    handle.disable()
    for args in ((x,), (x, hx), (x[:, 0] if kw.get("batch_first") else x[0],)):
        got, want = module(*args), twin(*args)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
        for g, w in zip(*(o[1] if isinstance(o[1], tuple) else (o[1],) for o in (got, want))):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def _fq(x: torch.Tensor, q: Any) -> torch.Tensor:
    s, z = q.effective_qparams()
    out: torch.Tensor = quant.fake_quantize(x, s, z, q.spec)
    return out


class _Activation(torch.autograd.Function):
    """The fused recurrence's sigmoid or tanh (quant.sim.fused), with the exact derivative of its values."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tanh: bool) -> torch.Tensor:
        y = fused.tanh(x) if tanh else fused.sigmoid(x)
        ctx.save_for_backward(y)
        ctx.tanh = tanh
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return (g * (1.0 - y * y) if ctx.tanh else g * (y * (1.0 - y))), None


def _activations(x: torch.Tensor) -> tuple[Any, Any]:
    """(sigmoid, tanh) as the quantized LSTM computes them on ``x``'s kind of data: the fused recurrence's own
    on CPU float32 (with the extension), torch's otherwise (the unrolled form)."""
    if fused.lstm_step_applies(x):
        return (lambda t: _Activation.apply(t, False)), (lambda t: _Activation.apply(t, True))  # type: ignore[no-untyped-call]
    return torch.sigmoid, torch.tanh


def _hand_written_lstm(module: nn.LSTM, x: torch.Tensor, handle: Any) -> torch.Tensor:
    """One layer, sequence first: quantize the input, the weights, then at every step the gate pre-activations,
    the cell state and the hidden state, with the handle's qparams."""
    sigmoid, tanh = _activations(x)

    def quantizer(key: str) -> Any:
        return handle.quantizer("0", key)

    w_ih = _fq(module.parametrizations.weight_ih_l0.original, quantizer("weight_ih_l0"))  # type: ignore[union-attr,arg-type]
    w_hh = _fq(module.parametrizations.weight_hh_l0.original, quantizer("weight_hh_l0"))  # type: ignore[union-attr,arg-type]
    xs = _fq(x, quantizer("input"))
    h = torch.zeros(x.shape[1], module.hidden_size)
    c = torch.zeros_like(h)
    outs = []
    b_ih: Any = module.bias_ih_l0
    b_hh: Any = module.bias_hh_l0
    xw = F.linear(xs, w_ih, b_ih + b_hh)  # the input's projection with both biases, all steps at once
    for t in range(x.shape[0]):
        pre = torch.addmm(xw[t], h, w_hh.t())
        i, f, g, o = _fq(pre, quantizer("gates_l0")).chunk(4, dim=-1)
        c = _fq(sigmoid(f) * c + sigmoid(i) * tanh(g), quantizer("cell_l0"))
        h = _fq(sigmoid(o) * tanh(c), quantizer("hidden_l0"))
        outs.append(h)
    return torch.stack(outs)


@pytest.mark.parametrize("path", ["fused", "unrolled"])
def test_every_step_is_quantized_as_a_hand_written_lstm_does(path: str) -> None:
    """Bit for bit, in the fused recurrence (CPU float32) and in the unrolled one (torch ops, which other
    devices, dtypes and PACT take), each against the hand-written LSTM with its activations."""
    if path == "fused" and not fused.available():
        pytest.skip("quant._fakequant is not built (make ext)")
    torch.manual_seed(0)
    module = nn.LSTM(5, 6)
    x = torch.randn(7, 3, 5)
    float_out = module(x)[0].detach()
    handle = quant.attach(nn.Sequential(module), {"0": {"weight": W8, "input": A8, "gates": A8, "cell": C16}})
    with torch.no_grad(), handle.calibrate():
        module(x)
    with fused.fused_path("auto" if path == "fused" else "off"):
        got = module(x)[0]
        want = _hand_written_lstm(module, x, handle)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert 20 < quant.sqnr_db(float_out, got) < 60
    assert handle.quantizer("0", "hidden_l0").spec == A8  # the hidden state takes the input scheme


def test_layers_and_directions_have_their_own_quantizers_shared_by_every_step() -> None:
    module = nn.GRU(4, 5, num_layers=2, bidirectional=True)
    handle = quant.attach(nn.Sequential(module), {"*": {"weight": W8, "input": A8, "gates": A8}})
    keys = {role for name, role, _ in handle.quantizers()}
    for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        assert {f"weight_ih{sfx}", f"weight_hh{sfx}", f"gates_input{sfx}", f"gates_hidden{sfx}", f"hidden{sfx}"} <= keys
    with torch.no_grad(), handle.calibrate():  # 9 steps per forward: no one-tensor-per-forward refusal
        module(torch.randn(9, 2, 4))
    assert all(q.calibrated for _, _, q in handle.quantizers())


def test_what_the_recurrence_cannot_take_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"cannot take role cell \(it can take: weight, input, output, gates, hidden\)"):
        quant.attach(nn.Sequential(nn.GRU(4, 5)), {"0": {"cell": C16}})
    with pytest.raises(ValueError, match=r"module '0' \(LSTM\): the hidden role takes per-tensor schemes only"):
        quant.attach(nn.Sequential(nn.LSTM(4, 5)), {"0": {"hidden": A8.with_(granularity="channel", axis=1)}})
    model = nn.Sequential(nn.LSTM(4, 5, proj_size=3), nn.Linear(3, 2))
    with pytest.warns(UserWarning, match=r"'0' \(LSTM\)"):
        assert list(quant.attach(model, {"*": {"weight": W8}}).modules) == ["1"]
    module = nn.LSTM(4, 5)
    quant.attach(nn.Sequential(module), {"*": {"weight": W8}})
    packed = pack_padded_sequence(torch.randn(3, 2, 4), torch.tensor([3, 2]))
    with pytest.raises(TypeError, match="quantized LSTM: packed sequences are not supported"):
        module(packed)


def test_qat_trains_through_the_unrolled_recurrence_and_remove_restores_it() -> None:
    torch.manual_seed(0)
    module = nn.LSTM(4, 8, batch_first=True)
    head = nn.Linear(8, 3)
    twin = copy.deepcopy(module)
    model = nn.Sequential(module)
    handle = quant.attach(model, {"*": {"weight": quant.QuantizerConfig(W8.with_(bits=4), learn="lsq"),
                                        "input": quant.QuantizerConfig(A8, learn="lsq")}})  # fmt: skip
    x, y = torch.randn(16, 6, 4), torch.randint(0, 3, (16,))
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=0.02)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss: Any = F.cross_entropy(head(module(x)[0][:, -1]), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert handle.quantizer("0", "hidden_l0").scale.grad is not None
    handle.remove()
    assert type(module) is nn.LSTM and "forward" not in module.__dict__
    twin.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x)[0], twin(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell])
def test_a_cell_is_one_step_of_the_same_recurrence_and_every_call_shares_its_quantizers(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    cell = cls(5, 6)
    twin = copy.deepcopy(cell)
    xs = torch.randn(7, 3, 5)
    lstm = cls is nn.LSTMCell

    def run(module: nn.Module) -> torch.Tensor:
        state: Any = None
        outs = []
        for x in xs:  # the caller's loop is the recurrence
            state = module(x, state)
            outs.append(state[0] if lstm else state)
        return torch.stack(outs)

    model = nn.Sequential(cell)
    handle = quant.attach(model, {"*": {"weight": W8, "input": A8, "gates": A8, **({"cell": C16} if lstm else {})}})
    handle.disable()
    torch.testing.assert_close(run(cell), run(twin), rtol=0, atol=1e-6)
    handle.enable()
    with torch.no_grad(), handle.calibrate():
        run(cell)
    quantized = run(cell)
    assert 20 < quant.sqnr_db(run(twin), quantized) < 60
    single = cell(xs[0][0]) if not lstm else cell(xs[0][0])[0]  # unbatched input
    assert single.shape == (6,)
    handle.remove()
    assert type(cell) is cls and "forward" not in cell.__dict__


@settings(max_examples=25, deadline=None)
@given(lstm=st.booleans(), features=st.integers(1, 4), hidden=st.integers(1, 5), layers=st.integers(1, 3),
       bidirectional=st.booleans(), batch_first=st.booleans(), bias=st.booleans(), steps=st.integers(1, 6),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))  # fmt: skip
def test_quantizers_off_equals_the_fused_module_on_random_shapes(lstm: bool, features: int, hidden: int, layers: int,
                                                                 bidirectional: bool, batch_first: bool, bias: bool,
                                                                 steps: int, batch: int, seed: int) -> None:
    torch.manual_seed(seed)
    cls = nn.LSTM if lstm else nn.GRU
    module = cls(features, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    twin = copy.deepcopy(module)
    x = torch.randn((batch, steps, features) if batch_first else (steps, batch, features))
    handle = quant.attach(nn.Sequential(module), {"*": {"weight": W8, "input": A8, "gates": A8}})
    handle.disable()
    got, want = module(x), twin(x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=2e-6)
    got_h = got[1][0] if lstm else got[1]
    want_h = want[1][0] if lstm else want[1]
    torch.testing.assert_close(got_h, want_h, rtol=0, atol=2e-6)


def _reference_layer(module: nn.LSTM, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor], handle: Any,
                     reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One direction of a 1-layer LSTM in differentiable torch ops with the fused recurrence's activations and
    the quantizers' current qparams (straight-through or LSQ), for its gradients."""
    sigmoid, tanh = _activations(x)
    sfx = "_l0_reverse" if reverse else "_l0"
    d = 1 if reverse else 0

    def site(key: str, t: torch.Tensor) -> torch.Tensor:
        try:
            q = handle.quantizer("0", f"{key}{sfx}")
        except KeyError:  # a float site
            return t
        if q.learn == "lsq":
            out: torch.Tensor = lsq_fake_quantize(t, q.scale, q.zero_point, q.spec, q.lsq_grad_scale(t), validate=False)
            return out
        return _fq(t, q)

    w_ih, w_hh = getattr(module, f"weight_ih{sfx}"), getattr(module, f"weight_hh{sfx}")
    b_ih, b_hh = getattr(module, f"bias_ih{sfx}"), getattr(module, f"bias_hh{sfx}")
    xs = handle.quantizer("0", "input")(x)
    xw = F.linear(xs, w_ih, b_ih + b_hh)
    h, c = hx[0][d], hx[1][d]
    outs: list[torch.Tensor] = [h] * x.shape[0]
    for t in (reversed(range(x.shape[0])) if reverse else range(x.shape[0])):
        i, f, g, o = site("gates", torch.addmm(xw[t], h, w_hh.t())).chunk(4, dim=-1)
        c = site("cell", sigmoid(f) * c + sigmoid(i) * tanh(g))
        h = site("hidden", sigmoid(o) * tanh(c))
        outs[t] = h
    return torch.stack(outs), h, c


@pytest.mark.skipif(not fused.available(), reason="quant._fakequant is not built (make ext)")
@pytest.mark.parametrize("learn", ["none", "lsq"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("sites", ["every site", "hidden"])
@pytest.mark.parametrize("steps", [9, 1])
def test_the_fused_recurrence_has_the_gradients_of_its_forward(learn: str, bidirectional: bool, sites: str,
                                                               steps: int) -> None:  # fmt: skip
    """The fused recurrence's hand-written backward through time equals autograd through the same forward
    written in torch ops: the gradients of the weights, biases, initial states, input and LSQ steps; with
    every site quantized in Python, and with only the hidden one (run in C, an LSQ step too)."""
    torch.manual_seed(1)
    module = nn.LSTM(5, 8, bidirectional=bidirectional)
    model = nn.Sequential(module)
    roles = {"input": A8, "gates": A8.with_(bits=6), "cell": C16, "hidden": A8}
    if sites == "hidden":
        del roles["gates"], roles["cell"]
    cfg = {role: quant.QuantizerConfig(spec, learn=learn) for role, spec in roles.items()}
    handle = quant.attach(model, {"0": {"weight": W8, **cfg}})
    x = torch.randn(steps, 4, 5)
    with torch.no_grad(), handle.calibrate():
        module(x)
    handle.freeze()  # the same qparams in both runs (no observer moves them); LSQ steps stay trainable
    for q in (q for _, _, q in handle.quantizers()):
        if q.learn == "lsq":
            q.scale.requires_grad_(True)
    dirs = 2 if bidirectional else 1
    h0 = (torch.randn(dirs, 4, 8) * 0.5).requires_grad_(True)
    c0 = (torch.randn(dirs, 4, 8) * 0.5).requires_grad_(True)
    x = x.requires_grad_(True)
    weights = torch.randn(steps, 4, 8 * dirs)
    leaves = [x, h0, c0, *module.parameters(), *(q.scale for q in (q for _, _, q in handle.quantizers()) if q.learn == "lsq")]

    def grads(run: Any) -> list[torch.Tensor]:
        for leaf in leaves:
            leaf.grad = None
        out, (h, c) = run()
        ((out * weights).sum() + (h * 0.3).sum() + (c * 0.7).sum()).backward()
        return [leaf.grad.clone() if leaf.grad is not None else torch.zeros(()) for leaf in leaves]

    got = grads(lambda: module(x, (h0, c0)))

    def reference() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        runs = [_reference_layer(module, x, (h0, c0), handle, reverse=bool(d)) for d in range(dirs)]
        out = torch.cat([r[0] for r in runs], dim=-1)
        return out, (torch.stack([r[1] for r in runs]), torch.stack([r[2] for r in runs]))

    with torch.no_grad():
        assert torch.equal(module(x, (h0, c0))[0], reference()[0])  # the same forward, bit for bit
    want = grads(reference)
    names = ["x", "h0", "c0", *(n for n, _ in module.named_parameters()), "lsq steps"]
    bad = [name for name, g, w in zip(names, got, want) if not torch.allclose(g, w, rtol=1e-4, atol=1e-5)]
    assert not bad, bad


@pytest.mark.skipif(not fused.available(), reason="quant._fakequant is not built (make ext)")
@pytest.mark.parametrize("observer", ["minmax", "moving_average", "lsq"])
@pytest.mark.parametrize("roles", ["hidden", "every site"])
def test_the_hidden_site_in_c_observes_and_quantizes_as_the_quantizer_does(observer: str, roles: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """QAT-style training forwards (every quantizer observing every step, or LSQ's learned steps) with the
    hidden site run in C (Quantizer.host_site) and with it run by the quantizer itself: the same outputs,
    observer ranges and qparams after each forward, bit for bit, and the same gradients (LSQ's steps' too)."""
    from quant.sim.quantizer import Quantizer

    def run(in_c: bool) -> list[list[torch.Tensor]]:
        torch.manual_seed(3)
        module = nn.LSTM(4, 6)
        if observer == "lsq":
            cfg, cell = quant.QuantizerConfig(A8, learn="lsq"), quant.QuantizerConfig(C16, learn="lsq")
        else:
            cfg, cell = quant.QuantizerConfig(A8, observer=observer), quant.QuantizerConfig(C16, observer=observer)
        sites = {"hidden": cfg} if roles == "hidden" else {"gates": cfg, "cell": cell, "hidden": cfg}
        handle = quant.attach(nn.Sequential(module), {"0": {"weight": W8, "input": cfg, **sites}})
        module.train()
        calls: list[int] = []
        if in_c:
            real = fused.HostSite.lstm_step_at

            def counted(self: Any, *a: Any) -> Any:
                calls.append(1)
                return real(self, *a)

            monkeypatch.setattr(fused.HostSite, "lstm_step_at", counted)
        else:
            monkeypatch.setattr(Quantizer, "host_site", lambda self: None)
        states = []
        for step in range(3):
            x = torch.randn(5, 3, 4) * (step + 1)
            out = module(x)[0]
            out.sum().backward()
            q = handle.quantizer("0", "hidden_l0")
            steps = [qz.scale.grad.clone() for _, _, qz in handle.quantizers() if qz.learn == "lsq" and qz.scale.grad is not None]
            assert bool(steps) == (observer == "lsq")
            states.append([out.detach(), q.observer.min_val.clone(), q.observer.max_val.clone(), q.scale.detach().clone(),
                           q.zero_point.clone(), *(p.grad.clone() for p in module.parameters() if p.grad is not None),
                           *steps])  # fmt: skip
        monkeypatch.undo()
        assert bool(calls) == in_c  # the C site ran (LSQ's from its second forward, once its step is set), or never
        return states

    for step, (a, b) in enumerate(zip(run(True), run(False))):
        for i, (u, v) in enumerate(zip(a, b)):
            assert torch.equal(u, v), f"forward {step}, item {i}"


@pytest.mark.skipif(not fused.available(), reason="quant._fakequant is not built (make ext)")
def test_the_fused_recurrence_refuses_what_would_corrupt_its_gradients() -> None:
    """An output changed in place before the backward (the fused recurrence saves it for W_hh's gradient)
    is autograd's error, not a wrong gradient; an empty sequence is refused by name, as by the float module."""
    module = nn.LSTM(3, 4)
    quant.attach(nn.Sequential(module), {"0": {"input": A8, "weight": W8}})
    module.train()
    x = torch.randn(5, 2, 3)
    module(x)[0].sum().backward()  # the observers' first batch
    out = module(x)[0]
    out.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    with pytest.raises(ValueError, match="sequence length must be larger than 0"):
        module(torch.randn(0, 2, 3))
