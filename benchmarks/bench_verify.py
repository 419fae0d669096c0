"""Cost of the integer-datapath path: lowering, fast and exact simulation, the program on each backend, verify.

Two models, 1 thread, one process: the digits CNN of ``make run`` (trained for a few epochs, BN
folded, W8A8 on ``tflite_int8``) on its whole test split, and the MobileNetV2-style
``InvertedResidualNet`` of ``experiments/models/small.py`` (random weights) on 512 random
32x32 images. Each figure is the median of repeated runs (lowering once). Ratios are to the
fast-mode evaluation of the same inputs; the target of ``verify`` through the C backend is at
most 2x fast evaluation (verify runs exact simulation, the program on the torch reference and on
the C kernels, fast and float simulation for every batch, so it does more than that one pass).

Prints a table and writes ``benchmarks/results/verify.json``. Run: ``make bench`` or
``python -m benchmarks.bench_verify [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import quant
from experiments.digits import load_digits_data, train
from experiments.models.digits_cnn import DigitsCNN
from experiments.models.small import InvertedResidualNet
from quant.contract.datapath import Datapath
from quant.contract.spec import QuantSpec

RESULTS = Path(__file__).resolve().parent / "results" / "verify.json"


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def prepared(model: nn.Module, calib: torch.Tensor, dp: Datapath) -> tuple[nn.Module, quant.QuantHandle]:
    model = quant.fold_bn(model.eval())
    recipe = {"*": {"weight": QuantSpec(bits=8, granularity="channel", axis=0),
                    "input": QuantSpec(bits=8, symmetric=False)}}  # fmt: skip
    handle = quant.attach(model, recipe)
    with torch.no_grad(), handle.calibrate():
        model(calib)
    return model, handle


def measure(name: str, model: nn.Module, data: torch.Tensor, repeats: int) -> dict[str, Any]:
    dp = Datapath.preset("tflite_int8")
    model, handle = prepared(model, data[:256], dp)
    t0 = time.perf_counter()
    program = quant.lower(model, handle, data[:1], datapath=dp)
    lower_s = time.perf_counter() - t0

    def evaluate() -> None:
        with torch.no_grad():
            for start in range(0, len(data), 256):
                model(data[start : start + 256])

    fast_s = median_time(evaluate, repeats)
    handle.set_mode("exact", dp)
    exact_s = median_time(evaluate, repeats)
    handle.set_mode("fast")
    codes = program.quantize_input(data)
    torch_s = median_time(lambda: program.run_codes(codes, backend="torch"), repeats)
    c_s = median_time(lambda: program.run_codes(codes, backend="c"), repeats)
    verify_s = median_time(lambda: quant.verify(model, handle, program, data, batch_size=256, progress=False), repeats)
    report = quant.verify(model, handle, program, data, batch_size=256, progress=False)
    return {
        "model": name, "samples": len(data), "ops": len(program.nodes), "mismatches": report.mismatches,
        "lower_s": lower_s, "fast_eval_s": fast_s, "exact_eval_s": exact_s, "program_torch_s": torch_s,
        "program_c_s": c_s, "verify_s": verify_s,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    digits = load_digits_data()
    cnn = DigitsCNN()
    train(cnn, digits, epochs=3, progress=False)
    rows = [
        measure("digits CNN (test split)", cnn, digits.x_test, args.repeats),
        measure("MobileNetV2-style 32x32", InvertedResidualNet(), torch.randn(512, 3, 32, 32), args.repeats),
    ]
    print("1 thread, tflite_int8 W8A8; seconds, and x fast-mode evaluation")
    print(f"{'model':<26} {'n':>5} {'ops':>4} {'lower':>7} {'fast':>7} {'exact':>12} {'torch':>12} {'C':>12} "
          f"{'verify':>12} mismatches")  # fmt: skip
    for r in rows:
        f = r["fast_eval_s"]

        def cell(k: str) -> str:
            return f"{r[k]:6.3f} {r[k] / f:4.1f}x"

        print(f"{r['model']:<26} {r['samples']:>5} {r['ops']:>4} {r['lower_s']:7.3f} {f:7.3f} {cell('exact_eval_s'):>12} "
              f"{cell('program_torch_s'):>12} {cell('program_c_s'):>12} {cell('verify_s'):>12} {r['mismatches']}")  # fmt: skip
    write_results(args.out, rows)


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """``{"machine", "torch", "rows"}`` as JSON at ``path`` (the benchmarks' results files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
