"""How often ONNX Runtime's output codes equal an :class:`~quant.ir.program.IntegerProgram`'s, per ONNX form.

:func:`measure` exports a program (:func:`quant.export.onnx_export.onnx_model`), runs it in ONNX Runtime's
CPU provider at a graph optimization level (``"basic"``: ``ORT_ENABLE_BASIC``, ``"all"``:
``ORT_ENABLE_ALL``, which fuses QDQ groups into ONNX Runtime's integer kernels) and compares its output
codes with :meth:`IntegerProgram.run <quant.ir.program.IntegerProgram.run>` on the torch reference: the
fraction of equal codes and the largest difference in codes (LSBs). :func:`agreement_table` writes the
Markdown table of docs/onnx.md, which ``python -m experiments.onnx_agreement`` regenerates over the model
zoo. onnxruntime is imported when a measurement runs.

>>> row = Agreement("mlp", "mlas", "qdq", "basic", ops=3, codes=8, equal=0.875, max_lsb=1)
>>> print(agreement_table([row]).splitlines()[2])
| mlp | mlas | 3 | 87.5% (1) | - | - |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from quant.ir.program import IntegerProgram

__all__ = ["Agreement", "LEVELS", "ZOO_PRESETS", "agreement_table", "compare_codes", "measure", "ort_session", "run_onnx"]

#: ONNX Runtime graph optimization levels by the names used here.
LEVELS: tuple[str, ...] = ("basic", "all")
#: The presets the zoo is lowered for (those of the lowering tests and ``experiments.verify_zoo``).
ZOO_PRESETS: tuple[str, ...] = ("tflite_int8", "fbgemm_int8", "mlas", "w4a8_acc32", "w4a4_acc16_sat", "w2a2_pow2_acc16")


@dataclass(frozen=True)
class Agreement:
    """One measurement: ``equal`` is the fraction of the ``codes`` output codes ONNX Runtime computed as the program
    did, ``max_lsb`` the largest difference; ``refused`` the exporter's reason when the form cannot express it,
    ``failed`` ONNX Runtime's error when it cannot run the exported model."""

    model: str
    preset: str
    form: str
    level: str
    ops: int
    codes: int = 0
    equal: float = 0.0
    max_lsb: int = 0
    refused: Optional[str] = None
    failed: Optional[str] = None

    def cell(self) -> str:
        """``99.2% (1)``: equal codes and the largest difference; ``-`` when refused, ``ORT fails`` when ONNX
        Runtime cannot run the model."""
        if self.refused is not None:
            return "-"
        if self.failed is not None:
            return "ORT fails"
        return f"{100 * self.equal:.1f}% ({self.max_lsb})"


def ort_session(model: bytes, level: str = "basic") -> Any:
    """An ONNX Runtime CPU session of the serialized ``model`` at optimization ``level`` (see :data:`LEVELS`)."""
    import onnxruntime as ort

    if level not in LEVELS:
        raise ValueError(f"level={level!r} is not one of {', '.join(map(repr, LEVELS))}")
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "basic"
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)  # fmt: skip
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(program: IntegerProgram, *xs: Any, form: str, level: str = "basic") -> list[np.ndarray[Any, Any]]:
    """ONNX Runtime's outputs of ``program`` exported in ``form`` on the float inputs ``xs``: the output codes,
    then the dequantized outputs (as the graph returns them)."""
    from quant.export.onnx_export import onnx_model

    session = ort_session(onnx_model(program, form=form).SerializeToString(), level)
    feeds = {name: np.asarray(x, dtype=np.float32) for name, x in zip(program.inputs, xs)}
    return list(session.run(None, feeds))


def measure(program: IntegerProgram, *xs: Any, form: str, level: str = "basic", model: str = "", preset: str = "") -> Agreement:
    """ONNX Runtime's output codes of ``program`` in ``form`` against the program's own (torch reference) on ``xs``;
    a form that cannot express the program gives a row with ``refused`` set."""
    name, dp = model or repr(program), preset or program.datapath.name
    from quant.export.onnx_export import onnx_model

    try:
        data = onnx_model(program, form=form).SerializeToString()
    except ValueError as err:
        return Agreement(name, dp, form, level, len(program.nodes), refused=str(err))
    try:
        session = ort_session(data, level)
        outs = session.run(None, {n: np.asarray(x, dtype=np.float32) for n, x in zip(program.inputs, xs)})
    except Exception as err:  # onnxruntime's own exception types (InvalidGraph, Fail, ...)
        return Agreement(name, dp, form, level, len(program.nodes), failed=f"{type(err).__name__}: {err}")
    ref = program.run(*xs)
    total, equal, worst = compare_codes(outs, ref if isinstance(ref, tuple) else (ref,))
    return Agreement(name, dp, form, level, len(program.nodes), total, equal / max(total, 1), worst)


def compare_codes(outputs: Sequence[Any], expected: Sequence[Any]) -> tuple[int, int, int]:
    """``(codes, equal codes, largest difference)`` of ONNX Runtime's ``outputs`` against the program's ``expected``
    output codes (the first ``len(expected)`` outputs; the dequantized ones that follow are not compared);
    ``ValueError`` when shapes differ."""
    total = equal = worst = 0
    for got, want in zip(outputs, expected):
        g, w = np.asarray(got).astype(np.int64), np.asarray(want).astype(np.int64)
        if g.shape != w.shape:
            raise ValueError(f"ONNX Runtime's output has shape {g.shape}, the program's {w.shape}")
        total += g.size
        equal += int((g == w).sum())
        worst = max(worst, int(np.abs(g - w).max()) if g.size else 0)
    return total, equal, worst


def agreement_table(rows: Sequence[Agreement]) -> str:
    """A Markdown table, one line per (model, preset): equal codes (largest difference) for the qdq form at each
    level and for the qoperator form at ``basic``."""
    key: dict[tuple[str, str], dict[tuple[str, str], Agreement]] = {}
    for r in rows:
        key.setdefault((r.model, r.preset), {})[(r.form, r.level)] = r
    lines = ["| model | preset | ops | qdq, ORT basic | qdq, ORT all | qoperator, ORT basic |", "|---|---|---|---|---|---|"]
    for (model, preset), cells in key.items():
        ops = next(iter(cells.values())).ops
        got = [cells.get(k) for k in (("qdq", "basic"), ("qdq", "all"), ("qoperator", "basic"))]
        lines.append(f"| {model} | {preset} | {ops} | " + " | ".join(c.cell() if c else "-" for c in got) + " |")
    return "\n".join(lines)
