"""``python -m experiments.onnx_agreement``: the ONNX Runtime agreement table of docs/onnx.md over the model zoo.

For every zoo model (:mod:`experiments.zoo`) and preset, the program is exported in each ONNX form and run in
ONNX Runtime (:mod:`quant.export.agreement`); the table gives the fraction of equal output codes and the
largest difference, and the reasons a form refuses or ONNX Runtime fails.

    python -m experiments.onnx_agreement          # [--samples N] [--models mlp,residual] [--presets mlas]
"""

from __future__ import annotations

import argparse
import re
from typing import Optional, Sequence

from experiments.zoo import zoo_models, zoo_program
from quant.export.agreement import ZOO_PRESETS, agreement_table, measure

__all__ = ["main"]


def _failure_summary(message: str) -> str:
    """ONNX Runtime's type error of one node as ``<op> does not take <type>`` (one line per kind, not per node)."""
    found = re.search(r"Type '(tensor\([a-z0-9]+\))' of input parameter \(.*?\) of operator \((\w+)\)", message)
    if found is None:
        return message
    return f"ONNX Runtime's own {found.group(2)} (made by its QDQ fusion) does not take {found.group(1)}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print the agreement table of docs/onnx.md (see the module docstring)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=256, help="random inputs per model (default 256)")
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--presets", default=",".join(ZOO_PRESETS), help="comma-separated presets")
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m] or sorted(zoo_models())
    rows = []
    for name in names:
        for preset in [p for p in args.presets.split(",") if p]:
            program, make_input = zoo_program(name, preset)
            torch.manual_seed(1)
            x = make_input(args.samples)
            for form, level in (("qdq", "basic"), ("qdq", "all"), ("qoperator", "basic")):
                rows.append(measure(program, x, form=form, level=level, model=name, preset=preset))
    print(agreement_table(rows))
    reasons = sorted({r.refused for r in rows if r.refused is not None and r.preset == "mlas"})
    if reasons:
        print("\nRefused on mlas:")
        for reason in reasons:
            print(f"- {reason}")
    failures = sorted({f"{r.form} at {r.level}: {_failure_summary(r.failed)}" for r in rows if r.failed is not None})
    if failures:
        print("\nONNX Runtime fails:")
        for failure in failures:
            print(f"- {failure}")


if __name__ == "__main__":
    main()
