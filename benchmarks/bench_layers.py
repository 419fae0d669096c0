"""Cost of the layers beyond Conv/Linear under simulation: a QAT training step vs float, on 1 thread.

Two zoo models (:mod:`experiments.models.sequence`) on mnist1d-shaped batches (64 sequences of 40 steps):
the 2-layer transformer encoder (width 64, 4 heads) and the 1-layer LSTM (width 64). Each runs a training
step (forward, cross-entropy, backward, SGD) in float and in W4A8 fast mode (per-channel symmetric 4-bit
weights, per-tensor asymmetric 8-bit activations reaching every attention matmul operand and the
LSTM's hidden state), QAT-style observing (``w4a8``) and with LSQ's learned steps (``w4a8 lsq``),
interleaved in one process; each figure is the median of
repeated steps after warm-up. Results are printed and written to ``benchmarks/results/layers.json``.

Run: ``make bench`` or ``python -m benchmarks.bench_layers [--steps N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import quant
from experiments.layer_zoo import recipe
from quant import QuantizerConfig
from experiments.models.sequence import LSTMClassifier, TransformerClassifier

RESULTS = Path(__file__).resolve().parent / "results" / "layers.json"
MODELS: dict[str, Callable[[], nn.Module]] = {
    "transformer": lambda: TransformerClassifier(1, 40, 10, width=64, layers=2, heads=4),
    "lstm": lambda: LSTMClassifier(1, 10, width=64),
}


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss: torch.Tensor = F.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 40, generator=g), torch.randint(0, 10, (64,), generator=g)
    results: dict[str, dict[str, float]] = {}
    for name, make in MODELS.items():
        torch.manual_seed(0)
        float_model = make().train()
        variants = {"float": float_model}
        for variant, learn in (("w4a8", "none"), ("w4a8 lsq", "lsq")):
            torch.manual_seed(0)
            model = make().train()
            rules = {key: None if roles is None else {role: QuantizerConfig(spec, learn=learn) for role, spec in roles.items()}
                     for key, roles in recipe(model, 4, 8).items()}  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant.attach(model, rules)
            variants[variant] = model
        steps = {name: step_fn(model, x, y) for name, model in variants.items()}
        for fn in steps.values():
            for _ in range(args.warmup):
                fn()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.steps):  # interleaved: both variants see the same machine state
            for key, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {"float_ms": 1e3 * med["float"]}
        line = f"{name:12s} QAT step, 1 thread: float {1e3 * med['float']:7.2f} ms"
        for variant in ("w4a8", "w4a8 lsq"):
            results[name][f"{variant}_ms"] = 1e3 * med[variant]
            results[name][f"{variant}_ratio"] = med[variant] / med["float"]
            line += f", {variant} {1e3 * med[variant]:7.2f} ms ({med[variant] / med['float']:.2f}x)"
        print(line)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": 1,
                                   "batch": 64, "steps": args.steps, "results": results}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
