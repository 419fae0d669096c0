"""Mixed-precision weights chosen by sensitivity against uniform widths of the same size, on the digits CNN.

    python -m experiments.mixed_precision                       # the tables and the PNG
    python -m experiments.mixed_precision --epochs 2 --points 3 --no-progress --plot /tmp/mp.png   # quick

The zoo's digits CNN (``build_model("cnn", (1, 8, 8), 10, 16)``) is trained in float, its batch norms
folded. :func:`quant.mixed.sensitivity.sensitivity` measures every Conv/Linear at each candidate weight
width (per-output-channel symmetric, min-max, round to nearest) with the rest of the model float, on
``calibration`` training samples. For each budget of packed weight bytes, :func:`quant.mixed.allocation.allocate_bits`
chooses one width per layer minimising the summed sensitivity (``objective``), the layers' inputs at 8
bits (per-tensor asymmetric uint8); the recipe is attached to a copy of the float model, calibrated on the
same samples and its test accuracy measured. The budgets: the size of every uniform recipe (all layers at
W2, W3, W4, W8), and ``points`` more spread evenly between the smallest and the largest. Each uniform recipe
is measured the same way; the comparison row of a uniform width is the best allocation whose size is at
most the uniform one's. Sizes and BOPs are :func:`quant.mixed.cost.cost` of the attached model.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

import quant
from experiments.data.digits import load_digits
from experiments.models.registry import build_model
from experiments.training import accuracy, train
from quant.contract.spec import QuantSpec
from quant.mixed.allocation import OBJECTIVES, allocate_bits, allocation_cost
from quant.mixed.cost import cost
from quant.mixed.sensitivity import Sensitivity, sensitivity
from quant.sim.recipe import Recipe

__all__ = ["MixedPrecisionSettings", "Point", "MixedPrecisionResult", "run", "table", "comparison", "plot", "main"]

#: The 8-bit activations every evaluated recipe gives the layers' inputs.
ACT8 = QuantSpec(bits=8, signed=False, symmetric=False)
DEFAULT_PLOT = Path("docs/results/mixed_precision_accuracy_vs_size.png")


def weight_spec(bits: int) -> QuantSpec:
    """Per-output-channel symmetric signed weights of ``bits`` bits."""
    return QuantSpec(bits=bits, signed=True, symmetric=True, granularity="channel", axis=0)


@dataclass(frozen=True)
class MixedPrecisionSettings:
    """What one run does (module docstring); ``__post_init__`` names the field at fault."""

    candidates: tuple[int, ...] = (2, 3, 4, 8)
    epochs: int = 15
    width: int = 16
    calibration: int = 512
    batch_size: int = 128
    hessian_samples: int = 32
    objective: str = "sqnr"
    points: int = 8
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.candidates or any(isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8 for b in self.candidates):
            raise ValueError(f"MixedPrecisionSettings.candidates={self.candidates!r}: give weight widths in 2..8")
        for name in ("epochs", "width", "calibration", "batch_size", "hessian_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"MixedPrecisionSettings.{name}={getattr(self, name)!r} must be >= 1")
        if self.points < 0:
            raise ValueError(f"MixedPrecisionSettings.points={self.points!r} must be >= 0")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"MixedPrecisionSettings.objective={self.objective!r} is not one of "
                             f"{', '.join(map(repr, OBJECTIVES))}")  # fmt: skip
        object.__setattr__(self, "candidates", tuple(sorted(set(self.candidates))))


@dataclass(frozen=True)
class Point:
    """One evaluated recipe: uniform (``kind="uniform"``) or allocated under ``budget`` bytes (``"mixed"``)."""

    kind: str
    budget: Optional[int]
    widths: dict[str, int]
    weight_bytes: int
    bops: int
    predicted_sqnr_db: float
    accuracy: float

    @property
    def label(self) -> str:
        bits = set(self.widths.values())
        return f"W{bits.pop()}" if len(bits) == 1 else "/".join(str(b) for b in self.widths.values())


@dataclass(frozen=True)
class MixedPrecisionResult:
    objective: str
    float_accuracy: float
    sensitivity: Sensitivity
    uniform: tuple[Point, ...]
    mixed: tuple[Point, ...]


def _evaluate(float_model: nn.Module, recipe: Recipe, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
    """``(test accuracy, packed weight bytes, BOPs)`` of ``recipe`` on a copy of the float model, calibrated."""
    model = copy.deepcopy(float_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, recipe)
    with torch.no_grad(), handle.calibrate():
        model(calib)
    c = cost(model, handle, x[:1])
    return accuracy(model, x, y), c.weight_bytes, c.bops


def _predicted(sens: Sensitivity, widths: dict[str, int]) -> float:
    total = sum(layer.noise(widths[layer.name]) for layer in sens.layers)
    return math.inf if total <= 0 else -10.0 * math.log10(total)


def run(settings: MixedPrecisionSettings) -> MixedPrecisionResult:
    """Train, measure the sensitivity, allocate over the budgets and evaluate (module docstring)."""
    data = load_digits(seed=settings.seed)
    torch.manual_seed(settings.seed)
    model = build_model("cnn", (1, 8, 8), data.num_classes, settings.width)
    train(model, data.x_train, data.y_train, epochs=settings.epochs, seed=settings.seed, progress=settings.progress,
          desc="float")  # fmt: skip
    model = quant.fold_bn(model.eval())
    calib = data.x_train[: settings.calibration]
    batches = [calib[i : i + settings.batch_size] for i in range(0, len(calib), settings.batch_size)]

    def factory(m: nn.Module, bits_by_layer: dict[str, int]) -> quant.QuantHandle:
        return quant.attach(m, {name: {"weight": weight_spec(b)} for name, b in bits_by_layer.items()})

    sens = sensitivity(model, factory, batches, settings.candidates, hessian_samples=settings.hessian_samples,
                       seed=settings.seed, progress=settings.progress)  # fmt: skip
    base = {"input": ACT8}
    names = [layer.name for layer in sens.layers]
    uniform_sizes = {b: allocation_cost(sens, {n: b for n in names}, input_bits=8)[1] for b in settings.candidates}
    lo, hi = min(uniform_sizes.values()), max(uniform_sizes.values())
    spread = [round(lo + (hi - lo) * (i + 1) / (settings.points + 1)) for i in range(settings.points)]
    budgets = sorted(set(uniform_sizes.values()) | set(spread))

    uniform: list[Point] = []
    mixed: list[Point] = []
    jobs = [("uniform", b) for b in settings.candidates] + [("mixed", b) for b in budgets]
    for kind, value in tqdm(jobs, desc="evaluate", disable=not settings.progress, leave=False):
        if kind == "uniform":
            widths = {n: value for n in names}
            recipe = Recipe.from_dict({n: {"weight": weight_spec(value), **base} for n in names})
            budget = None
        else:
            alloc = allocate_bits(sens, budget=value, metric="size", objective=settings.objective,
                                  weight=weight_spec(8), base=base)  # fmt: skip
            widths, recipe, budget = dict(alloc.widths), alloc.recipe, value
        acc, size, bops = _evaluate(model, recipe, calib, data.x_test, data.y_test)
        point = Point(kind, budget, widths, size, bops, _predicted(sens, widths), acc)
        (uniform if kind == "uniform" else mixed).append(point)
    return MixedPrecisionResult(settings.objective, accuracy(model, data.x_test, data.y_test), sens, tuple(uniform), tuple(mixed))


def best_within(result: MixedPrecisionResult, size: int) -> Optional[Point]:
    """The most accurate allocation of at most ``size`` bytes (the smaller one on a tie)."""
    fits = [p for p in result.mixed if p.weight_bytes <= size]
    return max(fits, key=lambda p: (p.accuracy, -p.weight_bytes)) if fits else None


def table(result: MixedPrecisionResult) -> str:
    """Every evaluated recipe as a Markdown table, by size."""
    names = [layer.name for layer in result.sensitivity.layers]
    rows = [f"| recipe | budget (bytes) | widths ({', '.join(names)}) | weight bytes | BOPs | predicted SQNR dB | test accuracy |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(result.uniform + result.mixed, key=lambda p: (p.weight_bytes, p.kind)):
        budget = "" if p.budget is None else str(p.budget)
        name = p.label if p.kind == "uniform" else "mixed"
        rows.append(f"| {name} | {budget} | {'/'.join(str(p.widths[n]) for n in names)} | {p.weight_bytes} | {p.bops} | "
                    f"{p.predicted_sqnr_db:.1f} | {p.accuracy:.3f} |")  # fmt: skip
    rows.append(f"| float | | | | | | {result.float_accuracy:.3f} |")
    return "\n".join(rows)


def comparison(result: MixedPrecisionResult) -> str:
    """Per uniform width: its accuracy and that of the best allocation no larger."""
    rows = ["| uniform | bytes | accuracy | best mixed <= its size | bytes | accuracy | mixed - uniform |", "|---|---|---|---|---|---|---|"]
    for u in result.uniform:
        m = best_within(result, u.weight_bytes)
        if m is None:
            rows.append(f"| {u.label} | {u.weight_bytes} | {u.accuracy:.3f} | none | | | |")
            continue
        rows.append(f"| {u.label} | {u.weight_bytes} | {u.accuracy:.3f} | {m.label} | {m.weight_bytes} | {m.accuracy:.3f} | "
                    f"{m.accuracy - u.accuracy:+.3f} |")  # fmt: skip
    return "\n".join(rows)


def plot(result: MixedPrecisionResult, path: Path) -> Path:
    """Accuracy against packed weight bytes: the allocations' curve, the uniform recipes, the float model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    mixed = sorted(result.mixed, key=lambda p: p.weight_bytes)
    ax.plot([p.weight_bytes for p in mixed], [100 * p.accuracy for p in mixed], marker="o", ms=4, color="tab:red",
            label=f"allocated (objective: {result.objective})")  # fmt: skip
    ax.scatter([p.weight_bytes for p in result.uniform], [100 * p.accuracy for p in result.uniform], marker="s",
               color="tab:blue", zorder=3, label="uniform")  # fmt: skip
    for p in result.uniform:
        ax.annotate(p.label, (p.weight_bytes, 100 * p.accuracy), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.axhline(100 * result.float_accuracy, color="gray", lw=0.8, ls="--", label="float")
    ax.set_xlabel("packed weight bytes")
    ax.set_ylabel("test accuracy, % (8-bit inputs)")
    ax.set_title("digits CNN: mixed-precision weights vs uniform", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_tensorboard(result: MixedPrecisionResult, image: Path, log_dir: Path) -> None:
    """The plot as an image and every point's accuracy by its packed weight bytes, as TensorBoard scalars."""
    import numpy as np
    from matplotlib import image as mpimg
    from torch.utils.tensorboard import SummaryWriter

    log = SummaryWriter(log_dir=str(log_dir))
    log.add_image("mixed_precision/accuracy_vs_size", np.asarray(mpimg.imread(image))[..., :3], dataformats="HWC")
    for kind, points in (("mixed", result.mixed), ("uniform", result.uniform)):
        for pt in sorted(points, key=lambda q: q.weight_bytes):
            log.add_scalar(f"mixed_precision/{kind}_accuracy", pt.accuracy, global_step=pt.weight_bytes)
    log.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.mixed_precision", description=__doc__.split("\n")[0])
    p.add_argument("--candidates", nargs="+", type=int, default=[2, 3, 4, 8], help="weight widths to choose from")
    p.add_argument("--epochs", type=int, default=15, help="float training epochs")
    p.add_argument("--calibration", type=int, default=512, help="training samples for calibration and sensitivity")
    p.add_argument("--hessian-samples", type=int, default=32, help="Hutchinson vectors per layer")
    p.add_argument("--objective", choices=OBJECTIVES, default="sqnr")
    p.add_argument("--points", type=int, default=8, help="budgets besides the uniform sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"the PNG (default {DEFAULT_PLOT})")
    p.add_argument("--json", type=Path, help="also write every point as JSON here")
    p.add_argument("--tensorboard", type=Path, default=Path("outputs/mixed_precision/tensorboard"),
                   help="TensorBoard log directory (the plot and the points)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    try:
        settings = MixedPrecisionSettings(tuple(args.candidates), args.epochs, 16, args.calibration, 128,
                                          args.hessian_samples, args.objective, args.points, args.seed, args.progress)  # fmt: skip
    except ValueError as err:
        p.error(str(err))
    result = run(settings)
    print(result.sensitivity.table(), end="\n\n")
    print(table(result), end="\n\n")
    print(comparison(result))
    image = plot(result, args.plot)
    print(f"\nplot: {image}")
    if not args.no_tensorboard:
        log_tensorboard(result, image, args.tensorboard)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        points = [{**asdict(pt), "label": pt.label} for pt in result.uniform + result.mixed]
        args.json.write_text(json.dumps({"float_accuracy": result.float_accuracy, "points": points}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
