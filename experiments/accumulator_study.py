"""The accuracy cost of a narrow accumulator: W4A4 QAT with and without A2Q at 16-, 14-, 12- and 10-bit accumulators.

    python -m experiments.accumulator_study                     # the table; --json PATH writes the rows too
    python -m experiments.accumulator_study --acc-bits 12 --width 16 --epochs 2 --qat-epochs 1   # a quick run

A bias-free MLP (flatten, ``width`` -> ``width`` hidden units with ReLU, a classifier; no biases, so
each accumulator holds only the products A2Q bounds) is trained in float, then given the W4A4 scheme
of the ``w4a4_acc16_sat`` datapath (int4 per-channel weights, uint4 activations with a zero point) and
QAT-trained twice from the same float weights: plain (LSQ steps) and A2Q (``learn="a2q"`` with the
datapath's accumulator as target, one run per width). The plain model is the same at every width; each is
lowered to the preset with ``acc_bits`` = 16, 14, 12, 10 (saturating, ``bias_bits = min(16, acc_bits)``).

Per width: the test accuracy of the float model, of each QAT model in fast simulation and of its integer
program on the saturating datapath; the layers :func:`quant.sim.accumulator.accumulator_bound` says can
overflow; and the test samples on which the datapath's exact overflow check fires (the program lowered with
``overflow="error"`` refuses them: the samples a saturating datapath computes with at least one clamped
accumulator).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import quant
from experiments.data.dataset import Dataset
from experiments.data.digits import load_digits
from experiments.data.mnist1d import load_mnist1d
from experiments.training import accuracy, train
from quant.contract.accumulator import AccumulatorTarget
from quant.ir.program import IntegerProgram
from quant.sim.accumulator import accumulator_bound
from quant.sim.recipe import QuantizerConfig, datapath_recipe

__all__ = ["BiasFreeMLP", "StudyRow", "DATASETS", "METHODS", "datapath_for", "qat", "saturating_samples", "run",
           "table", "main"]  # fmt: skip

DATASETS: dict[str, Callable[[], Dataset]] = {"digits": load_digits, "mnist1d": load_mnist1d}
METHODS = ("plain", "a2q")
PRESET = "w4a4_acc16_sat"


class BiasFreeMLP(nn.Module):
    """Flatten, ``Linear(features, width)``-ReLU, ``Linear(width, width)``-ReLU, ``Linear(width, classes)``, no biases."""

    def __init__(self, features: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, width, bias=False)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.fc3 = nn.Linear(width, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))
        return out


@dataclass(frozen=True)
class StudyRow:
    """One accumulator width: accuracies (fast simulation and integer program) and overflows, by method."""

    data: str
    acc_bits: int
    l1_limit: int
    float_accuracy: float
    accuracy: dict[str, float]
    program_accuracy: dict[str, float]
    max_l1: dict[str, int]
    overflowing_layers: dict[str, int]
    layers: int
    saturating_samples: dict[str, int]
    samples: int


def datapath_for(acc_bits: int) -> quant.Datapath:
    """``w4a4_acc16_sat`` with an ``acc_bits`` accumulator (and a bias no wider)."""
    base = quant.Datapath.preset(PRESET)
    return base.with_(name=f"w4a4_acc{acc_bits}_sat", acc_bits=acc_bits, bias_bits=min(base.bias_bits, acc_bits))


def qat(float_model: nn.Module, data: Dataset, datapath: quant.Datapath, method: str, *, epochs: int, lr: float,
        seed: int, progress: bool = False) -> tuple[nn.Module, quant.QuantHandle]:  # fmt: skip
    """A copy of ``float_model`` with ``datapath``'s W4A4 scheme (weights ``learn="lsq"`` for ``"plain"``,
    ``learn="a2q"`` targeting ``datapath``'s accumulator for ``"a2q"``), calibrated on 512 training samples,
    QAT-trained for ``epochs`` (input ranges tracked), then frozen with fresh edge statistics for lowering."""
    if method not in METHODS:
        raise ValueError(f"qat: method={method!r} is not one of {', '.join(map(repr, METHODS))}")
    model = copy.deepcopy(float_model)
    scheme = datapath_recipe(datapath)["*"]
    if method == "a2q":
        weight = QuantizerConfig(scheme["weight"], learn="a2q", accumulator=AccumulatorTarget.of(datapath))
    else:
        weight = QuantizerConfig(scheme["weight"], learn="lsq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": weight, "input": QuantizerConfig(scheme["input"])}})
    calibration = data.x_train[:512]
    with torch.no_grad(), handle.calibrate():
        model(calibration)
    for _, role, q in handle.quantizers():
        q.observing = q.observing or role == "input"  # STE QAT: the activation ranges keep tracking
    train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, seed=seed + 1, progress=progress,
          desc=f"QAT {method} {datapath.name}")  # fmt: skip
    model.eval()
    handle.freeze()
    handle.disable()  # statistics of the tensors between layers, for the lowering (quantizers keep theirs)
    handle.edges = None
    with torch.no_grad(), handle.calibrate():
        model(calibration)
    handle.enable()
    return model, handle


def saturating_samples(program: IntegerProgram, x: torch.Tensor, chunk: int = 256) -> int:
    """How many samples of ``x`` make ``program`` (lowered with ``overflow="error"``) raise ``OverflowError``:
    those on which some accumulator leaves its range. Chunks that raise are halved, down to 16 samples, which
    are then run one by one."""
    if program.datapath.overflow != "error":
        raise ValueError(f"saturating_samples: the program's datapath has overflow={program.datapath.overflow!r}; "
                         "lower with datapath.with_(overflow='error')")  # fmt: skip
    pending = [x[i : i + chunk] for i in range(0, len(x), chunk)]
    count = 0
    while pending:
        part = pending.pop()
        try:
            program.run(part)
        except OverflowError:
            if len(part) == 1:
                count += 1
            elif len(part) <= 16:
                pending += [part[i : i + 1] for i in range(len(part))]
            else:
                half = len(part) // 2
                pending += [part[:half], part[half:]]
    return count


def _program_accuracy(program: IntegerProgram, data: Dataset) -> float:
    codes = program.run(data.x_test)
    return float((torch.from_numpy(codes.astype("int64")).argmax(1) == data.y_test).float().mean())


def run(acc_bits: Sequence[int], *, data_name: str = "digits", width: int = 256, epochs: int = 30,
        qat_epochs: int = 10, lr: float = 3e-3, qat_lr: float = 1e-3, seed: int = 0,
        progress: bool = True) -> list[StudyRow]:  # fmt: skip
    """The study's rows, one per accumulator width (module doc)."""
    if data_name not in DATASETS:
        raise ValueError(f"run: data_name={data_name!r} is not one of {', '.join(map(repr, DATASETS))}")
    for p in acc_bits:
        AccumulatorTarget.of(datapath_for(p))  # a width that holds no product is refused before any training
    data = DATASETS[data_name]()
    torch.manual_seed(seed)
    features = int(torch.tensor(data.input_shape).prod())
    float_model = BiasFreeMLP(features, data.num_classes, width)
    train(float_model, data.x_train, data.y_train, epochs=epochs, lr=lr, seed=seed, progress=progress,
          desc="float")  # fmt: skip
    float_acc = accuracy(float_model, data.x_test, data.y_test)
    plain = qat(float_model, data, datapath_for(max(acc_bits)), "plain", epochs=qat_epochs, lr=qat_lr, seed=seed,
                progress=progress)  # fmt: skip
    rows = []
    for p in tqdm(acc_bits, desc="accumulator widths", disable=not progress, leave=False):
        dp = datapath_for(p)
        trained = {"plain": plain, "a2q": qat(float_model, data, dp, "a2q", epochs=qat_epochs, lr=qat_lr, seed=seed,
                                              progress=progress)}  # fmt: skip
        acc, prog_acc, max_l1, overflowing, saturating = {}, {}, {}, {}, {}
        layers = 0
        for method, (model, handle) in trained.items():
            acc[method] = accuracy(model, data.x_test, data.y_test)
            report = accumulator_bound(handle, dp)
            layers = len(report.layers)
            overflowing[method] = len(report.overflowing)
            max_l1[method] = max(int(layer.l1.max()) for layer in report.layers)
            prog_acc[method] = _program_accuracy(quant.lower(model, handle, data.x_test[:1], datapath=dp), data)
            strict = quant.lower(model, handle, data.x_test[:1], datapath=dp.with_(overflow="error"))
            saturating[method] = saturating_samples(strict, data.x_test)
        rows.append(StudyRow(data.name, p, AccumulatorTarget.of(dp).l1_limit, float_acc, acc, prog_acc, max_l1,
                             overflowing, layers, saturating, len(data.y_test)))  # fmt: skip
    return rows


def table(rows: Sequence[StudyRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| data | acc bits | L1 limit | float | plain QAT | plain on datapath | plain max L1 | plain overflowing layers "
        "| plain saturating samples | A2Q QAT | A2Q on datapath | A2Q max L1 | A2Q overflowing layers "
        "| A2Q saturating samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.data, str(r.acc_bits), str(r.l1_limit), f"{r.float_accuracy:.3f}"]
        for m in METHODS:
            cells += [f"{r.accuracy[m]:.3f}", f"{r.program_accuracy[m]:.3f}", str(r.max_l1[m]),
                      f"{r.overflowing_layers[m]}/{r.layers}", f"{r.saturating_samples[m]}/{r.samples}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.accumulator_study", description=__doc__.split("\n")[0])
    p.add_argument("--acc-bits", nargs="*", type=int, default=[16, 14, 12, 10], help="accumulator widths (8..32)")
    p.add_argument("--data", default="digits", choices=list(DATASETS))
    p.add_argument("--width", type=int, default=256, help="hidden units of the MLP")
    p.add_argument("--epochs", type=int, default=30, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    bad = [b for b in args.acc_bits if not 8 <= b <= 32]
    if bad or not args.acc_bits:
        p.error(f"--acc-bits {args.acc_bits}: accumulator widths lie in 8..32 (a Datapath's acc_bits)")
    if args.width < 1 or args.epochs < 0 or args.qat_epochs < 0:
        p.error("--width must be positive and --epochs, --qat-epochs non-negative")
    rows = run(args.acc_bits, data_name=args.data, width=args.width, epochs=args.epochs, qat_epochs=args.qat_epochs,
               seed=args.seed, progress=args.progress)  # fmt: skip
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
