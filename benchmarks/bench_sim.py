"""Cost of simulated quantization: training-step and evaluation time vs float, and the cost of one quantizer call.

Two CIFAR-shaped models, ResNet-20 and a MobileNetV2-style net (depthwise convs, hardswish, residual adds;
``experiments.models.registry.MobileNetLike``), at batch 16 and 128, on 1 and 2 threads. Variants, all
W4A4 fast mode (per-channel symmetric 4-bit weights, per-tensor asymmetric 4-bit inputs of every
Conv/Linear) unless named otherwise:

* ``calibrated``: observers frozen after one calibration batch (QAT with fixed qparams, or fine-tuning);
* ``observing``: observers updating at every step (torch.ao-style QAT);
* ``lsq``: LSQ's learned steps for weights and activations; ``pact``: PACT's learned clipping for the
  activations (weights observed);
* ``torch.ao qat``: torch.ao's FX QAT (``prepare_qat_fx`` with the x86 QAT qconfig mapping);
* ``brevitas``: where Brevitas installs against this torch (:mod:`benchmarks.peers`), the same model with every
  Conv/Linear a ``QuantConv2d``/``QuantLinear`` of 4-bit per-channel weights (``Int8WeightPerChannelFloat``)
  and 4-bit asymmetric inputs (``ShiftedUint8ActPerTensorFloat``, learned scale and zero point), timed after
  its statistics phase (shortened to a few steps, all run before the timed rounds). It runs in a process
  of its own with its own float model, interleaved with it the same way, so its ratio is to that float.

Every variant of one (model, batch, threads) is built from the same seed and timed round-robin: each round
runs one step of every variant in turn, and each figure is the median over rounds of the per-round ratio
to float, with the 25th-75th percentile spread (so machine drift hits every variant alike). Evaluation
(a no-grad forward) is timed the same way with observers frozen. A last table gives the cost of one
quantizer call on a small tensor (batch 16 x 16 channels x 8 x 8), calibrated, observing and LSQ, beside
``torch.fake_quantize_per_tensor_affine``. Results are printed and written to
``benchmarks/results/sim.json``; where Brevitas does not install, the reason is printed and recorded.

On glibc, freed activation-sized tensors (float's and the fake quantization's outputs, masks and gradients)
go back to the kernel and fault in again at the next step, which some hosts make expensive; running with
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295`` keeps them
and shows how much of a ratio is page faults (MobileNet b128 calibrated: 1.27 against 1.12 in one such pair).

Run: ``make bench`` or ``python -m benchmarks.bench_sim [--rounds N] [--batches 16 128] [--threads 1 2]
[--no-brevitas]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

import quant
from experiments.models.registry import MobileNetLike
from experiments.models.resnet import ResNet20
from benchmarks.peers import BREVITAS_DIR, brevitas_env, install_brevitas, last_line
from quant import QuantizerConfig, QuantSpec

RESULTS = Path(__file__).resolve().parent / "results" / "sim.json"
MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet20": ResNet20,
    "mobilenet": lambda: MobileNetLike(3, 10, width=16),
}
VARIANTS = ("float", "calibrated", "observing", "lsq", "pact", "torch.ao qat")
COLUMNS = (*VARIANTS[1:], "brevitas")
#: Training steps of Brevitas's statistics phase (its default is 300), run before the timed rounds.
BREVITAS_STATS_STEPS = 4
BREVITAS_PROBE = "import brevitas.nn, brevitas.quant"
W4 = QuantSpec(bits=4, signed=True, symmetric=True, granularity="channel", axis=0)
A4 = QuantSpec(bits=4, signed=False, symmetric=False)


def recipe(variant: str) -> dict[str, dict[str, QuantizerConfig]]:
    """Every Conv/Linear's weight and input, with the variant's learned quantizers."""
    weight_learn = "lsq" if variant == "lsq" else "none"
    input_learn = {"lsq": "lsq", "pact": "pact"}.get(variant, "none")
    return {"*": {"weight": QuantizerConfig(W4, learn=weight_learn), "input": QuantizerConfig(A4, learn=input_learn)}}


class Variant:
    """One model prepared for one variant: a training step and an evaluation forward on fixed data."""

    def __init__(self, model_name: str, variant: str, x: torch.Tensor, y: torch.Tensor) -> None:
        torch.manual_seed(0)
        model = MODELS[model_name]().train()
        self.freeze: Callable[[], None] = lambda: None
        if variant == "torch.ao qat":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
                from torch.ao.quantization.quantize_fx import prepare_qat_fx

                model = prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), (x,))
            qat = model

            def freeze_observers() -> None:
                qat.apply(disable_observer)

            self.freeze = freeze_observers
        elif variant == "brevitas":
            model = brevitas_layers(model)
        elif variant != "float":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the BatchNorms stay float, said once
                handle = quant.attach(model, recipe(variant))
            if variant == "calibrated":
                with torch.no_grad(), handle.calibrate():
                    model(x)
                handle.freeze()
            self.freeze = handle.freeze
        self.model = model
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        self.train_step = train_step
        self.x = x

    def eval_step(self) -> None:
        with torch.no_grad():
            self.model(self.x)


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Per variant: the median step time and the median / 25th / 75th percentile of the per-round ratio to
    ``steps["float"]`` over ``rounds`` round-robin rounds, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(warmup + rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    out: dict[str, dict[str, float]] = {}
    for name, ts in times.items():
        ratios = sorted(t / f for t, f in zip(ts, times["float"]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        out[name] = {"ms": 1e3 * statistics.median(ts), "ratio": statistics.median(ratios), "p25": q[0], "p75": q[2]}
    return out


def per_call_costs(calls: int = 2000) -> dict[str, float]:
    """Microseconds per quantizer call on a (16, 16, 8, 8) tensor that requires grad, median of 5 runs."""
    from quant.sim.quantizer import Quantizer

    x = torch.randn(16, 16, 8, 8, requires_grad=True)

    def cost(fn: Callable[[], object]) -> float:
        for _ in range(50):
            fn()
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            runs.append((time.perf_counter() - t0) / calls * 1e6)
        return statistics.median(runs)

    def quantizer(learn: str, observing: bool) -> Quantizer:
        q = Quantizer(A4, learn=learn).train()
        q(x)
        q.observing = observing
        return q

    calibrated, observing, lsq = quantizer("none", False), quantizer("none", True), quantizer("lsq", False)
    return {
        "calibrated_us": cost(lambda: calibrated(x)),
        "observing_us": cost(lambda: observing(x)),
        "lsq_us": cost(lambda: lsq(x)),
        "torch_fake_quantize_us": cost(lambda: torch.fake_quantize_per_tensor_affine(x, 0.1, 3, 0, 15)),
    }


def measure(model_name: str, batch: int, rounds: int, warmup: int) -> dict[str, dict[str, dict[str, float]]]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    variants = {v: Variant(model_name, v, x, y) for v in VARIANTS}
    train = interleaved({v: m.train_step for v, m in variants.items()}, rounds, warmup)
    for m in variants.values():
        m.model.eval()
        m.freeze()
    evaluation = interleaved({v: m.eval_step for v, m in variants.items()}, rounds, warmup)
    return {"train": train, "eval": evaluation}


def brevitas_layers(model: nn.Module) -> nn.Module:
    """``model`` with every Conv2d/Linear replaced by Brevitas's quantized layer of the same shape and weights
    (module doc); imports Brevitas, so only the worker process calls it."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat, ShiftedUint8ActPerTensorFloat

    schemes = dict(weight_quant=Int8WeightPerChannelFloat, weight_bit_width=4, input_quant=ShiftedUint8ActPerTensorFloat,
                   input_bit_width=4, input_collect_stats_steps=BREVITAS_STATS_STEPS)  # fmt: skip

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            q: nn.Module
            if isinstance(child, nn.Conv2d):
                q = qnn.QuantConv2d(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                                    padding=child.padding, dilation=child.dilation, groups=child.groups,
                                    bias=child.bias is not None, **schemes)  # fmt: skip
            elif isinstance(child, nn.Linear):
                q = qnn.QuantLinear(child.in_features, child.out_features, bias=child.bias is not None, **schemes)
            else:
                swap(child)
                continue
            loaded = q.load_state_dict(child.state_dict(), strict=False)  # Brevitas's own state keeps its start
            assert not loaded.unexpected_keys and not {"weight", "bias"} & set(loaded.missing_keys), loaded
            setattr(parent, name, q)

    swap(model)
    return model


def brevitas_worker(model_name: str, batch: int, threads: int, rounds: int, warmup: int) -> None:
    """Print, as JSON, :func:`interleaved`'s train and eval figures of float and Brevitas on one (model, batch,
    threads), the data and float model as :func:`measure` makes them."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    variants = {v: Variant(model_name, v, x, y) for v in ("float", "brevitas")}
    for _ in range(BREVITAS_STATS_STEPS + 1):  # the statistics phase, then one step with the learned parameters
        variants["brevitas"].train_step()
    train = interleaved({v: m.train_step for v, m in variants.items()}, rounds, warmup)
    for m in variants.values():
        m.model.eval()
    evaluation = interleaved({v: m.eval_step for v, m in variants.items()}, rounds, warmup)
    print(json.dumps({"train": train, "eval": evaluation}))


def brevitas_measure(model_name: str, batch: int, threads: int, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """:func:`brevitas_worker`'s figures for Brevitas, from a process of its own: ``{"train": ..., "eval": ...}``."""
    cmd = [sys.executable, "-W", "ignore", "-m", "benchmarks.bench_sim", "--brevitas-worker", model_name, str(batch),
           str(threads), "--rounds", str(rounds), "--warmup", str(warmup)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=brevitas_env(BREVITAS_DIR))
    if done.returncode != 0:
        raise RuntimeError(f"the Brevitas worker failed: {last_line(done.stderr)}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {kind: figures[kind]["brevitas"] for kind in ("train", "eval")}


def _fmt(m: Optional[dict[str, float]]) -> str:
    return "" if m is None else f"{m['ratio']:.2f} ({m['p25']:.2f}-{m['p75']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-brevitas", action="store_true", help="leave Brevitas out")
    parser.add_argument("--brevitas-worker", nargs=3, metavar=("MODEL", "BATCH", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.brevitas_worker:
        name, batch_s, threads_s = args.brevitas_worker
        brevitas_worker(name, int(batch_s), int(threads_s), args.rounds, args.warmup)
        return

    brevitas_skip = "--no-brevitas" if args.no_brevitas else install_brevitas(BREVITAS_PROBE)
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    jobs = [(t, m, b) for t in args.threads for m in args.models for b in args.batches]
    for threads, model_name, batch in tqdm(jobs, desc="bench_sim"):
        torch.set_num_threads(threads)
        key = f"{model_name} b{batch} t{threads}"
        results[key] = measure(model_name, batch, args.rounds, args.warmup)
        if brevitas_skip is None:
            for kind, figure in brevitas_measure(model_name, batch, threads, args.rounds, args.warmup).items():
                results[key][kind]["brevitas"] = figure
    torch.set_num_threads(1)
    calls = per_call_costs()

    print(f"\nratio to float: median over {args.rounds} interleaved rounds (25th-75th percentile)")
    header = f"{'model batch threads':<22}" + "".join(f"{v:>20}" for v in COLUMNS)
    for kind in ("train", "eval"):
        print(f"\n{kind} step\n{header}")
        for key, res in results.items():
            per = res[kind]
            print(f"{key:<22}" + "".join(f"{_fmt(per.get(v)):>20}" for v in COLUMNS))
    if brevitas_skip is not None:
        print(f"\nBrevitas left out: {brevitas_skip}")
    print("\none quantizer call, (16, 16, 8, 8) float32 requiring grad, 1 thread:")
    print("  " + ", ".join(f"{k[:-3]} {v:.1f} us" for k, v in calls.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_sim",
        "rounds": args.rounds,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "results": results,
        "brevitas": "included" if brevitas_skip is None else f"left out: {brevitas_skip}",
        "per_call": calls,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
