"""A QAT run killed mid-epoch resumes from its last checkpoint and ends with exactly the weights (and
quantizer state) of an uninterrupted run; the same config and seed give identical results."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import quant
from experiments.digits import load_digits_data
from experiments.models.registry import build_model
from experiments.training import train
from quant import QuantSpec
from quant.sim.recipe import QuantizerConfig


def same(a: object, b: object) -> bool:
    """Equal state: tensors element for element, dicts key by key (a quantizer's extra state), else ``==``."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


class Killed(Exception):
    """Stands for the process being killed: nothing after it runs."""


def qat_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    data = load_digits_data()
    model = quant.fold_bn(build_model("cnn", (1, 8, 8), 10, 8).eval())
    recipe = {"*": {"weight": QuantizerConfig(QuantSpec(bits=4, granularity="channel", axis=0), learn="lsq"),
                    "input": QuantizerConfig(QuantSpec(bits=4, signed=False, symmetric=False), observer="moving_average",
                                             learn="lsq")}}  # fmt: skip
    handle = quant.attach(model, recipe)
    with torch.no_grad(), handle.calibrate():
        model(data.x_train[:256])
    return model, data.x_train[:512], data.y_train[:512]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    model, x, y = qat_model()
    fresh = copy.deepcopy(model)
    torch.manual_seed(1)
    train(model, x, y, epochs=3, lr=1e-3, batch_size=64, seed=5, progress=False)
    reference = model.state_dict()

    interrupted = copy.deepcopy(fresh)
    ckpt = tmp_path / "qat_checkpoint.pt"

    def kill(epoch: int, batch: int) -> None:
        if (epoch, batch) == (1, 3):
            raise Killed

    torch.manual_seed(1)
    with pytest.raises(Killed):
        train(interrupted, x, y, epochs=3, lr=1e-3, batch_size=64, seed=5, progress=False, checkpoint=ckpt, on_batch=kill)
    assert ckpt.is_file()
    resumed = copy.deepcopy(fresh)  # a new process: the model as the run rebuilds it before training
    torch.manual_seed(123)  # whatever the new process's global RNG is: the checkpoint restores it
    losses = train(resumed, x, y, epochs=3, lr=1e-3, batch_size=64, seed=5, progress=False, checkpoint=ckpt)
    assert len(losses) == 3
    state = resumed.state_dict()
    assert state.keys() == reference.keys()
    assert [k for k in reference if not same(state[k], reference[k])] == []
    with pytest.raises(ValueError, match="a checkpoint of a 3-epoch run, not of 4 epochs"):
        train(copy.deepcopy(fresh), x, y, epochs=4, progress=False, checkpoint=ckpt)


def test_the_same_config_and_seed_give_identical_results() -> None:
    a, x, y = qat_model()
    b, _, _ = qat_model()
    for m in (a, b):
        torch.manual_seed(2)
        train(m, x, y, epochs=2, lr=1e-3, batch_size=64, seed=3, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert [k for k in sa if not same(sa[k], sb[k])] == []
