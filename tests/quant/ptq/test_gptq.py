"""GPTQ (``quant.ptq.gptq``): the codes it chooses beat round-to-nearest layer by layer and on the model's
output, they are the codes of an unblocked reference implementation whatever the block size, they live
only in the weight quantizers (``remove()`` gives the float model back bit for bit, ``state_dict``
carries them), and bad input is refused before any quantizer changes."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import quant
from experiments.data.digits import load_digits
from experiments.models.registry import build_model
from quant.contract.spec import QuantSpec
from quant.ptq.calibration import PTQReport, capture, layer_output, quantized_input, weight_layers
from quant.ptq.gptq import gptq
from quant.sim.attach import QuantHandle
from quant.sim.fast import original_parameter
from quant.sim.functional import dequantize, quantize

W4_CHANNEL = QuantSpec(bits=4, granularity="channel", axis=0)
W4_GROUP = QuantSpec(bits=4, granularity="group", axis=1, group_size=32)
W4_TENSOR = QuantSpec(bits=4)
U8 = QuantSpec(bits=8, signed=False, symmetric=False)

Batches = list[torch.Tensor]


class Block(nn.Module):
    """A transformer block written out: q/k/v projections, softmax attention by ``torch.matmul``, the output
    projection, then a GELU MLP, both residual."""

    def __init__(self, d: int = 64, heads: int = 4, hidden: int = 128) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.o(torch.matmul(att, v).transpose(1, 2).reshape(b, t, d))
        out: torch.Tensor = x + self.fc2(F.gelu(self.fc1(x)))
        return out


def correlated(*shape: int, seed: int) -> torch.Tensor:
    """Gaussian samples (drawn from ``seed``) of features mixed by one fixed random matrix: an anisotropic input
    Hessian, as real activations have, the same distribution for every seed."""
    mix = torch.randn(shape[-1], shape[-1], generator=torch.Generator().manual_seed(1234)) / math.sqrt(shape[-1])
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) @ (mix + 0.5 * torch.eye(shape[-1]))


def mlp() -> tuple[nn.Module, Batches]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 16))
    return model, [correlated(96, 32, seed=s) for s in range(3)]


def block() -> tuple[nn.Module, Batches]:
    torch.manual_seed(0)
    return Block(), [correlated(4, 16, 64, seed=s) for s in range(3)]


def attached(model: nn.Module, recipe: dict[Any, Any], batches: Batches) -> QuantHandle:
    handle = quant.attach(model, recipe)
    with torch.no_grad(), handle.calibrate():
        for x in batches:
            model(x)
    return handle


def output_mse(model: nn.Module, batches: Batches, targets: Batches) -> float:
    with torch.no_grad():
        return sum(float(((model(x) - y) ** 2).mean()) for x, y in zip(batches, targets)) / len(batches)


def offsets(handle: QuantHandle) -> dict[str, torch.Tensor]:
    return {name: q.get_buffer("code_offsets").clone() for name, role, q in handle.quantizers() if role == "weight"}


def quantizer_state(handle: QuantHandle) -> dict[str, dict[str, Any]]:
    return {f"{name}/{role}": copy.deepcopy(q.state_dict()) for name, role, q in handle.quantizers()}


def same_state(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return a == b


def assert_beats_nearest(report: PTQReport, names: list[str]) -> None:
    assert [r.name for r in report.layers] == names
    for r in report.layers:
        assert r.error < r.rtn_error, r
        assert 0 < r.changed_codes < r.codes, r


# --------------------------------------------------------------------------- the defining property


@pytest.mark.parametrize("spec", [W4_CHANNEL, W4_GROUP], ids=["per-channel", "per-group32"])
@pytest.mark.parametrize("make", [mlp, block], ids=["mlp", "attention-block"])
def test_every_layer_and_the_model_output_beat_round_to_nearest(
    make: Callable[[], tuple[nn.Module, Batches]], spec: QuantSpec
) -> None:
    model, batches = make()
    held_out = [correlated(*batches[0].shape, seed=10 + s) for s in range(2)]
    with torch.no_grad():
        targets, held_targets = [model(x) for x in batches], [model(x) for x in held_out]
    handle = attached(model, {"*": {"weight": spec}}, batches)
    nearest, held_nearest = output_mse(model, batches, targets), output_mse(model, held_out, held_targets)
    report = gptq(model, handle, batches, progress=False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert_beats_nearest(report, names)
    assert report.algorithm == "gptq" and report.seconds > 0
    assert report.options == {"block_size": 128, "damp": 0.01, "act_order": False}
    assert output_mse(model, batches, targets) < 0.8 * nearest
    assert output_mse(model, held_out, held_targets) < 0.8 * held_nearest


def test_act_order_beats_nearest_and_runs_are_deterministic() -> None:
    model, batches = block()
    twin = copy.deepcopy(model)
    handle = attached(model, {"*": {"weight": W4_GROUP}}, batches)
    twin_handle = attached(twin, {"*": {"weight": W4_GROUP}}, batches)
    report = gptq(model, handle, batches, act_order=True, progress=False)
    assert_beats_nearest(report, ["q", "k", "v", "o", "fc1", "fc2"])
    assert report.options["act_order"] is True
    first = offsets(handle)
    assert all(t.numel() for t in first.values())
    again = gptq(model, handle, batches, act_order=True, progress=False)  # starts from nearest again
    assert [(r.rtn_error, r.error, r.changed_codes) for r in again.layers] == \
        [(r.rtn_error, r.error, r.changed_codes) for r in report.layers]  # fmt: skip
    other = gptq(twin, twin_handle, batches, act_order=True, progress=False)
    assert [r.error for r in other.layers] == [r.error for r in report.layers]
    for name, t in offsets(handle).items():
        assert torch.equal(t, first[name]), name
        assert torch.equal(offsets(twin_handle)[name], first[name]), name
    plain = gptq(twin, twin_handle, batches, act_order=False, progress=False)
    assert any(not torch.equal(offsets(twin_handle)[n], first[n]) for n in first)  # the order matters
    assert_beats_nearest(plain, ["q", "k", "v", "o", "fc1", "fc2"])


# --------------------------------------------------------------------------- the arithmetic


def reference_codes(w: torch.Tensor, s: torch.Tensor, x: torch.Tensor, damp: float, spec: QuantSpec,
                    order: Optional[torch.Tensor] = None) -> torch.Tensor:  # fmt: skip
    """Unblocked GPTQ for a symmetric per-channel Linear weight ``w`` (scales ``s`` per row) on input rows ``x``:
    every column's error spread over all the later columns at once."""
    h = 2 * x.double().T @ x.double() / x.shape[0]
    h[torch.arange(h.shape[0]), torch.arange(h.shape[0])] += damp * h.diagonal().mean()
    perm = torch.arange(w.shape[1]) if order is None else order
    h = h[perm][:, perm]
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    work = w.double()[:, perm].clone()
    codes = torch.zeros(w.shape, dtype=torch.int64)
    for i in range(w.shape[1]):
        c = torch.clamp(torch.round(work[:, i].float() * torch.reciprocal(s)), spec.qmin, spec.qmax)
        codes[:, perm[i]] = c.long()
        err = (work[:, i] - c.double() * s.double()) / u[i, i]
        work[:, i + 1 :] -= torch.outer(err, u[i, i + 1 :])
    return codes


@pytest.mark.parametrize("act_order", [False, True])
def test_the_codes_are_unblocked_gptq_whatever_the_block_size(act_order: bool) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(48, 24))
    batches = [correlated(40, 48, seed=s) for s in range(2)]
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, batches)
    q = handle.quantizer("0", "weight")
    w, (s, _) = original_parameter(model[0]), q.effective_qparams()
    x = torch.cat(batches)
    order = torch.argsort(x.double().pow(2).sum(0), descending=True, stable=True) if act_order else None
    expected = reference_codes(w, s, x, 0.05, W4_CHANNEL, order)
    assert not torch.equal(expected, quantize(w, s, torch.zeros_like(s, dtype=torch.int32), W4_CHANNEL).long())
    for block_size in (1, 7, 16, 128):
        gptq(model, handle, batches, block_size=block_size, damp=0.05, act_order=act_order, progress=False)
        assert torch.equal(q.codes(w), expected), block_size


NEAREST_SPECS = {
    "per-tensor": W4_TENSOR,
    "per-channel": W4_CHANNEL,
    "per-group32": W4_GROUP,
    "uint3-group16-asym": QuantSpec(bits=3, signed=False, symmetric=False, granularity="group", axis=1, group_size=16,
                                    rounding="half_away"),
    "per-channel-floor": QuantSpec(bits=4, granularity="channel", axis=0, rounding="floor"),
}


@pytest.mark.parametrize("spec", list(NEAREST_SPECS.values()), ids=list(NEAREST_SPECS))
def test_independent_inputs_leave_the_nearest_codes(spec: QuantSpec) -> None:
    """With orthogonal input columns the Hessian is diagonal: no error to compensate, so GPTQ's codes are the
    nearest ones for every element (its per-element scales and zero points are the quantizer's)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 16))
    x = torch.eye(64) * torch.linspace(0.5, 3.0, 64)
    handle = attached(model, {"*": {"weight": spec}}, [x])
    report = gptq(model, handle, [x], block_size=16, progress=False)
    assert report.layers[0].changed_codes == 0
    assert report.layers[0].error == report.layers[0].rtn_error
    assert int(handle.quantizer("0", "weight").get_buffer("code_offsets").abs().max()) == 0


def test_dead_inputs_keep_their_nearest_codes() -> None:
    """Input features that are always 0 (H_jj = 0) leave their columns' codes nearest, and a layer whose
    inputs are all 0 gets nearest codes instead of a failed factorization."""
    torch.manual_seed(4)
    first = nn.Linear(32, 16)
    with torch.no_grad():
        first.bias.fill_(-100.0)  # the ReLU is dead: layer '2' sees zeros only
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(16, 8))
    x = correlated(64, 32, seed=0)
    x[:, ::3] = 0.0
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, [x])
    report = gptq(model, handle, [x], act_order=True, progress=False)
    live, dead = report.layers
    assert live.changed_codes > 0 and dead.changed_codes == 0 and dead.error == dead.rtn_error
    q, w = handle.quantizer("0", "weight"), original_parameter(first)
    codes, (s, z) = q.codes(w), q.effective_qparams()
    nearest = quantize(w, s, z, W4_CHANNEL).long()
    assert torch.equal(codes[:, ::3], nearest[:, ::3])
    assert not torch.equal(codes, nearest)


def test_the_model_runs_in_eval_mode_and_keeps_its_mode() -> None:
    """A BatchNorm in training mode would update its running statistics on every calibration pass."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8))
    float_state = copy.deepcopy(model.state_dict())
    x = [correlated(64, 16, seed=0)]
    handle = attached(model.eval(), {nn.Linear: {"weight": W4_CHANNEL}}, x)
    model.train()
    model[2].eval()
    gptq(model, handle, x, progress=False)
    assert [m.training for m in model] == [True, True, False, True]
    handle.remove()
    assert all(same_state(v, float_state[k]) for k, v in model.state_dict().items())


def basis_rows(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A convolution's input rows built without ``unfold``: column ``k`` is the convolution (the module's own
    stride, padding, dilation) of ``x`` with the one-hot kernel ``e_k``, so ``rows @ W.reshape(out, -1).T``
    is the convolution's output without bias, a row per sample and output position."""
    assert isinstance(conv, (nn.Conv1d, nn.Conv2d))
    shape = original_parameter(conv).shape[1:]
    basis = torch.eye(math.prod(shape)).reshape(-1, 1, *shape)
    return torch.stack([conv._conv_forward(x, e, None).reshape(-1) for e in basis], dim=1)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv1d(6, 8, 5, stride=2, padding=2, dilation=2), (16, 6, 33)),
    (nn.Conv2d(3, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (6, 3, 9, 7)),
], ids=["conv1d", "conv2d"])  # fmt: skip
def test_a_convolution_gets_the_gptq_codes_of_its_patches(conv: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(6)
    model = nn.Sequential(conv)
    batches = [correlated(*shape[:-1], shape[-1], seed=s) for s in range(2)]
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, batches)
    q, w = handle.quantizer("0", "weight"), original_parameter(conv)
    with torch.no_grad():
        rows = torch.cat([basis_rows(conv, x) for x in batches])
    s, _ = q.effective_qparams()
    expected = reference_codes(w.reshape(w.shape[0], -1), s, rows, 0.01, W4_CHANNEL).reshape(w.shape)
    gptq(model, handle, batches, block_size=8, progress=False)
    assert torch.equal(q.codes(w), expected)


class Convs(nn.Module):
    """A Conv1d stack (stride, dilation, padding) feeding a Conv2d with a non-square kernel and stride."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(6, 16, 5, stride=2, padding=2)
        self.c2 = nn.Conv1d(16, 32, 3, dilation=2, padding=1, bias=False)
        self.c3 = nn.Conv2d(4, 16, (3, 2), stride=(2, 1), dilation=(1, 2), padding=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.c2(F.relu(self.c1(x))))  # (N, 32, L)
        out: torch.Tensor = self.c3(y.reshape(y.shape[0], 4, 8, -1))
        return out


def test_conv1d_and_strided_dilated_conv2d_beat_nearest() -> None:
    torch.manual_seed(3)
    model = Convs()
    batches = [correlated(24, 40, 6, seed=s).transpose(1, 2).contiguous() for s in range(2)]
    with torch.no_grad():
        targets = [model(x) for x in batches]
    handle = attached(model, {"*": {"weight": W4_CHANNEL, "input": U8}}, batches)
    nearest = output_mse(model, batches, targets)
    report = gptq(model, handle, batches, block_size=32, progress=False)
    assert_beats_nearest(report, ["c1", "c2", "c3"])
    assert output_mse(model, batches, targets) < nearest


# --------------------------------------------------------------------------- where the codes live


def test_digits_cnn_codes_live_in_the_quantizers_only() -> None:
    data = load_digits()
    torch.manual_seed(0)
    model = quant.fold_bn(build_model("cnn", (1, 8, 8), 10, 16).eval())
    pristine = copy.deepcopy(model)
    float_state = copy.deepcopy(model.state_dict())
    batches = [data.x_train[:128], data.x_train[128:256]]
    recipe = {"*": {"weight": W4_CHANNEL, "input": U8}}
    handle = attached(model, recipe, batches)
    report = gptq(model, handle, batches, progress=False)
    names = [n for n, m in pristine.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert_beats_nearest(report, names)
    layers = {layer.name: layer for layer in weight_layers(handle, "test")}
    for r in report.layers:
        q = handle.quantizer(r.name, "weight")
        w = original_parameter(layers[r.name].module)
        codes = q.codes(w)
        assert q.has_code_offsets and codes.dtype == torch.int64
        assert -8 <= int(codes.min()) and int(codes.max()) <= 7
        s, z = q.effective_qparams()
        assert int((codes != quantize(w, s, z, W4_CHANNEL).long()).sum()) == r.changed_codes
        assert torch.equal(q(w), dequantize(codes, s, z, W4_CHANNEL))  # what the forward computes with
        # the error the report gives is the quantized model's own layer output error
        layer = layers[r.name]
        with torch.no_grad():
            inputs = capture(model, layer, batches, quantized=True, handle=handle)
            xs = [quantized_input(handle, layer, x) for x in inputs]
            diffs = [layer_output(layer, x, q(w)) - layer_output(layer, x, w) for x in xs]
        mse = sum(float((d.double() ** 2).sum()) for d in diffs) / sum(d.numel() for d in diffs)
        assert mse == pytest.approx(r.error, rel=1e-6)
    # the handle's state_dict carries the codes into a fresh model, attached and calibrated
    saved = copy.deepcopy(model.state_dict())
    fresh = copy.deepcopy(pristine)
    fresh_handle = attached(fresh, recipe, batches[:1])
    fresh.load_state_dict(saved)
    for r in report.layers:
        w = original_parameter(layers[r.name].module)
        ours, theirs = handle.quantizer(r.name, "weight"), fresh_handle.quantizer(r.name, "weight")
        assert theirs.has_code_offsets and torch.equal(theirs.codes(w), ours.codes(w))
    with torch.no_grad():
        assert torch.equal(fresh(data.x_test[:64]), model(data.x_test[:64]))
    # remove() gives the float model back bit for bit
    handle.remove()
    state = model.state_dict()
    assert list(state) == list(float_state)
    assert all(same_state(state[k], float_state[k]) for k in state)


# --------------------------------------------------------------------------- bad input


def test_too_few_rows_are_refused_before_any_layer_changes() -> None:
    model, batches = mlp()
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, batches)
    gptq(model, handle, batches, progress=False)
    before = quantizer_state(handle)
    few = [batches[0][:40]]  # enough for layer '0' (32 columns), not for '2' (64 columns)
    with pytest.raises(ValueError, match=r"layer '2' needs at least 64 input rows \(samples x positions\).*got 40"):
        gptq(model, handle, few, progress=False)
    assert same_state(quantizer_state(handle), before)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3))  # 27 columns, 2 x 2 positions per image
    conv_handle = attached(conv, {"*": {"weight": W4_CHANNEL}}, [torch.randn(8, 3, 4, 4)])
    with pytest.raises(ValueError, match="needs at least 27 input rows .*got 24"):
        gptq(conv, conv_handle, [torch.randn(6, 3, 4, 4)], progress=False)
    assert not conv_handle.quantizer("0", "weight").has_code_offsets


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"damp": 0}, ValueError, r"damp=0 must be a finite number > 0"),
        ({"damp": -0.1}, ValueError, r"damp=-0.1 must be"),
        ({"damp": float("nan")}, ValueError, r"damp=nan must be"),
        ({"block_size": 0}, ValueError, r"block_size=0 must be an integer >= 1"),
        ({"block_size": 2.0}, ValueError, r"block_size=2.0 must be an integer"),
        ({"layers": ["1"]}, ValueError, r"'1' is not a quantized module"),
        ({"layers": ["3"]}, ValueError, r"module '3' has no weight quantizer"),
        ({"layers": ["0", "nope"]}, ValueError, r"'nope' is not a quantized module"),
        ({"batches": torch.randn(96, 32)}, TypeError, r"not one batch"),
        ({"batches": []}, ValueError, r"no calibration batches"),
    ],
)
def test_bad_input_is_refused_before_any_quantizer_changes(options: dict[str, Any], error: type[Exception],
                                                           message: str) -> None:  # fmt: skip
    model, batches = mlp()
    handle = attached(model, {"*": {"weight": W4_CHANNEL}, "3": {"input": U8}}, batches)
    gptq(model, handle, batches, layers=["2"], progress=False)  # chosen codes on one layer, nearest elsewhere
    before = quantizer_state(handle)
    data = options.pop("batches", batches)
    with pytest.raises(error, match=message):
        gptq(model, handle, data, progress=False, **options)
    assert same_state(quantizer_state(handle), before)


def test_an_uncalibrated_handle_is_refused() -> None:
    model, batches = mlp()
    handle = quant.attach(model, {"*": {"weight": W4_CHANNEL}})
    before = quantizer_state(handle)
    with pytest.raises(ValueError, match=r"module '0'.*has no qparams: calibrate the handle first"):
        gptq(model, handle, batches, progress=False)
    assert same_state(quantizer_state(handle), before)


@pytest.mark.parametrize("conv, message", [
    (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "pads with padding_mode='reflect'"),
    (nn.Conv2d(3, 4, 3, padding="same"), "has padding='same'"),
])  # fmt: skip
def test_convolutions_gptq_cannot_unfold_are_refused(conv: nn.Conv2d, message: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), conv)
    x = [torch.randn(4, 3, 6, 6)]
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, x)
    with pytest.raises(ValueError, match=f"module '1' {message}"):
        gptq(model, handle, x, progress=False)
    assert not handle.quantizer("0", "weight").has_code_offsets


def test_a_failed_factorization_names_the_layer_and_puts_every_code_back(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batches = mlp()
    handle = attached(model, {"*": {"weight": W4_CHANNEL}}, batches)
    gptq(model, handle, batches, layers=["0", "4"], damp=0.1, progress=False)
    before = quantizer_state(handle)
    real = torch.linalg.cholesky_ex
    calls = []

    def failing(a: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(a.shape[0])
        lower, info = real(a, **kwargs)
        return (lower, torch.ones_like(info)) if a.shape[0] == 64 else (lower, info)  # layer '2' fails

    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    model.train()
    with pytest.raises(ValueError, match=r"layer '2'.*not positive definite.*larger damp than 0.01"):
        gptq(model, handle, batches, progress=False)
    assert 32 in calls and 64 in calls and 128 not in calls
    assert model.training  # its mode is put back too
    assert same_state(quantizer_state(handle), before)
