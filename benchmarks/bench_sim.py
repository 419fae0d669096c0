"""Cost of simulated quantization: training-step and evaluation time vs float.

A CIFAR-shaped ResNet-20 at batch 128 runs a training step (forward, backward, SGD) and
an evaluation forward for: float PyTorch, this project's W8A8 and W4A4 fast mode
(per-channel symmetric weights, per-tensor asymmetric activations, QAT-style dynamic
observation), and torch.ao eager QAT (``get_default_qat_qconfig("x86")``), all in the
same process, on 1 and 2 threads. Each figure is the median of repeated steps after
warm-up; ratios are to float on the same thread count. Evaluation is timed twice:
still observing (the state after QAT-style training) and with observation stopped
(``handle.freeze()``; torch.ao's ``disable_observer``), the state a calibrated model
is evaluated in. Results are printed and
written to ``benchmarks/results/sim.json``.

Run: ``make bench`` or ``python -m benchmarks.bench_sim [--steps N] [--warmup N]``.
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
from torch import nn
from tqdm import tqdm

import quant
from experiments.models.resnet import ResNet20
from quant import QuantSpec

RESULTS = Path(__file__).resolve().parent / "results" / "sim.json"


def recipe_wa(bits: int) -> dict[str, dict[str, QuantSpec]]:
    """All Conv/Linear: per-channel symmetric weights, per-tensor asymmetric inputs."""
    return {
        "*": {
            "weight": QuantSpec(bits=bits, signed=True, symmetric=True, granularity="channel", axis=0),
            "input": QuantSpec(bits=bits, signed=False, symmetric=False),
        }
    }


def build(variant: str) -> tuple[nn.Module, Callable[[], None], Callable[[], None]]:
    """A fresh ResNet-20 (same seed for every variant) prepared for ``variant``, a function
    that stops observation before evaluation, and a clean-up."""
    torch.manual_seed(0)
    model = ResNet20()
    freeze: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None
    if variant in ("w8a8", "w4a4"):
        handle = quant.attach(model, recipe_wa(8 if variant == "w8a8" else 4))
        freeze, cleanup = handle.freeze, handle.remove
    elif variant == "torch.ao qat":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import disable_observer, get_default_qat_qconfig, prepare_qat

            model.train()
            model.qconfig = get_default_qat_qconfig("x86")  # type: ignore[no-untyped-call]
            model = prepare_qat(model)  # type: ignore[no-untyped-call]
            qat_model = model
            freeze = lambda: qat_model.apply(disable_observer)  # noqa: E731
    elif variant != "float":
        raise ValueError(f"unknown variant {variant!r}")
    return model, freeze, cleanup


def median_time(fn: Callable[[], None], steps: int, warmup: int) -> float:
    """Median wall time of ``fn`` in seconds over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(variant: str, steps: int, warmup: int, batch: int) -> dict[str, float]:
    model, freeze, cleanup = build(variant)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    model.train()
    train_s = median_time(train_step, steps, warmup)
    model.eval()
    observing_eval_s = median_time(eval_step, steps, warmup)
    freeze()
    eval_s = median_time(eval_step, steps, warmup)
    cleanup()
    return {"train_step_s": train_s, "eval_s": eval_s, "observing_eval_s": observing_eval_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    variants = ["float", "w8a8", "w4a4", "torch.ao qat"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    jobs = [(t, v) for t in args.threads for v in variants]
    for threads, variant in tqdm(jobs, desc="bench_sim"):
        torch.set_num_threads(threads)
        results.setdefault(str(threads), {})[variant] = measure(variant, args.steps, args.warmup, args.batch)
    for per_variant in results.values():
        base = per_variant["float"]
        for m in per_variant.values():
            m["train_ratio"] = m["train_step_s"] / base["train_step_s"]
            m["eval_ratio"] = m["eval_s"] / base["eval_s"]
            m["observing_eval_ratio"] = m["observing_eval_s"] / base["eval_s"]

    print(f"\nResNet-20, batch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up")
    print("eval: observers frozen (ours: handle.freeze(); torch.ao: disable_observer); eval obs: still observing")
    print(
        f"{'threads':>7} {'variant':<14} {'train step ms':>13} {'x float':>8} {'eval ms':>8} {'x float':>8}"
        f" {'eval obs ms':>11} {'x float':>8}"
    )
    for threads, per_variant in results.items():
        for variant, m in per_variant.items():
            print(
                f"{threads:>7} {variant:<14} {1e3 * m['train_step_s']:>13.1f} {m['train_ratio']:>8.2f}"
                f" {1e3 * m['eval_s']:>8.1f} {m['eval_ratio']:>8.2f}"
                f" {1e3 * m['observing_eval_s']:>11.1f} {m['observing_eval_ratio']:>8.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_sim",
        "model": "ResNet-20 (CIFAR shape 3x32x32)",
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
