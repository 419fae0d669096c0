"""Short end-to-end demo on bundled data (what ``make run`` runs).

Trains a small CNN on scikit-learn's digits, folds its batch norms, then compares float
accuracy with W8A8, W4A4 and W2A2 (weights per-channel symmetric, activations per-tensor
asymmetric): post-training quantization with min-max calibration, and a few epochs of
quantization-aware training with LSQ (learned step sizes). Prints a table; under a
minute on two cores.

Run: ``python -m experiments.demo [--float-epochs N] [--qat-epochs N]``.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import torch
from torch import nn

import quant
from experiments.digits import DigitsData, accuracy, load_digits_data, train
from experiments.models.digits_cnn import DigitsCNN
from quant import QuantSpec
from quant.sim.recipe import QuantizerConfig


@dataclass(frozen=True)
class SchemeResult:
    """Accuracy of one scheme, in [0, 1]."""

    name: str
    ptq: float
    qat: float


def recipe(weight_bits: int, act_bits: int, learn: str = "none") -> dict[str, dict[str, QuantizerConfig]]:
    """Every Conv/Linear: per-channel symmetric weights (2-bit weights are ternary) and
    per-tensor asymmetric unsigned inputs; ``learn="lsq"`` learns every step size."""
    weight = QuantSpec(bits=weight_bits, signed=True, symmetric=True, narrow=weight_bits == 2,
                       granularity="channel", axis=0)
    act = QuantSpec(bits=act_bits, signed=False, symmetric=False)
    act_learn = "lsq" if learn == "lsq" else "none"
    return {
        "*": {
            "weight": QuantizerConfig(weight, observer="minmax", learn=learn),
            "input": QuantizerConfig(act, observer="moving_average", learn=act_learn),
        }
    }


def calibrate(handle: quant.QuantHandle, model: nn.Module, data: DigitsData, batches: int = 8) -> None:
    """Run ``batches`` training batches through the model under ``handle.calibrate()``."""
    model.eval()
    with torch.no_grad(), handle.calibrate():
        for i in range(batches):
            model(data.x_train[i * 128 : (i + 1) * 128])


def evaluate_scheme(
    float_model: nn.Module, data: DigitsData, weight_bits: int, act_bits: int, qat_epochs: int
) -> SchemeResult:
    """PTQ accuracy, then accuracy after ``qat_epochs`` of LSQ fine-tuning from the float model."""
    ptq_model = copy.deepcopy(float_model)
    handle = quant.attach(ptq_model, recipe(weight_bits, act_bits))
    calibrate(handle, ptq_model, data)
    handle.freeze()
    ptq = accuracy(ptq_model, data.x_test, data.y_test)

    qat_model = copy.deepcopy(float_model)
    handle = quant.attach(qat_model, recipe(weight_bits, act_bits, learn="lsq"))
    calibrate(handle, qat_model, data)
    train(qat_model, data, epochs=qat_epochs, lr=1e-3, desc=f"W{weight_bits}A{act_bits} LSQ")
    qat = accuracy(qat_model, data.x_test, data.y_test)
    return SchemeResult(f"W{weight_bits}A{act_bits}", ptq, qat)


def main() -> None:
    parser = argparse.ArgumentParser(description="Digits demo: float vs W8A8/W4A4/W2A2 (PTQ and LSQ QAT)")
    parser.add_argument("--float-epochs", type=int, default=15)
    parser.add_argument("--qat-epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    data = load_digits_data(seed=args.seed)
    model = DigitsCNN()
    train(model, data, epochs=args.float_epochs, seed=args.seed, desc="float")
    model = quant.fold_bn(model.eval())
    float_acc = accuracy(model, data.x_test, data.y_test)

    rows = [evaluate_scheme(model, data, b, b, args.qat_epochs) for b in (8, 4, 2)]

    print(f"\nDigits ({len(data.y_train)} train / {len(data.y_test)} test), small CNN, BN folded")
    print(f"{'scheme':<8} {'PTQ min-max':>12} {'QAT LSQ':>9}")
    print(f"{'float':<8} {100 * float_acc:>11.2f}% {'':>9}")
    for r in rows:
        print(f"{r.name:<8} {100 * r.ptq:>11.2f}% {100 * r.qat:>8.2f}%")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
