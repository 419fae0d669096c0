"""Post-training algorithms against round-to-nearest min-max PTQ at W4, W3 and W2 on bundled data.

    python -m experiments.ptq_table                      # the table; --json PATH writes it too

Models: the digits CNN (8x8 images) and the MLP and keyword-spotting 1-D CNN on mnist1d sequences, briefly
trained, batch norms folded. Each is quantized with one glob rule (per-output-channel symmetric weights of
the given width, per-tensor asymmetric uint8 activations), calibrated on 512 training samples, then left at
round-to-nearest (RTN) or given the codes of :func:`quant.ptq.adaround` or :func:`quant.ptq.gptq` on the same
samples; the test accuracy of each, next to the float model's. Grouped (depthwise) convolutions stay at RTN.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

import quant
from experiments.data.dataset import Dataset
from experiments.data.digits import load_digits
from experiments.data.mnist1d import load_mnist1d
from experiments.models.registry import build_model
from experiments.training import train
from quant import QuantSpec

__all__ = ["PTQRow", "MODELS", "run", "main"]

#: name -> (dataset loader, registry model)
MODELS: dict[str, tuple[Callable[[], Dataset], str]] = {
    "cnn": (load_digits, "cnn"),
    "mlp": (load_mnist1d, "mlp"),
    "kws": (load_mnist1d, "kws"),
}
METHODS = ("rtn", "adaround", "gptq")


@dataclass(frozen=True)
class PTQRow:
    model: str
    data: str
    weight_bits: int
    float_accuracy: float
    accuracy: dict[str, float]
    seconds: dict[str, float]


def _accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def _quantized(model: nn.Module, x: torch.Tensor, bits: int) -> tuple[nn.Module, quant.QuantHandle]:
    model = copy.deepcopy(model)
    weight = QuantSpec(bits=bits, signed=True, symmetric=True, granularity="channel", axis=0)
    act = QuantSpec(bits=8, signed=False, symmetric=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, {"*": {"weight": weight, "input": act}})
    with torch.no_grad(), handle.calibrate():
        model(x)
    return model, handle


def run(models: Sequence[str], bits: Sequence[int], epochs: int, progress: bool) -> list[PTQRow]:
    from quant.ptq import adaround, gptq

    rows = []
    for name in models:
        load, arch = MODELS[name]
        data = load()
        torch.manual_seed(0)
        float_model = build_model(arch, tuple(data.x_train.shape[1:]), 10, 16)
        train(float_model, data.x_train, data.y_train, epochs=epochs, progress=progress, desc=f"train {name}")
        float_model = quant.fold_bn(float_model.eval())
        x = data.x_train[:512]
        batches = [x[i : i + 128] for i in range(0, len(x), 128)]
        for b in tqdm(bits, desc=name, disable=not progress, leave=False):
            accuracy, seconds = {}, {}
            for method in METHODS:
                model, handle = _quantized(float_model, x, b)
                start = time.perf_counter()
                if method == "adaround":
                    adaround(model, handle, batches, progress=False)
                elif method == "gptq":
                    gptq(model, handle, batches, progress=False)
                seconds[method] = time.perf_counter() - start
                accuracy[method] = _accuracy(model, data)
            rows.append(PTQRow(name, data.name, b, _accuracy(float_model, data), accuracy, seconds))
    return rows


def table(rows: Sequence[PTQRow]) -> str:
    """The rows as a markdown table (accuracy, and each algorithm's time in seconds)."""
    lines = ["| model | data | weights | float | RTN | AdaRound | GPTQ | AdaRound s | GPTQ s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, s = r.accuracy, r.seconds
        lines.append(f"| {r.model} | {r.data} | W{r.weight_bits}A8 | {r.float_accuracy:.3f} | {a['rtn']:.3f} | "
                     f"{a['adaround']:.3f} | {a['gptq']:.3f} | {s['adaround']:.1f} | {s['gptq']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.ptq_table", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--bits", nargs="*", type=int, default=[4, 3, 2])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    if any(b < 2 or b > 8 for b in args.bits):
        p.error(f"--bits {args.bits}: weight widths lie in 2..8")
    rows = run(args.models, args.bits, args.epochs, args.progress)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
