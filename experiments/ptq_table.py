"""Post-training algorithms against round-to-nearest min-max PTQ at W4, W3 and W2 on bundled data.

    python -m experiments.ptq_table                      # the table; --json PATH writes it too
    python -m experiments.ptq_table --per-tensor         # per-tensor weights: equalization and bias correction
    python -m experiments.ptq_table --smooth             # narrow activations: SmoothQuant

Models: the digits CNN (8x8 images) and the MLP and keyword-spotting 1-D CNN on mnist1d sequences, briefly
trained, batch norms folded. Each is quantized with one glob rule (per-output-channel symmetric weights of
the given width, per-tensor asymmetric uint8 activations), calibrated on 512 training samples, then left at
round-to-nearest (RTN) or given the codes of :func:`quant.ptq.adaround` or :func:`quant.ptq.gptq`, or the bias
shifts of :func:`quant.ptq.bias_correction`, on the same samples; the test accuracy of each, next to the float
model's. Grouped (depthwise) convolutions stay at RTN. ``--per-tensor``: one weight scale per tensor, the setting
cross-layer equalization is for, with RTN, :func:`quant.ptq.equalize`, and equalization then bias correction.
``--smooth``: the mnist1d transformer with W8 weights and 8-, 6- and 4-bit activations, RTN against
:func:`quant.ptq.smooth` (and then bias correction). The recipe is :func:`experiments.layer_zoo.recipe`'s.
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
    "transformer": (load_mnist1d, "transformer"),
}
METHODS = ("rtn", "adaround", "gptq", "bias_correction")
#: The per-tensor-weight comparison of the rescaling algorithms (what they are for): method -> its steps.
RESCALING = {"rtn": (), "equalize": ("equalize",), "equalize+bias_correction": ("equalize", "bias_correction")}
#: The activation-width comparison of SmoothQuant (W8 per-channel weights, what it is for).
SMOOTHING = {"rtn": (), "smooth": ("smooth",), "smooth+bias_correction": ("smooth", "bias_correction")}


@dataclass(frozen=True)
class PTQRow:
    model: str
    data: str
    weight_bits: int
    float_accuracy: float
    accuracy: dict[str, float]
    seconds: dict[str, float]
    activation_bits: int = 8


def _accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def _quantized(model: nn.Module, x: torch.Tensor, bits: int, per_channel: bool = True,
               act_bits: int = 8) -> tuple[nn.Module, quant.QuantHandle]:  # fmt: skip
    from experiments.layer_zoo import recipe

    model = copy.deepcopy(model)
    rules = recipe(model, bits, act_bits)
    if not per_channel:
        rules["*"] = {"weight": QuantSpec(bits=bits, signed=True, symmetric=True),
                      "input": QuantSpec(bits=act_bits, signed=False, symmetric=False)}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = quant.attach(model, rules, example_input=x[:2])
    with torch.no_grad(), handle.calibrate():
        model(x)
    return model, handle


def _trained(name: str, epochs: int, progress: bool) -> tuple[nn.Module, Dataset]:
    load, arch = MODELS[name]
    data = load()
    torch.manual_seed(0)
    float_model = build_model(arch, tuple(data.x_train.shape[1:]), 10, 16)
    train(float_model, data.x_train, data.y_train, epochs=epochs, progress=progress, desc=f"train {name}")
    return quant.fold_bn(float_model.eval()), data


def run(models: Sequence[str], bits: Sequence[int], epochs: int, progress: bool, mode: str = "codes") -> list[PTQRow]:
    """``mode="codes"``: per-channel weights of each width in ``bits``, RTN and every code-choosing algorithm
    of :data:`METHODS`; ``"rescaling"``: per-tensor weights, the algorithms of :data:`RESCALING`;
    ``"smoothing"``: W8 per-channel weights and activations of each width in ``bits``, :data:`SMOOTHING`."""
    import quant.ptq as ptq

    by_mode: dict[str, dict[str, tuple[str, ...]]] = {
        "codes": {m: (() if m == "rtn" else (m,)) for m in METHODS}, "rescaling": RESCALING, "smoothing": SMOOTHING,
    }  # fmt: skip
    methods = by_mode[mode]
    rows = []
    for name in models:
        float_model, data = _trained(name, epochs, progress)
        x = data.x_train[:512]
        batches = [x[i : i + 128] for i in range(0, len(x), 128)]
        for b in tqdm(bits, desc=name, disable=not progress, leave=False):
            w_bits, a_bits = (8, b) if mode == "smoothing" else (b, 8)
            accuracy, seconds = {}, {}
            for method, steps in methods.items():
                model, handle = _quantized(float_model, x, w_bits, mode != "rescaling", a_bits)
                start = time.perf_counter()
                for step in steps:
                    getattr(ptq, step)(model, handle, batches, progress=False)
                seconds[method] = time.perf_counter() - start
                accuracy[method] = _accuracy(model, data)
            rows.append(PTQRow(name, data.name, w_bits, _accuracy(float_model, data), accuracy, seconds, a_bits))
    return rows


def table(rows: Sequence[PTQRow]) -> str:
    """The rows as a markdown table: the test accuracy of every method, and each algorithm's time in seconds."""
    methods = list(rows[0].accuracy) if rows else []
    timed = [m for m in methods if m != "rtn"]
    label = {"rtn": "RTN", "adaround": "AdaRound", "gptq": "GPTQ", "bias_correction": "bias corr.", "equalize": "CLE",
             "equalize+bias_correction": "CLE + bias corr.", "smooth": "SmoothQuant",
             "smooth+bias_correction": "SmoothQuant + bias corr."}  # fmt: skip
    head = ["model", "data", "weights", "float", *(label.get(m, m) for m in methods), *(f"{label.get(m, m)} s" for m in timed)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.model, r.data, f"W{r.weight_bits}A{r.activation_bits}", f"{r.float_accuracy:.3f}", *(f"{r.accuracy[m]:.3f}" for m in methods),
                 *(f"{r.seconds[m]:.1f}" for m in timed)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.ptq_table", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", choices=list(MODELS),
                   help="default: cnn, mlp and kws; the transformer with --smooth")
    p.add_argument("--bits", nargs="*", type=int, help="weight widths (default 4 3 2); with --smooth activation widths (8 6 4)")
    p.add_argument("--epochs", type=int, default=15)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--per-tensor", action="store_true",
                      help="per-tensor weights and the rescaling algorithms (equalization, bias correction)")
    kind.add_argument("--smooth", action="store_true", help="W8 weights, narrower activations, SmoothQuant")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    models = args.models or (["transformer"] if args.smooth else ["cnn", "mlp", "kws"])
    bits = args.bits or ([8, 6, 4] if args.smooth else [4, 3, 2])
    if any(b < 2 or b > 8 for b in bits):
        p.error(f"--bits {bits}: widths lie in 2..8")
    mode = "smoothing" if args.smooth else "rescaling" if args.per_tensor else "codes"
    rows = run(models, bits, args.epochs, args.progress, mode)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
