"""``verify(model, handle, program, inputs)``: does the integer program compute exactly the same on every
backend, op by op, and how far is the fast simulation from it?

For every batch of ``inputs`` (a tensor, split into ``batch_size`` rows, or an iterable of
batches, streamed: nothing is kept but the counts):

1. the float input is quantized once by the program's input quantizer (contract section 7);
2. the model runs in exact simulation (:mod:`quant.sim.exact`: its own graph, the datapath's
   arithmetic) and the program runs on each backend (``"torch"``: the int64 reference, ``"c"``:
   the C kernels), every intermediate tensor traced; each op's output codes must be equal in all
   of them, element for element: ``report.mismatches`` counts the differing codes (0, or
   verification failed), and the first diverging op is kept with the element index and every
   value;
3. the model itself runs in fast simulation (the handle's quantizers) and in float (the handle
   disabled); on the program's output the report gives, for fast simulation against the datapath,
   the fraction of differing codes (the fast output quantized to the output's qparams), the
   largest difference in LSBs and the SQNR of the datapath's dequantized output, and the top-1
   agreement of float, fast and datapath.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.fx
import torch.nn as nn
from tqdm import tqdm

from quant.ir.program import IntegerProgram, TensorInfo
from quant.sim.attach import QuantHandle
from quant.sim.tracing import ModelTracer, constant_nodes

__all__ = ["Divergence", "OpCheck", "VerificationReport", "verify"]


@dataclass
class FastVsDatapath:
    """Fast simulation's values against the datapath's codes of one tensor, accumulated over batches."""

    compared: int = 0
    differing: int = 0
    max_lsb: int = 0
    signal_power: float = 0.0
    noise_power: float = 0.0

    def add(self, fast: torch.Tensor, codes: np.ndarray, info: TensorInfo, program: IntegerProgram) -> None:
        """Count ``fast`` (floats) quantized to ``info``'s qparams against the datapath's ``codes``."""
        fast = fast.detach().to(torch.float32).reshape(codes.shape)
        diff = np.abs(_codes_of(fast, info, program) - codes.astype(np.int64))
        self.compared += diff.size
        self.differing += int((diff != 0).sum())
        self.max_lsb = max(self.max_lsb, int(diff.max()) if diff.size else 0)
        dq = torch.from_numpy(program.dequantize_tensor(codes, info)).to(torch.float64)
        self.signal_power += float((fast.to(torch.float64) ** 2).sum())
        self.noise_power += float(((fast.to(torch.float64) - dq) ** 2).sum())

    @property
    def fraction(self) -> float:
        """Fraction of the codes on which fast simulation and the datapath differ."""
        return self.differing / self.compared if self.compared else 0.0

    @property
    def sqnr_db(self) -> float:
        """SQNR of the datapath's dequantized values against fast simulation's, in dB."""
        if self.noise_power == 0.0:
            return math.inf
        return 10.0 * math.log10(self.signal_power / self.noise_power) if self.signal_power > 0 else -math.inf


@dataclass
class OpCheck:
    """One op of the program: how many output codes were compared and how many differ between backends,
    and fast simulation against the datapath on it (where the model's graph computes this tensor)."""

    name: str
    op: str
    shape: str
    compared: int = 0
    mismatches: int = 0
    #: Whether exact simulation computes this tensor too (a requantize in front of a layer is the program's own).
    in_exact: bool = False
    fast: FastVsDatapath = field(default_factory=FastVsDatapath)


@dataclass(frozen=True)
class Divergence:
    """The first op whose output codes differ: the element (index within the batch) and each backend's value."""

    op: str
    batch: int
    index: tuple[int, ...]
    values: dict[str, int]

    def __str__(self) -> str:
        vals = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"first divergence at op {self.op!r}, batch {self.batch}, element {list(self.index)}: {vals}"


@dataclass
class VerificationReport:
    """The result of :func:`verify` (see the module docstring); ``ok`` when no code differs."""

    datapath: str
    backends: tuple[str, ...]
    samples: int = 0
    ops: list[OpCheck] = field(default_factory=list)
    divergence: Optional[Divergence] = None
    output: FastVsDatapath = field(default_factory=FastVsDatapath)
    top1_samples: int = 0
    top1_float_fast: int = 0
    top1_float_datapath: int = 0
    top1_fast_datapath: int = 0

    @property
    def mismatches(self) -> int:
        """Codes that differ between backends over every op and sample (must be 0)."""
        return sum(o.mismatches for o in self.ops)

    @property
    def ok(self) -> bool:
        """Whether every backend computed every code the same."""
        return self.mismatches == 0

    @property
    def fast_compared(self) -> int:
        """Output codes compared between fast simulation and the datapath."""
        return self.output.compared

    @property
    def fast_differing(self) -> int:
        """Output codes on which fast simulation and the datapath differ."""
        return self.output.differing

    @property
    def fast_max_lsb(self) -> int:
        """Largest difference, in LSBs of the output, between fast simulation and the datapath."""
        return self.output.max_lsb

    @property
    def fast_differing_fraction(self) -> float:
        """Fraction of the output codes on which fast simulation and the datapath differ."""
        return self.output.fraction

    @property
    def sqnr_db(self) -> float:
        """SQNR of the datapath's dequantized output against fast simulation's, in dB."""
        return self.output.sqnr_db

    def agreement(self) -> dict[str, float]:
        """Top-1 agreement (fractions) of float vs fast, float vs datapath and fast vs datapath."""
        n = max(1, self.top1_samples)
        return {"float_fast": self.top1_float_fast / n, "float_datapath": self.top1_float_datapath / n,
                "fast_datapath": self.top1_fast_datapath / n}  # fmt: skip

    def __str__(self) -> str:
        width = max([len(o.name) for o in self.ops] + [2])
        kind = max([len(o.op) for o in self.ops] + [11])
        shape = max([len(o.shape) for o in self.ops] + [28])
        head = (f"{'op':<{width}}  {'kind':<{kind}} {'output':<{shape}} {'codes':>10} {'mismatches':>10}  exact  "
                f"{'fast!=dp':>8} {'maxLSB':>6} {'SQNR dB':>7}")  # fmt: skip
        lines = [f"verification on {self.datapath}, backends {' vs '.join(self.backends)}, {self.samples} samples",
                 head, "-" * len(head)]  # fmt: skip
        for o in self.ops:
            fast = (f"{100 * o.fast.fraction:7.2f}% {o.fast.max_lsb:>6} {o.fast.sqnr_db:>7.1f}"
                    if o.fast.compared else f"{'-':>8} {'-':>6} {'-':>7}")  # fmt: skip
            lines.append(f"{o.name:<{width}}  {o.op:<{kind}} {o.shape:<{shape}} {o.compared:>10} {o.mismatches:>10}  "
                         f"{'yes' if o.in_exact else '-':<5}  {fast}")  # fmt: skip
        lines.append(f"mismatches: {self.mismatches} ({'OK' if self.ok else 'FAILED'})")
        if self.divergence is not None:
            lines.append(str(self.divergence))
        lines.append(
            f"fast vs datapath on the output: {100 * self.fast_differing_fraction:.2f}% codes differ, "
            f"max {self.fast_max_lsb} LSB, SQNR {self.sqnr_db:.1f} dB"
        )
        if self.top1_samples:
            a = self.agreement()
            lines.append(f"top-1 agreement: float/fast {100 * a['float_fast']:.2f}%, float/datapath "
                         f"{100 * a['float_datapath']:.2f}%, fast/datapath {100 * a['fast_datapath']:.2f}%")  # fmt: skip
        return "\n".join(lines)

    def to_json(self) -> str:
        """The report as JSON (counts, per-op rows, the divergence, the derived figures)."""
        d = asdict(self)

        def finite(v: float) -> Optional[float]:
            return None if math.isinf(v) else v

        d.update(mismatches=self.mismatches, ok=self.ok, fast_differing_fraction=self.fast_differing_fraction,
                 sqnr_db=finite(self.sqnr_db), agreement=self.agreement())  # fmt: skip
        for row, o in zip(d["ops"], self.ops):
            row["fast"].update(fraction=o.fast.fraction, sqnr_db=finite(o.fast.sqnr_db))
        return json.dumps(d, indent=2, default=list)


def _batches(inputs: Union[torch.Tensor, Iterable[Any]], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start : start + batch_size]
        return
    for b in inputs:
        x = b[0] if isinstance(b, (tuple, list)) else b
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"verify: a batch must be a tensor (or a tuple starting with one), got {type(x).__name__}")
        yield x


def _first(out: Any) -> torch.Tensor:
    t = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"verify: the model returned {type(t).__name__}, not a tensor")
    return t.detach()


def verify(
    model: nn.Module,
    handle: QuantHandle,
    program: IntegerProgram,
    inputs: Union[torch.Tensor, Iterable[Any]],
    *,
    batch_size: int = 64,
    backends: Sequence[str] = ("torch", "c"),
    progress: bool = True,
) -> VerificationReport:
    """Check ``program`` on every backend op by op, and fast simulation against it (see the module docstring).

    ``inputs``: a float tensor (split into batches of ``batch_size``) or an iterable of batches
    (tensors, or tuples whose first element is the input, as a DataLoader gives).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"verify: batch_size={batch_size!r} must be a positive int")
    if len(backends) < 2:
        raise ValueError(f"verify: backends={list(backends)!r} must name at least two backends to compare")
    if len(program.inputs) != 1 or len(program.outputs) < 1:
        raise ValueError("verify: programs with one input are verified so far")
    from quant.sim.exact import ExactSimulation

    exact = ExactSimulation(handle, program.datapath, program=program)
    fast_values = _FastValues(model, program)
    report = VerificationReport(program.datapath.name, ("exact", *backends))
    out_info = program.tensors[program.outputs[0]]
    checks = {node.output: OpCheck(node.name, node.op, program.tensors[node.output].describe()) for node in program.nodes}
    report.ops = list(checks.values())
    was_training = model.training
    model.eval()
    try:
        for bi, x in enumerate(tqdm(_batches(inputs, batch_size), desc="verify", disable=not progress, leave=False)):
            codes = program.quantize_input(x)
            traces = {}
            for be in backends:
                _, trace = program.run_codes(codes, backend=be, trace=True)
                traces[be] = trace
            traces["exact"] = {k: v.numpy() for k, v in exact.trace_codes(x).items()}
            ref = traces[backends[0]]
            for name, check in checks.items():
                a = ref[name]
                check.compared += a.size
                check.in_exact = name in traces["exact"]
                for be in ("exact", *backends[1:]):
                    if name not in traces[be]:
                        continue  # a tensor only the program has (a requantize in front of a layer)
                    b = traces[be][name]
                    bad = np.argwhere(a.astype(np.int64) != b.astype(np.int64))
                    check.mismatches += len(bad)
                    if len(bad) and report.divergence is None:
                        idx = tuple(int(i) for i in bad[0])
                        report.divergence = Divergence(check.name, bi, idx, {k: int(traces[k][name][idx])
                                                                             for k in traces if name in traces[k]})  # fmt: skip
            y = ref[program.outputs[0]]
            with torch.no_grad():
                values = fast_values(x)
                for name, check in checks.items():
                    v = values.get(name)
                    if v is not None:
                        check.fast.add(v, ref[name], program.tensors[name], program)
                fast = _first(model(x)).to(torch.float32)
                enabled = [(q, q.enabled) for _, _, q in handle.quantizers()]
                for q, _ in enabled:
                    q.enabled = False
                try:
                    flt = _first(model(x)).to(torch.float32)
                finally:
                    for q, e in enabled:
                        q.enabled = e
            report.output.add(fast, y, out_info, program)
            dq = torch.from_numpy(program.dequantize(y)).to(torch.float64)
            report.samples += int(x.shape[0])
            if fast.dim() == 2 and fast.shape[1] > 1:
                top_f, top_q, top_d = flt.argmax(1), fast.argmax(1), dq.argmax(1)
                report.top1_samples += int(fast.shape[0])
                report.top1_float_fast += int((top_f == top_q).sum())
                report.top1_float_datapath += int((top_f == top_d).sum())
                report.top1_fast_datapath += int((top_q == top_d).sum())
    finally:
        model.train(was_training)
    return report


class _FastValues:
    """Fast simulation's value of every program tensor the model's graph computes, for one input."""

    def __init__(self, model: nn.Module, program: IntegerProgram) -> None:
        graph = ModelTracer().trace(model)
        self.module = torch.fx.GraphModule(model, graph)
        self.constants = {n.name for n in constant_nodes(graph)}
        # a tensor shared by a layer and its fused activation holds the activation's value: the last node
        self.tensor_of = {}
        for node in graph.nodes:
            if node.name in program.origins:
                self.tensor_of[node.name] = program.origins[node.name]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        tensor_of, constants = self.tensor_of, self.constants

        class Recorder(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                out = super().run_node(n)
                if n.name in tensor_of and isinstance(out, torch.Tensor) and out.is_floating_point():
                    values[tensor_of[n.name]] = out.expand(x.shape[0], *out.shape) if n.name in constants else out
                return out

        Recorder(self.module).run(x)
        return values


def _codes_of(values: torch.Tensor, info: Any, program: IntegerProgram) -> np.ndarray:
    """``values`` as codes of the output tensor ``info`` (the datapath's quantize of section 7)."""
    from quant.reference.quantize import quantize

    q = quantize(values, scale=info.scale, zero_point=info.zero_point, bits=info.bits, signed=info.signed,
                 datapath=program.datapath)  # fmt: skip
    out: np.ndarray = q.numpy().astype(np.int64)
    return out
