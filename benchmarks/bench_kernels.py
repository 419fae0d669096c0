"""Throughput of the C integer kernels against PyTorch float, PyTorch fbgemm int8 and ONNX Runtime.

Single thread (``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``), one
process, random codes. Every figure is GMAC/s = multiply-accumulates / wall time of one call
(each call includes requantization to output codes; the C wrappers also validate their inputs,
as a user call does): the variants of a shape are measured in turn, ``--pause`` seconds apart (a
core slowed by AVX-512 work recovers its clock before the next), over ``--rounds`` rounds, each
figure the median of its rounds. The instruction set ``isa="auto"`` selects is reported as the C
library reports it, and the C int8 figure also as a percentage of the measured peak of the
instruction its product runs on (``benchmarks/peak_probe.c``: vpdpbusd for AVX-512 VNNI, vpmaddwd
for AVX2). Shapes:

* conv 3x3 64->64 at 56x56, conv 3x3 128->128 at 28x28 (batch 1, padding 1);
* depthwise conv 3x3 at 112x112x32 (groups = 32, padding 1);
* conv 1x1 256->256 at 14x14;
* linear 1024 -> 1024, batch 64.

Implementations (columns):

* ``C int8``: datapath ``fbgemm_int8`` (uint8 activations with zero point, int8 per-channel
  weights, 32-bit accumulator, float32 requantization), hot loops dispatched to the widest
  instruction set available; ``C int8 avx512_vnni`` / ``avx2`` / ``portable`` force one (n/a where
  the CPU lacks it; portable: the baseline build, e.g. x86-64 SSE2);
* ``C W4A8`` (``w4a8_acc32``), ``C W4A4`` (``w4a4_acc16_sat``, 16-bit saturating
  accumulator) and ``C W2A2`` (``w2a2_pow2_acc16``): weights packed 4 or 2 bits per code and
  unpacked on the fly by the kernel;
* ``torch fp32``: ``F.conv2d`` / ``F.linear`` in float32 (oneDNN/MKL);
* ``fbgemm int8``: ``torch.ops.quantized.conv2d`` / ``linear`` with prepacked per-channel
  qint8 weights and quint8 activations;
* ``ORT int8``: ONNX Runtime ``QLinearConv`` / ``QLinearMatMul`` (uint8 x int8).

A second table gives the Python cost of one call on small shapes, where it matters most: per-call
microseconds of the bare binding call (``kernels._qk.conv2d``/``linear`` with every argument
prepared), of ``run_conv2d``/``run_linear`` on a record built once (the path a program takes on the
``"c"`` backend), and of ``kernels.conv2d``/``linear`` from keyword arguments, each minus the bare
call; rounds of 200 calls, the variants interleaved, median over the rounds.

A channel-scaling table runs 3x3 convolutions C -> C at 28x28 for C = 16 .. 256 (C int8, fbgemm,
ONNX Runtime). Prints the tables and writes ``benchmarks/results/kernels.json``. Run: ``make bench`` or
``python -m benchmarks.bench_kernels [--seconds S]`` (time budget per measurement);
``--wrapper-only`` prints the second table alone and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

import kernels
from kernels import _qk
from kernels._abi import ISAS, conv2d_geometry, datapath_struct, requant_struct, weights_struct
from kernels.api import SCRATCH_ALIGN, run_conv2d, run_linear
from quant.contract.attrs import Conv2dAttrs, LinearAttrs
from quant.contract.datapath import Datapath

RESULTS = Path(__file__).resolve().parent / "results" / "kernels.json"


@dataclass(frozen=True)
class Shape:
    """A conv2d (``kind="conv"``) or linear (``kind="linear"``: n=batch, c_in=K, c_out=N) workload."""

    name: str
    kind: str
    n: int
    c_in: int
    c_out: int
    hw: int = 1
    k: int = 1
    groups: int = 1

    @property
    def macs(self) -> int:
        if self.kind == "linear":
            return self.n * self.c_in * self.c_out
        pad = self.k // 2
        out = self.hw + 2 * pad - self.k + 1
        return self.n * self.c_out * out * out * (self.c_in // self.groups) * self.k * self.k


SHAPES = [
    Shape("conv3x3 64->64 56x56", "conv", 1, 64, 64, 56, 3),
    Shape("conv3x3 128->128 28x28", "conv", 1, 128, 128, 28, 3),
    Shape("dw3x3 32ch 112x112", "conv", 1, 32, 32, 112, 3, groups=32),
    Shape("conv1x1 256->256 14x14", "conv", 1, 256, 256, 14, 1),
    Shape("linear 1024x1024 b64", "linear", 64, 1024, 1024),
]

C_VARIANTS = {  # column -> (datapath preset, isa)
    "C int8": ("fbgemm_int8", "auto"),
    "C int8 avx512_vnni": ("fbgemm_int8", "avx512_vnni"),
    "C int8 avx2": ("fbgemm_int8", "avx2"),
    "C int8 portable": ("fbgemm_int8", "portable"),
    "C W4A8": ("w4a8_acc32", "auto"),
    "C W4A4": ("w4a4_acc16_sat", "auto"),
    "C W2A2": ("w2a2_pow2_acc16", "auto"),
}
COLUMNS = [*C_VARIANTS, "torch fp32", "fbgemm int8", "ORT int8"]


def median_time(fn: Callable[[], object], seconds: float, warmup: int = 2) -> float:
    """Median wall time of ``fn`` over repeats filling about ``seconds`` (at least 5), after warm-up."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(200, max(5, seconds / once)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- C kernels


def c_call(shape: Shape, preset: str, isa: str, rng: np.random.Generator) -> Optional[Callable[[], object]]:
    """One call of the C kernel on ``shape`` (None where this CPU lacks ``isa``)."""
    if not kernels.isa_available(isa):
        return None
    dp = Datapath.preset(preset)
    alo, ahi = dp.a_range
    wlo, whi = dp.w_range
    zx = (alo + ahi + 1) // 2 if dp.a_zero_point else 0
    if shape.kind == "linear":
        x = rng.integers(alo, ahi + 1, size=(shape.n, shape.c_in))
        w = rng.integers(wlo, whi + 1, size=(shape.c_out, shape.c_in))
    else:
        x = rng.integers(alo, ahi + 1, size=(shape.n, shape.c_in, shape.hw, shape.hw))
        w = rng.integers(wlo, whi + 1, size=(shape.c_out, shape.c_in // shape.groups, shape.k, shape.k))
    xa = x.astype(np.int8 if dp.a_signed else np.uint8)
    wa: Any = w.astype(np.int8)
    if dp.w_bits in (1, 2, 4):
        wa = kernels.pack_weights(wa, dp.w_bits, dp.w_signed)
    if dp.requant == "pow2":
        mult: Any = 2.0**-8
    else:
        mult = (rng.uniform(0.5, 1.0, size=shape.c_out) * 2.0**-9).astype(np.float32)
    bias = rng.integers(-1000, 1000, size=shape.c_out).astype(np.int32)
    kw: dict[str, Any] = dict(x_zero_point=zx, w_zero_point=0, y_zero_point=0, multiplier=mult, datapath=dp, isa=isa)
    if shape.kind == "linear":
        return lambda: kernels.linear(xa, wa, bias, **kw)
    return lambda: kernels.conv2d(xa, wa, bias, padding=shape.k // 2, groups=shape.groups, **kw)


# ----------------------------------------------------------------------------- PyTorch


def torch_float_call(shape: Shape, rng: np.random.Generator) -> Callable[[], object]:
    if shape.kind == "linear":
        x = torch.from_numpy(rng.standard_normal((shape.n, shape.c_in), dtype=np.float32))
        w = torch.from_numpy(rng.standard_normal((shape.c_out, shape.c_in), dtype=np.float32))
        b = torch.zeros(shape.c_out)
        return lambda: F.linear(x, w, b)
    x = torch.from_numpy(rng.standard_normal((shape.n, shape.c_in, shape.hw, shape.hw), dtype=np.float32))
    w = torch.from_numpy(rng.standard_normal((shape.c_out, shape.c_in // shape.groups, shape.k, shape.k), dtype=np.float32))
    b = torch.zeros(shape.c_out)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return F.conv2d(x, w, b, padding=shape.k // 2, groups=shape.groups)

    return run


def fbgemm_call(shape: Shape, rng: np.random.Generator) -> Optional[Callable[[], object]]:
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return None
    torch.backends.quantized.engine = "fbgemm"
    scales = torch.from_numpy(rng.uniform(0.005, 0.01, size=shape.c_out)).to(torch.float64)
    zps = torch.zeros(shape.c_out, dtype=torch.int64)
    if shape.kind == "linear":
        xf = torch.from_numpy(rng.uniform(0, 1, (shape.n, shape.c_in)).astype(np.float32))
        wf = torch.from_numpy(rng.uniform(-1, 1, (shape.c_out, shape.c_in)).astype(np.float32))
    else:
        xf = torch.from_numpy(rng.uniform(0, 1, (shape.n, shape.c_in, shape.hw, shape.hw)).astype(np.float32))
        wf = torch.from_numpy(
            rng.uniform(-1, 1, (shape.c_out, shape.c_in // shape.groups, shape.k, shape.k)).astype(np.float32)
        )
    bias = torch.zeros(shape.c_out)
    with warnings.catch_warnings():  # torch.ao quantized tensors are deprecated but still work in 2.13
        warnings.simplefilter("ignore")
        xq = torch.quantize_per_tensor(xf, 1.0 / 255, 128, torch.quint8)
        wq = torch.quantize_per_channel(wf, scales, zps, 0, torch.qint8)
        if shape.kind == "linear":
            packed = torch.ops.quantized.linear_prepack(wq, bias)
            return lambda: torch.ops.quantized.linear(xq, packed, 0.05, 128)
        pad = shape.k // 2
        packed = torch.ops.quantized.conv2d_prepack(wq, bias, [1, 1], [pad, pad], [1, 1], shape.groups)
        return lambda: torch.ops.quantized.conv2d(xq, packed, 0.05, 128)


# ----------------------------------------------------------------------------- ONNX Runtime


def ort_call(shape: Shape, rng: np.random.Generator) -> Optional[Callable[[], object]]:
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    def f32(v: Any) -> Any:
        return numpy_helper.from_array(np.asarray(v, dtype=np.float32))

    def arr(v: Any) -> Any:
        return numpy_helper.from_array(np.asarray(v))

    inits = []
    if shape.kind == "linear":
        w = rng.integers(-127, 128, size=(shape.c_in, shape.c_out)).astype(np.int8)  # B is (K, N)
        x = rng.integers(0, 256, size=(shape.n, shape.c_in)).astype(np.uint8)
        names = ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"]
        values = [None, f32(1 / 255), arr(np.uint8(128)), arr(w),
                  f32(0.01), arr(np.int8(0)), f32(0.05), arr(np.uint8(128))]  # fmt: skip
        node = helper.make_node("QLinearMatMul", names, ["y"])
        y_shape = [shape.n, shape.c_out]
    else:
        pad = shape.k // 2
        w = rng.integers(-127, 128, size=(shape.c_out, shape.c_in // shape.groups, shape.k, shape.k)).astype(np.int8)
        x = rng.integers(0, 256, size=(shape.n, shape.c_in, shape.hw, shape.hw)).astype(np.uint8)
        names = ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"]
        values = [None, f32(1 / 255), arr(np.uint8(128)), arr(w),
                  f32(rng.uniform(0.005, 0.01, size=shape.c_out)), arr(np.zeros(shape.c_out, np.int8)),
                  f32(0.05), arr(np.uint8(128))]  # fmt: skip
        node = helper.make_node(
            "QLinearConv", names, ["y"], kernel_shape=[shape.k, shape.k], pads=[pad] * 4, strides=[1, 1],
            dilations=[1, 1], group=shape.groups,
        )  # fmt: skip
        y_shape = [shape.n, shape.c_out, shape.hw, shape.hw]
    for name, value in zip(names[1:], values[1:]):
        assert value is not None
        value.name = name
        inits.append(value)
    graph = helper.make_graph(
        [node], "bench", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, y_shape)], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


# ----------------------------------------------------------------------------- ISA and peak


def isa_selected() -> str:
    """The instruction set ``isa="auto"`` runs here (what the C library's own query answers)."""
    code = int(_qk.isa_query(_qk.ISA_AUTO)[1])
    return next(name for name, value in ISAS.items() if value == code and name != "auto")


#: The instruction whose peak bounds each ISA's int8 product: AVX-512 VNNI multiplies u8 x s8 (vpdpbusd),
#: AVX2 int16 pairs (vpmaddwd + vpaddd); the portable build has no measured peak.
PEAK_OF = {"avx512_vnni": "vpdpbusd_avx512", "avx2": "vpmaddwd_avx2"}


def measure_peaks() -> dict[str, float]:
    """GMAC/s of one core per vector instruction (``benchmarks/peak_probe.c``, built with the system C
    compiler into ``build/``); empty, with a message, where there is no compiler or the build fails."""
    import shutil
    import sysconfig

    cc = shutil.which(str(sysconfig.get_config_var("CC") or "cc").split()[0]) or shutil.which("cc")
    source = Path(__file__).resolve().parent / "peak_probe.c"
    exe = Path(__file__).resolve().parents[1] / "build" / "peak_probe"
    if cc is None:
        print("peak probe skipped: no C compiler")
        return {}
    exe.parent.mkdir(parents=True, exist_ok=True)
    built = subprocess.run([cc, "-O2", "-o", str(exe), str(source)], capture_output=True, text=True)
    if built.returncode != 0:
        print(f"peak probe skipped: {cc} failed: {built.stderr.strip().splitlines()[-1:]}")
        return {}
    out = subprocess.run([str(exe)], capture_output=True, text=True).stdout
    return {name: float(value) for name, value in (line.split() for line in out.splitlines() if line.strip())}


def interleaved(calls: dict[str, Optional[Callable[[], object]]], macs: int, seconds: float, rounds: int,
                pause: float) -> dict[str, Optional[dict[str, float]]]:  # fmt: skip
    """Every call measured once per round, in turn, with ``pause`` seconds between two (so that a core
    slowed by AVX-512 work recovers its clock before the next variant); median over the rounds."""
    times: dict[str, list[float]] = {name: [] for name, fn in calls.items() if fn is not None}
    for _ in range(rounds):
        for name, fn in calls.items():
            if fn is None:
                continue
            times[name].append(median_time(fn, seconds / rounds))
            time.sleep(pause)
    out: dict[str, Optional[dict[str, float]]] = {}
    for name in calls:
        if name not in times:
            out[name] = None
            continue
        t = statistics.median(times[name])
        out[name] = {"median_s": t, "gmacs": macs / t / 1e9, "spread": (max(times[name]) - min(times[name])) / t}
    return out


#: 3x3 convolutions C -> C at 28x28 for the channel scaling table.
SCALING = [Shape(f"conv3x3 {c}->{c} 28x28", "conv", 1, c, c, 28, 3) for c in (16, 32, 64, 128, 256)]
SCALING_COLUMNS = ["C int8", "fbgemm int8", "ORT int8"]


# ----------------------------------------------------------------------------- wrapper cost


WRAPPER_SHAPES = [  # (name, preset, kind, x shape, w shape, padding)
    ("conv1x1 8->8 8x8", "tflite_int8", "conv", (1, 8, 8, 8), (8, 8, 1, 1), 0),
    ("conv3x3 8->8 8x8", "tflite_int8", "conv", (1, 8, 8, 8), (8, 8, 3, 3), 1),
    ("conv3x3 16->16 8x8 W4A4", "w4a4_acc16_sat", "conv", (1, 16, 8, 8), (16, 16, 3, 3), 1),
    ("linear 16->16 b1", "tflite_int8", "linear", (1, 16), (16, 16), 0),
    ("linear 64->64 b1 fbgemm", "fbgemm_int8", "linear", (1, 64), (64, 64), 0),
]
WRAPPER_VARIANTS = ["C call", "run_<op>", "kernels.<op>"]


def _aligned_scratch(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + SCRATCH_ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % SCRATCH_ALIGN
    return raw[start : start + nbytes]


def wrapper_calls(preset: str, kind: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], padding: int,
                  rng: np.random.Generator) -> dict[str, Callable[[], object]]:  # fmt: skip
    """The three variants of one small call (see the module docstring), checked to give the same codes."""
    dp = Datapath.preset(preset)
    alo, ahi = dp.a_range
    wlo, whi = dp.w_range
    x = rng.integers(alo, ahi + 1, size=x_shape).astype(np.int8 if dp.a_signed else np.uint8)
    w = rng.integers(wlo, whi + 1, size=w_shape).astype(np.int8)
    wa: Any = kernels.pack_weights(w, dp.w_bits, dp.w_signed) if dp.w_bits in (1, 2, 4) else w
    data, packed_bits = (wa.data, wa.bits) if dp.w_bits in (1, 2, 4) else (w, 0)
    mult: Any = (rng.uniform(0.5, 1.0, size=w_shape[0]) * 2.0**-7).astype(np.float32)
    bias = rng.integers(-100, 100, size=w_shape[0]).astype(np.int32)
    kw: dict[str, Any] = dict(x_zero_point=0, w_zero_point=0, y_zero_point=0, multiplier=mult, datapath=dp)
    dps = datapath_struct(dp)
    if kind == "conv":
        attrs = Conv2dAttrs.build(w_shape=w_shape, padding=padding, **kw)
        geometry = conv2d_geometry(attrs, x.shape)
        y = np.empty(attrs.output_shape(x.shape), np.int8)
        rq, ws = requant_struct(attrs.requant, attrs.output), weights_struct(data, packed_bits, attrs.w_zero_point)
        scratch = _aligned_scratch(_qk.conv2d_scratch_bytes(geometry, dps))

        def bare() -> object:
            _qk.conv2d(geometry=geometry, datapath=dps, x=x, x_zero_point=0, weights=ws, bias=bias, requant=rq, y=y,
                       scratch=scratch, isa=_qk.ISA_AUTO)  # fmt: skip
            return y

        calls: dict[str, Callable[[], object]] = {
            "C call": bare,
            "run_<op>": lambda: run_conv2d(attrs, x, wa, bias),
            "kernels.<op>": lambda: kernels.conv2d(x, wa, bias, padding=padding, **kw),
        }
    else:
        lattrs = LinearAttrs.build(w_shape=w_shape, **kw)
        m, n = lattrs.output_shape(x.shape)
        y = np.empty((m, n), np.int8)
        rq, ws = requant_struct(lattrs.requant, lattrs.output), weights_struct(data, packed_bits, lattrs.w_zero_point)
        scratch = _aligned_scratch(_qk.linear_scratch_bytes(m, w_shape[1], n, dps))

        def bare() -> object:
            _qk.linear(m=m, k=w_shape[1], n=n, datapath=dps, x=x, x_zero_point=0, weights=ws, bias=bias, requant=rq,
                       y=y, scratch=scratch, isa=_qk.ISA_AUTO)  # fmt: skip
            return y

        calls = {
            "C call": bare,
            "run_<op>": lambda: run_linear(lattrs, x, wa, bias),
            "kernels.<op>": lambda: kernels.linear(x, wa, bias, **kw),
        }
    outputs = [np.array(fn()) for fn in calls.values()]
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:]), "the variants disagree"
    return calls


def wrapper_overhead(rounds: int = 15, calls_per_round: int = 200) -> list[dict[str, Any]]:
    """Per-call microseconds of each variant of :data:`WRAPPER_SHAPES` (median of interleaved rounds)."""
    rows = []
    for name, preset, kind, x_shape, w_shape, padding in WRAPPER_SHAPES:
        calls = wrapper_calls(preset, kind, x_shape, w_shape, padding, np.random.default_rng(0))
        times: dict[str, list[float]] = {v: [] for v in WRAPPER_VARIANTS}
        for fn in calls.values():  # warm-up (the first call of a record fills its caches)
            for _ in range(20):
                fn()
        for _ in range(rounds):
            for variant in WRAPPER_VARIANTS:
                fn = calls[variant]
                t0 = time.perf_counter_ns()
                for _ in range(calls_per_round):
                    fn()
                times[variant].append((time.perf_counter_ns() - t0) / calls_per_round / 1e3)
        us = {v: statistics.median(t) for v, t in times.items()}
        rows.append({"name": name, "datapath": preset, "us": us,
                     "overhead_us": {v: us[v] - us["C call"] for v in WRAPPER_VARIANTS[1:]}})  # fmt: skip
    return rows


def print_wrapper_table(rows: list[dict[str, Any]]) -> None:
    print("\nPython cost per call, us (median of interleaved rounds); + is the cost above the bare C call")
    width = max(len(r["name"]) for r in rows)
    print(f"{'shape':<{width}}  {'C call':>8}  {'run_<op>':>16}  {'kernels.<op>':>16}")
    for r in rows:
        us, extra = r["us"], r["overhead_us"]
        cells = [f"{us[v]:>7.1f} (+{extra[v]:4.1f})" for v in WRAPPER_VARIANTS[1:]]
        print(f"{r['name']:<{width}}  {us['C call']:>8.1f}  " + "  ".join(f"{c:>16}" for c in cells))


# ----------------------------------------------------------------------------- main


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time budget of each measurement")
    parser.add_argument("--wrapper-only", action="store_true", help="print the wrapper-cost table only, write nothing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per table (median over them)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between two measurements")
    parser.add_argument("--no-scaling", action="store_true", help="leave out the channel scaling table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.wrapper_only:
        rows = wrapper_overhead()
        print_wrapper_table(rows)
        return {"wrapper_overhead": rows}
    results: dict[str, Any] = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "threads": 1,
        "isa_auto": isa_selected(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "unit": "GMAC/s (median)",
        "shapes": [],
    }
    try:
        import onnxruntime

        results["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        results["onnxruntime"] = None
    results["peaks"] = measure_peaks()
    results["peak_of_auto"] = PEAK_OF.get(results["isa_auto"])
    for shape in SHAPES:
        rng = np.random.default_rng(0)
        calls: dict[str, Optional[Callable[[], object]]] = {
            name: c_call(shape, preset, isa, rng) for name, (preset, isa) in C_VARIANTS.items()
        }
        calls["torch fp32"] = torch_float_call(shape, rng)
        calls["fbgemm int8"] = fbgemm_call(shape, rng)
        calls["ORT int8"] = ort_call(shape, rng)
        row: dict[str, Any] = {"name": shape.name, "macs": shape.macs,
                               "results": interleaved(calls, shape.macs, args.seconds, args.rounds, args.pause)}  # fmt: skip
        results["shapes"].append(row)
    results["scaling"] = []
    for shape in [] if args.no_scaling else SCALING:
        rng = np.random.default_rng(0)
        scaled: dict[str, Optional[Callable[[], object]]] = {"C int8": c_call(shape, "fbgemm_int8", "auto", rng),
                                                             "fbgemm int8": fbgemm_call(shape, rng),
                                                             "ORT int8": ort_call(shape, rng)}  # fmt: skip
        results["scaling"].append({"name": shape.name, "macs": shape.macs,
                                   "results": interleaved(scaled, shape.macs, args.seconds, args.rounds, args.pause)})  # fmt: skip
    results["wrapper_overhead"] = wrapper_overhead()
    print_table(results)
    print_wrapper_table(results["wrapper_overhead"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return results


def print_table(results: dict[str, Any]) -> None:
    peaks, peak_name = results.get("peaks", {}), results.get("peak_of_auto")
    peak = peaks.get(peak_name) if peak_name else None
    print(f"GMAC/s, 1 thread, median of interleaved rounds; {results['cpu']}; C hot loops (auto): "
          f"{results['isa_auto']}")  # fmt: skip
    if peaks:
        print("measured peaks (benchmarks/peak_probe.c): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    _print_rows(results["shapes"], [*COLUMNS, "C int8 % peak"], peak)
    if results.get("scaling"):
        print("\nchannel scaling, conv 3x3 at 28x28:")
        _print_rows(results["scaling"], [*SCALING_COLUMNS, "C int8 % peak"], peak)


def _print_rows(rows: list[dict[str, Any]], columns: list[str], peak: Optional[float]) -> None:
    width = max(len(s["name"]) for s in rows)
    print(f"{'shape':<{width}}  " + "  ".join(f"{c:>18}" for c in columns))
    for s in rows:
        cells = []
        for c in columns:
            if c == "C int8 % peak":
                r = s["results"].get("C int8")
                cells.append(f"{100 * r['gmacs'] / peak:>17.0f}%" if r and peak else f"{'n/a':>18}")
                continue
            r = s["results"][c]
            cells.append(f"{r['gmacs']:>18.2f}" if r else f"{'n/a':>18}")
        print(f"{s['name']:<{width}}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
