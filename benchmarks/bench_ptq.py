"""Cost of the post-training algorithms (``quant.ptq``): seconds and per-layer output error vs round-to-nearest.

Two workloads, on ``--threads`` threads (default 2, ``torch.set_num_threads``):

* **digits CNN**: the zoo's digits CNN (``build_model("cnn", (1, 8, 8), 10, 16)``) trained for
  ``--digits-epochs`` epochs, batch norms folded, attached with W4 per-channel symmetric weights and
  8-bit asymmetric activations (every Conv/Linear input), calibrated on 512 training images; AdaRound
  (``--adaround-iterations`` Adam steps per layer) and GPTQ, each on those 512 images in 4 batches.
* **MLP stack**: a transformer-style MLP stack of ``--blocks`` pre-LayerNorm residual blocks
  ``x + fc2(GELU(fc1(LayerNorm(x))))`` with ``fc1``, ``fc2`` both ``Linear(--width, --width)``: by default
  3 blocks, 6 Linear layers of 384 x 384 (seeded default init). Weight-only, W4 per-group weights
  (symmetric, groups of ``--group-size`` = 128 along the input dimension), GPTQ on ``--tokens`` = 512
  calibration tokens (sequences of 64 tokens, two per batch) of 384 features mixed by one fixed random
  matrix (an anisotropic Hessian). Beside it, where Brevitas installs against this torch, Brevitas's GPTQ
  (``brevitas.graph.gptq.gptq_mode``, ``QuantLinear`` with
  ``brevitas_examples.common.generative.quantizers.IntWeightSymmetricGroupQuant``, 4 bits, groups of 128,
  float activations) on the same weights and tokens.

Brevitas is installed by :func:`install_brevitas` (``pip install --no-deps --target build/peers/brevitas
brevitas dependencies==2.0.1 unfoldNd``, so torch stays as it is) and runs in its own process (``--brevitas-worker``,
one per round), so importing it cannot change this process; when pip or the import fails it is skipped with a
message saying why.

Each round runs every variant once, in turn (a fresh copy of the calibrated model each time; attach and
calibration are not timed); each figure is the median over ``--rounds`` rounds. The quality figures are per
layer ``rtn_error / error`` (:attr:`quant.ptq.LayerResult.improvement`: the layer's output mean squared error
against the float weight's output on the layer's inputs in the quantized model, with round-to-nearest codes
over with the algorithm's; Brevitas's computed the same way from its weights), given as min / geometric mean /
max over the layers, and the model-output MSE against float (RTN and the algorithm's). Results are printed as
a Markdown table and written to ``benchmarks/results/ptq.json``.

Run: ``make bench`` or ``python -m benchmarks.bench_ptq [--rounds N] [--threads N] [--adaround-iterations N]
[--no-brevitas]``; a quick run: ``--rounds 1 --adaround-iterations 100 --digits-epochs 2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import quant
from experiments.data.digits import load_digits
from experiments.models.registry import build_model
from experiments.training import train
from quant import QuantSpec
from quant.ptq import PTQReport, adaround, gptq
from benchmarks.peers import BREVITAS_DIR, brevitas_env, install_brevitas, last_line

ROOT = Path(__file__).resolve().parent.parent
#: What the Brevitas worker imports.
BREVITAS_PROBE = "import brevitas.nn, brevitas.graph.gptq, brevitas_examples.common.generative.quantizers"
RESULTS = Path(__file__).resolve().parent / "results" / "ptq.json"
W4_CHANNEL = QuantSpec(bits=4, signed=True, symmetric=True, granularity="channel", axis=0)
A8 = QuantSpec(bits=8, signed=False, symmetric=False)
SEQUENCE = 64  # tokens per calibration sequence of the MLP stack
SEQUENCES_PER_BATCH = 2


def group_spec(group_size: int) -> QuantSpec:
    """W4 symmetric signed weights, one scale per ``group_size`` consecutive inputs of each output row."""
    return QuantSpec(bits=4, signed=True, symmetric=True, granularity="group", axis=1, group_size=group_size)


# ----------------------------------------------------------------------------- the MLP stack


class MLPBlock(nn.Module):
    """``x + fc2(GELU(fc1(LayerNorm(x))))``, ``fc1`` and ``fc2`` made by ``linear(width, width)``."""

    def __init__(self, width: int, linear: Callable[[int, int], nn.Module]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = linear(width, width), linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return out


def mlp_stack(width: int, blocks: int, linear: Callable[[int, int], nn.Module] = nn.Linear) -> nn.Module:
    """The stack in eval mode with the float weights of seed 0 (the same whatever ``linear`` makes)."""
    torch.manual_seed(0)
    reference = nn.Sequential(*[MLPBlock(width, nn.Linear) for _ in range(blocks)])
    model = nn.Sequential(*[MLPBlock(width, linear) for _ in range(blocks)])
    model.load_state_dict(reference.state_dict())
    return model.eval()


def mlp_tokens(width: int, tokens: int) -> list[torch.Tensor]:
    """``tokens`` calibration tokens as batches ``(2, 64, width)`` (the last one shorter if need be): seeded
    Gaussian features mixed by one fixed random matrix."""
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(width, width, generator=g) / math.sqrt(width)
    x = (torch.randn(tokens // SEQUENCE, SEQUENCE, width, generator=g) @ mix).contiguous()
    return list(torch.split(x, SEQUENCES_PER_BATCH))


def output_mse(model: nn.Module, batches: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> float:
    """Mean squared error of the model's outputs against ``targets`` (float64 sums)."""
    with torch.no_grad():
        total = sum(float((model(x).double() - y.double()).pow(2).sum()) for x, y in zip(batches, targets))
    return total / sum(y.numel() for y in targets)


# ----------------------------------------------------------------------------- our variants


def summary(report: PTQReport, seconds: float, rtn_mse: float, mse: float) -> dict[str, Any]:
    """One run's figures: seconds, the per-layer improvements and the model-output MSEs."""
    ratios = [r.improvement for r in report.layers]
    return {
        "seconds": seconds,
        "layers": [{"name": r.name, "rtn_error": r.rtn_error, "error": r.error, "improvement": r.improvement,
                    "changed_codes": r.changed_codes, "codes": r.codes} for r in report.layers],  # fmt: skip
        "improvement_min": min(ratios),
        "improvement_geomean": math.exp(statistics.fmean(math.log(r) for r in ratios)),
        "improvement_max": max(ratios),
        "rtn_output_mse": rtn_mse,
        "output_mse": mse,
    }


class Digits:
    """The trained digits CNN, its calibration batches and test set; :meth:`run` times one algorithm on a
    fresh calibrated copy."""

    def __init__(self, epochs: int) -> None:
        data = load_digits()
        torch.manual_seed(0)
        model = build_model("cnn", (1, 8, 8), 10, 16)
        train(model, data.x_train, data.y_train, epochs=epochs, progress=False)
        self.model = quant.fold_bn(model.eval())
        x = data.x_train[:512]
        self.batches = [x[i : i + 128] for i in range(0, len(x), 128)]
        self.x_test, self.y_test = data.x_test, data.y_test
        with torch.no_grad():
            self.targets = [self.model(b) for b in self.batches]

    def calibrated(self) -> tuple[nn.Module, quant.QuantHandle]:
        model = copy.deepcopy(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = quant.attach(model, {"*": {"weight": W4_CHANNEL, "input": A8}})
        with torch.no_grad(), handle.calibrate():
            for b in self.batches:
                model(b)
        return model, handle

    def accuracy(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(self.x_test).argmax(1) == self.y_test).float().mean())

    def run(self, algorithm: str, iterations: int) -> dict[str, Any]:
        model, handle = self.calibrated()
        rtn_mse, rtn_accuracy = output_mse(model, self.batches, self.targets), self.accuracy(model)
        t0 = time.perf_counter()
        if algorithm == "adaround":
            report = adaround(model, handle, self.batches, iterations=iterations, progress=False)
        else:
            report = gptq(model, handle, self.batches, progress=False)
        seconds = time.perf_counter() - t0
        out = summary(report, seconds, rtn_mse, output_mse(model, self.batches, self.targets))
        out.update(float_accuracy=self.accuracy(self.model), rtn_accuracy=rtn_accuracy, accuracy=self.accuracy(model))
        return out


def run_gptq_mlp(width: int, blocks: int, group_size: int, tokens: int) -> dict[str, Any]:
    """Our GPTQ on the MLP stack, weight-only W4 per-group (attach and calibration not timed)."""
    model = mlp_stack(width, blocks)
    batches = mlp_tokens(width, tokens)
    with torch.no_grad():
        targets = [model(x) for x in batches]
    handle = quant.attach(model, {nn.Linear: {"weight": group_spec(group_size)}})
    with torch.no_grad(), handle.calibrate():
        for x in batches:
            model(x)
    rtn_mse = output_mse(model, batches, targets)
    t0 = time.perf_counter()
    report = gptq(model, handle, batches, progress=False)
    seconds = time.perf_counter() - t0
    return summary(report, seconds, rtn_mse, output_mse(model, batches, targets))


# ----------------------------------------------------------------------------- Brevitas


def brevitas_round(args: argparse.Namespace) -> dict[str, Any]:
    """One timed run of Brevitas's GPTQ in a fresh process (:func:`brevitas_worker`)."""
    cmd = [sys.executable, "-W", "ignore", "-m", "benchmarks.bench_ptq", "--brevitas-worker",
           "--threads", str(args.threads), "--width", str(args.width), "--blocks", str(args.blocks),
           "--group-size", str(args.group_size), "--tokens", str(args.tokens)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=brevitas_env(args.brevitas_dir))
    if done.returncode != 0:
        raise RuntimeError(f"the Brevitas worker failed: {last_line(done.stderr)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def brevitas_worker(width: int, blocks: int, group_size: int, tokens: int) -> dict[str, Any]:
    """Brevitas's GPTQ on the MLP stack (its ``QuantLinear`` with 4-bit symmetric group scales, float
    activations), timed; the per-layer errors measured as :func:`quant.ptq.gptq` reports ours. Brevitas
    rewrites the float weights and recomputes its (narrow-range, max-abs) group scales from them, so its
    ``changed_codes`` counts the dequantized weights that differ from round-to-nearest's."""
    import brevitas.nn as qnn
    from brevitas.graph.gptq import gptq_mode
    from brevitas_examples.common.generative.quantizers import IntWeightSymmetricGroupQuant

    def linear(i: int, o: int) -> nn.Module:
        layer: nn.Module = qnn.QuantLinear(i, o, bias=True, weight_quant=IntWeightSymmetricGroupQuant,
                                           weight_bit_width=4, weight_group_size=group_size)  # fmt: skip
        return layer

    reference = mlp_stack(width, blocks)
    model = mlp_stack(width, blocks, linear)
    batches = mlp_tokens(width, tokens)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, qnn.QuantLinear)]
    with torch.no_grad():
        targets = [reference(x) for x in batches]
        float_w = {n: m.weight.detach().clone() for n, m in layers}
        rtn_w = {n: m.quant_weight().value.detach().clone() for n, m in layers}
        rtn_mse = output_mse(model, batches, targets)
        t0 = time.perf_counter()
        with gptq_mode(model, use_quant_activations=False) as g:
            for _ in range(g.num_layers):
                for x in batches:
                    g.model(x)
                g.update()
        seconds = time.perf_counter() - t0
        chosen_w = {n: m.quant_weight().value.detach().clone() for n, m in layers}
        inputs: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
        hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: inputs[n].append(a[0].detach())) for n, m in layers]
        mse = output_mse(model, batches, targets)  # and the layers' inputs in the quantized model
        for h in hooks:
            h.remove()
        report = PTQReport("brevitas gptq")
        for n, m in layers:
            outs = [F.linear(x, float_w[n], m.bias) for x in inputs[n]]

            def error(w: torch.Tensor) -> float:
                d = [(F.linear(x, w, m.bias).double() - y.double()) for x, y in zip(inputs[n], outs)]
                return sum(float(v.pow(2).sum()) for v in d) / sum(v.numel() for v in d)

            changed = int((chosen_w[n] != rtn_w[n]).sum())
            report.layers.append(quant.ptq.LayerResult(n, error(rtn_w[n]), error(chosen_w[n]), changed, rtn_w[n].numel()))
    return summary(report, seconds, rtn_mse, mse)


# ----------------------------------------------------------------------------- the table


def _row(workload: str, algorithm: str, threads: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median seconds over the runs and the first run's quality figures (deterministic: every run's)."""
    row = {"workload": workload, "algorithm": algorithm, "threads": threads,
           "seconds": statistics.median(r["seconds"] for r in runs), "all_seconds": [r["seconds"] for r in runs]}  # fmt: skip
    row.update({k: v for k, v in runs[0].items() if k != "seconds"})
    return row


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| workload | algorithm | threads | seconds | per-layer improvement over RTN, min / geomean / max | "
             "output MSE, RTN -> algorithm |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['workload']} | {r['algorithm']} | {r['threads']} | {r['seconds']:.2f} | "
                     f"{r['improvement_min']:.2f} / {r['improvement_geomean']:.2f} / {r['improvement_max']:.2f} | "
                     f"{r['rtn_output_mse']:.3g} -> {r['output_mse']:.3g} |")  # fmt: skip
    lines.append("\nper-layer improvement over RTN (rtn_error / error):")
    for r in rows:
        per = ", ".join(f"{layer['name']} {layer['improvement']:.2f}" for layer in r["layers"])
        lines.append(f"- {r['workload']}, {r['algorithm']}: {per}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adaround-iterations", type=int, default=1000, help="Adam steps per layer (its default)")
    parser.add_argument("--digits-epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--blocks", type=int, default=3, help="residual MLP blocks (2 Linear layers each)")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=512, help="calibration tokens, a multiple of 64")
    parser.add_argument("--no-digits", action="store_true", help="leave out the digits CNN")
    parser.add_argument("--no-brevitas", action="store_true", help="leave Brevitas out (no install)")
    parser.add_argument("--brevitas-dir", type=Path, default=BREVITAS_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--brevitas-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.tokens < SEQUENCE or args.tokens % SEQUENCE:
        parser.error(f"--tokens={args.tokens} must be a positive multiple of {SEQUENCE}")
    torch.set_num_threads(args.threads)
    if args.brevitas_worker:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print(json.dumps(brevitas_worker(args.width, args.blocks, args.group_size, args.tokens)))
        return

    brevitas_skip = "--no-brevitas" if args.no_brevitas else install_brevitas(BREVITAS_PROBE, args.brevitas_dir)
    if brevitas_skip is not None:
        print(f"Brevitas skipped: {brevitas_skip}")
    mlp = f"MLP stack {args.blocks}x(fc1 {args.width}x{args.width}, fc2 {args.width}x{args.width}), {args.tokens} tokens"
    variants: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {}
    if not args.no_digits:
        digits = Digits(args.digits_epochs)
        variants[("digits CNN W4 per-channel A8", f"adaround ({args.adaround_iterations} it/layer)")] = (
            lambda: digits.run("adaround", args.adaround_iterations))  # fmt: skip
        variants[("digits CNN W4 per-channel A8", "gptq")] = lambda: digits.run("gptq", 0)
    variants[(f"{mlp}, W4 group {args.group_size} weight-only", "gptq")] = (
        lambda: run_gptq_mlp(args.width, args.blocks, args.group_size, args.tokens))  # fmt: skip
    if brevitas_skip is None:
        variants[(f"{mlp}, W4 group {args.group_size} weight-only", "brevitas gptq")] = lambda: brevitas_round(args)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in variants}
    for _ in range(args.rounds):  # interleaved: every variant sees the same machine state
        for key, fn in variants.items():
            runs[key].append(fn())
    rows = [_row(w, a, args.threads, r) for (w, a), r in runs.items()]
    print(f"\nmedian of {args.rounds} interleaved round(s), {args.threads} thread(s), torch {torch.__version__}")
    print(markdown(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_ptq",
        "rounds": args.rounds,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "mlp_stack": {"blocks": args.blocks, "width": args.width, "linear_layers": 2 * args.blocks,
                      "group_size": args.group_size, "tokens": args.tokens, "sequence": SEQUENCE},  # fmt: skip
        "brevitas": "ran" if brevitas_skip is None else f"skipped: {brevitas_skip}",
        "results": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
