"""Speed of the exported C against the in-process C backend on the same program, in GMAC/s.

Two programs (``tflite_int8`` W8A8): the digits CNN of ``make run`` (trained for a few epochs, BN
folded) on its test split, and the MobileNetV2-style ``InvertedResidualNet`` (random weights) on 256
random 32x32 images. Each is exported with ``kernels.export_c`` twice: one sample per call and
``--batch`` samples per call, and built with ``cc -O2``; a small timing program (written here, not
part of the export) runs the exported test vectors. The in-process figure is
``program.run_codes(codes, backend="c")`` on the whole set at once (its best case: one call per
op). Rounds are interleaved; each figure is the median. Target: the exported C at no less than
0.8x the in-process GMAC/s.

Prints a table and writes ``benchmarks/results/export.json``. Run: ``make bench`` or
``python -m benchmarks.bench_export [--repeats N]``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import kernels
import quant
from benchmarks.bench_verify import prepared, write_results
from experiments.digits import load_digits_data, train
from experiments.models.digits_cnn import DigitsCNN
from experiments.models.small import InvertedResidualNet
from quant.contract.datapath import Datapath
from quant.ir.program import IntegerProgram

RESULTS = Path(__file__).resolve().parent / "results" / "export.json"

TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include "model.h"
#include "model_vectors.h"

static unsigned char scratch_raw[MODEL_SCRATCH_BYTES + 64];
static %(out_type)s out[MODEL_OUT0_COUNT];

int main(void)
{
    unsigned char *scratch = scratch_raw + (64 - (size_t)((uintptr_t)scratch_raw %% 64)) %% 64;
    struct timespec t0, t1;
    unsigned long r;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (r = 0; r < MODEL_RUNS; ++r) {
        if (model_run(model__vector_in0[r], out, scratch) != 0) {
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return 0;
}
"""


def macs(program: IntegerProgram, samples: int) -> int:
    """Multiply-accumulates of conv2d and linear nodes for ``samples`` samples."""
    total = 0
    for node in program.nodes:
        out = math.prod(d for d in program.tensors[node.output].shape if d is not None)
        if node.op == "conv2d":
            total += out * math.prod(node.attrs.w_shape[1:])
        elif node.op == "linear":
            total += out * node.attrs.w_shape[1]
    return total * samples


def build_timer(program: IntegerProgram, codes: Any, batch: int, where: Path) -> Path:
    kernels.export_c(program, where, codes, batch=batch, quiet=True)
    info = program.tensors[program.outputs[0]]
    (where / "timer.c").write_text(TIMER % {"out_type": "int8_t" if info.signed else "uint8_t"})
    sources = (where / "Makefile").read_text().split("SOURCES = ", 1)[1].split("\n\n", 1)[0]
    files = [s.strip(" \\\t") for s in sources.split("\n") if s.strip(" \\\t")]
    exe = where / "timer"
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", "-Iqk/include", "-o", str(exe), *files, "timer.c"],
                   cwd=where, check=True)  # fmt: skip
    return exe


def measure(name: str, program: IntegerProgram, data: torch.Tensor, batch: int, repeats: int) -> dict[str, Any]:
    codes = program.quantize_input(data)
    n = len(codes)
    work = macs(program, n)
    with tempfile.TemporaryDirectory() as tmp:
        exes = {b: build_timer(program, codes, b, Path(tmp) / f"b{b}") for b in (1, batch)}
        times: dict[str, list[float]] = {"in_process": [], "export_1": [], f"export_{batch}": []}
        program.run_codes(codes, backend="c")
        for _ in range(repeats):  # interleaved rounds
            t0 = time.perf_counter()
            program.run_codes(codes, backend="c")
            times["in_process"].append(time.perf_counter() - t0)
            for b, exe in exes.items():
                out = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
                times[f"export_{b}"].append(float(out.stdout))
    med = {k: statistics.median(v) for k, v in times.items()}
    gmacs = {k: work / v / 1e9 for k, v in med.items()}
    return {"model": name, "samples": n, "gmac": work / 1e9, "seconds": med, "gmac_per_s": gmacs,
            "ratio_export_1": gmacs["export_1"] / gmacs["in_process"],
            f"ratio_export_{batch}": gmacs[f"export_{batch}"] / gmacs["in_process"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dp = Datapath.preset("tflite_int8")
    digits = load_digits_data()
    cnn = DigitsCNN()
    train(cnn, digits, epochs=3, progress=False)
    x_digits = digits.x_test[: len(digits.x_test) // args.batch * args.batch]
    x_mobile = torch.randn(256, 3, 32, 32)
    rows = []
    models: list[tuple[str, nn.Module, torch.Tensor]] = [("digits CNN (test split)", cnn, x_digits),
                                                         ("MobileNetV2-style 32x32", InvertedResidualNet(), x_mobile)]
    for name, float_model, data in models:
        model, handle = prepared(float_model, data[:256], dp)
        program = quant.lower(model, handle, data[:1], datapath=dp)
        rows.append(measure(name, program, data, args.batch, args.repeats))
    b = args.batch
    print(f"1 thread, tflite_int8 W8A8, cc -O2; GMAC/s, and x the in-process C backend (whole set per call)")
    print(f"{'model':<26} {'n':>5} {'GMAC':>7} {'in-process':>10} {'export b=1':>16} {f'export b={b}':>16}")
    for r in rows:
        g = r["gmac_per_s"]
        print(f"{r['model']:<26} {r['samples']:>5} {r['gmac']:7.3f} {g['in_process']:10.2f} "
              f"{g['export_1']:9.2f} {r['ratio_export_1']:5.2f}x {g[f'export_{b}']:9.2f} {r[f'ratio_export_{b}']:5.2f}x")  # fmt: skip
    write_results(args.out, rows)


if __name__ == "__main__":
    main()
