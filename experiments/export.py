"""``python -m experiments.export PROGRAM.npz --c FOLDER --onnx FILE``: hand a saved program over.

Reads an ``IntegerProgram`` written by ``program.save(path)`` and writes the standalone C folder
(``kernels.export_c``: generated C, the kernel sources it needs, test vectors, Makefile, README)
and/or an ONNX file (``quant.export_onnx``, ``--form qoperator`` or ``qdq``). The C test vectors
are the inputs of ``--inputs`` (a ``.npy`` of floats, quantized by the program's input quantizer, or
of codes), or else ``--samples`` random codes of the input's code range (seeded).

    python -m experiments.export model.npz --c model_c --name digits --intermediates
    python -m experiments.export model.npz --onnx model.onnx --form qoperator
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from quant.contract.codes import code_range
from quant.ir.program import IntegerProgram

__all__ = ["main", "random_codes"]


def random_codes(program: IntegerProgram, samples: int, seed: int = 0) -> list[np.ndarray]:
    """``samples`` random codes for each input, uniform over its code range (binary: -1 and +1)."""
    rng = np.random.default_rng(seed)
    out = []
    for name in program.inputs:
        info = program.tensors[name]
        lo, hi = code_range(info.bits, info.signed)
        shape = (samples, *(int(d) for d in info.shape[1:] if d is not None))
        codes = rng.integers(lo, hi + 1, size=shape)
        if info.bits == 1 and info.signed:
            codes = np.where(codes > 0, 1, -1)
        out.append(codes.astype(info.dtype))
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.export", description=__doc__.splitlines()[0])
    parser.add_argument("program", type=Path, help="a program saved with IntegerProgram.save")
    parser.add_argument("--c", type=Path, metavar="FOLDER", help="write the standalone C folder here")
    parser.add_argument("--name", default="model", help="prefix of the generated C symbols and files")
    parser.add_argument("--inputs", type=Path, help=".npy of test inputs (floats or codes); default: random codes")
    parser.add_argument("--samples", type=int, default=8, help="random test vectors when --inputs is not given")
    parser.add_argument("--batch", type=int, default=1, help="samples per call of <name>_run")
    parser.add_argument("--intermediates", action="store_true", help="also check every op's codes")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --c folder")
    parser.add_argument("--onnx", type=Path, metavar="FILE", help="write an ONNX model here")
    parser.add_argument("--form", choices=["qoperator", "qdq"], default="qoperator", help="the ONNX form")
    args = parser.parse_args(argv)
    if args.c is None and args.onnx is None:
        parser.error("nothing to do: give --c FOLDER and/or --onnx FILE")
    program = IntegerProgram.load(args.program)
    if args.c is not None:
        import kernels

        if args.inputs is not None:
            inputs: object = np.load(args.inputs, allow_pickle=False)
        else:
            if args.samples < 1:
                parser.error("--samples must be >= 1")
            codes = random_codes(program, args.samples * args.batch)
            inputs = codes if len(codes) > 1 else codes[0]
        kernels.export_c(program, args.c, inputs, name=args.name, batch=args.batch, intermediates=args.intermediates,
                         overwrite=args.overwrite)  # fmt: skip
    if args.onnx is not None:
        import quant

        quant.export_onnx(program, args.onnx, form=args.form)
        print(f"{args.onnx}: {args.form} ONNX model of {len(program.nodes)} ops")


if __name__ == "__main__":
    main()
