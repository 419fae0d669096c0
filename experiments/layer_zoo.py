"""The layers beyond Conv/Linear at W8A8 and W4A8: each zoo model's logits against its float self (SQNR).

    python -m experiments.layer_zoo                      # the table; --json PATH writes it too

Models (:mod:`experiments.models.sequence`, bundled data, briefly trained so the logits mean something):
the LSTM, the transformer encoder (2 layers, multi-head attention, LayerNorm, GELU MLP) and a tiny BERT
built from ``transformers``' classes on mnist1d sequences, the U-Net-style model (``ConvTranspose2d`` up-sampling) on the 8x8 digits. Each is quantized
with one glob rule (per-channel symmetric weights, per-tensor asymmetric activations, which also reach
every attention matmul operand and the recurrent hidden state), calibrated on 256 training samples, and
compared with the float model on the test split: SQNR of the logits, top-1 agreement, and the modules
``attach`` reported as left float.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import quant
from experiments.data.dataset import Dataset
from experiments.data.digits import load_digits
from experiments.data.mnist1d import load_mnist1d
from experiments.models.registry import build_model
from experiments.models.sequence import TinyBert
from experiments.training import train
from quant import QuantSpec

__all__ = ["ZooRow", "SCHEMES", "quantize_and_compare", "main"]

#: scheme name -> (weight bits, activation bits)
SCHEMES: dict[str, tuple[int, int]] = {"W8A8": (8, 8), "W4A8": (4, 8)}
#: model -> dataset it is trained and measured on
ZOO: dict[str, str] = {"lstm": "mnist1d", "transformer": "mnist1d", "bert": "mnist1d", "unet": "digits"}


@dataclass(frozen=True)
class ZooRow:
    """One model at one scheme."""

    model: str
    data: str
    scheme: str
    float_accuracy: float
    quantized_accuracy: float
    sqnr_db: float
    top1_agreement: float
    quantized_modules: int
    left_float: int


def recipe(model: nn.Module, weight_bits: int, act_bits: int) -> dict[object, Optional[dict[str, QuantSpec]]]:
    """One glob rule, plus a weight rule for the weight-only layers the model has (embeddings, the
    attention's out-projection), and for attention written with ``torch.matmul`` and softmax (Hugging Face's
    BERT) the operands of every matmul and the softmax outputs (``attach`` then needs an example input)."""
    weight = QuantSpec(bits=weight_bits, signed=True, symmetric=True, granularity="channel", axis=0)
    act = QuantSpec(bits=act_bits, signed=False, symmetric=False)
    rules: dict[object, Optional[dict[str, QuantSpec]]] = {"*": {"weight": weight, "input": act}}
    modules = dict(model.named_modules())
    if any(isinstance(m, nn.Embedding) for m in modules.values()):
        rules[nn.Embedding] = {"weight": weight}
    if any(name.endswith(".out_proj") for name in modules):
        rules["*.out_proj"] = {"weight": weight}
    if isinstance(model, TinyBert):
        rules["bert.embeddings.word_embeddings"] = None  # the steps come in as inputs_embeds: never read
        rules[torch.matmul] = {"input": act}
        rules[F.softmax] = {"output": act}
    return rules


def _data(name: str) -> Dataset:
    return load_mnist1d() if name == "mnist1d" else load_digits()


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])


def quantize_and_compare(model_name: str, scheme: str, data: Dataset, float_model: nn.Module) -> ZooRow:
    """Quantize a copy of ``float_model`` by ``scheme``, calibrate it and compare it with the float model."""
    import copy

    model = copy.deepcopy(float_model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what stays float is counted below
        handle = quant.attach(model, recipe(model, *SCHEMES[scheme]), example_input=data.x_train[:2])
    with torch.no_grad(), handle.calibrate():
        model(data.x_train[:256])
    ref, got = _logits(float_model, data.x_test), _logits(model, data.x_test)
    return ZooRow(
        model=model_name, data=data.name, scheme=scheme,
        float_accuracy=float((ref.argmax(1) == data.y_test).double().mean()),
        quantized_accuracy=float((got.argmax(1) == data.y_test).double().mean()),
        sqnr_db=float(quant.sqnr_db(ref, got)), top1_agreement=float((ref.argmax(1) == got.argmax(1)).double().mean()),
        quantized_modules=len(handle.modules), left_float=len(handle.skipped),
    )  # fmt: skip


def run(models: Sequence[str], epochs: int, width: int, progress: bool = True) -> list[ZooRow]:
    """Train each model briefly in float, then measure it at every scheme."""
    rows: list[ZooRow] = []
    for name in models:
        data = _data(ZOO[name])
        torch.manual_seed(0)
        model = build_model(name, data.input_shape, data.num_classes, width)
        train(model, data.x_train, data.y_train, epochs=epochs, lr=3e-3, batch_size=64, seed=0,
              desc=f"float {name}", progress=progress)  # fmt: skip
        model.eval()
        rows.extend(quantize_and_compare(name, scheme, data, model) for scheme in SCHEMES)
    return rows


def table(rows: Sequence[ZooRow]) -> str:
    """The rows as a markdown table."""
    head = "| model | data | scheme | float acc | quantized acc | SQNR (dB) | top-1 agreement | quantized / left float |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.data} | {r.scheme} | {r.float_accuracy:.3f} | {r.quantized_accuracy:.3f} | "
                     f"{r.sqnr_db:.1f} | {r.top1_agreement:.3f} | {r.quantized_modules} / {r.left_float} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.layer_zoo", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    rows = run(args.models, args.epochs, args.width, args.progress)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
