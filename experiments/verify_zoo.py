"""The model x datapath verification table: every small model of ``experiments/models`` lowered on every
preset its natural scheme fits, verified (exact simulation vs torch reference vs C kernels), with fast
simulation against the datapath on the output.

Run: ``python -m experiments.verify_zoo [--samples N]``. Random weights and inputs (seeded); the digits
CNN sees digits-like inputs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import quant
from experiments.models.digits_cnn import DigitsCNN
from experiments.models.small import SMALL_MODELS
from quant.contract.datapath import PRESETS
from quant.sim.recipe import datapath_recipe

PRESET_NAMES = ["tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    models: dict[str, Any] = {name: (cls, getattr(cls, "example_input")) for name, cls in SMALL_MODELS.items()}
    models["digits"] = (DigitsCNN, lambda n: torch.rand(n, 1, 8, 8))
    print("| model | preset | ops | mismatches | fast!=datapath codes | max LSB | SQNR dB | top-1 fast/datapath |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (cls, make_input) in models.items():
        for preset in PRESET_NAMES:
            torch.manual_seed(0)
            dp = PRESETS[preset]
            model = quant.fold_bn(cls().eval())
            handle = quant.attach(model, datapath_recipe(dp))
            data = make_input(args.samples)
            with torch.no_grad(), handle.calibrate():
                model(data)
            program = quant.lower(model, handle, data[:1], datapath=dp)
            r = quant.verify(model, handle, program, data, progress=False)
            top1 = f"{100 * r.agreement()['fast_datapath']:.1f}%" if r.top1_samples else "-"
            print(f"| {name} | {preset} | {len(program.nodes)} | {r.mismatches} | {100 * r.fast_differing_fraction:.1f}% "
                  f"| {r.fast_max_lsb} | {r.sqnr_db:.1f} | {top1} |")  # fmt: skip


if __name__ == "__main__":
    main()
