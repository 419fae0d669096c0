"""Throughput of the C integer kernels against PyTorch float, PyTorch fbgemm int8 and ONNX Runtime.

Single thread (``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``), one
process, random codes. Every figure is GMAC/s = multiply-accumulates / median wall time of
repeated calls after warm-up (each call includes requantization to output codes; the C
wrappers also validate their inputs and allocate the output and scratch, as a user call
does). Shapes:

* conv 3x3 64->64 at 56x56, conv 3x3 128->128 at 28x28 (batch 1, padding 1);
* depthwise conv 3x3 at 112x112x32 (groups = 32, padding 1);
* conv 1x1 256->256 at 14x14;
* linear 1024 -> 1024, batch 64.

Implementations (columns):

* ``C int8``: datapath ``fbgemm_int8`` (uint8 activations with zero point, int8 per-channel
  weights, 32-bit accumulator, float32 requantization), hot loops dispatched to the widest
  instruction set available (``C int8 portable``: the baseline build, e.g. x86-64 SSE2);
* ``C W4A8`` (``w4a8_acc32``), ``C W4A4`` (``w4a4_acc16_sat``, 16-bit saturating
  accumulator) and ``C W2A2`` (``w2a2_pow2_acc16``): weights packed 4 or 2 bits per code and
  unpacked on the fly by the kernel;
* ``torch fp32``: ``F.conv2d`` / ``F.linear`` in float32 (oneDNN/MKL);
* ``fbgemm int8``: ``torch.ops.quantized.conv2d`` / ``linear`` with prepacked per-channel
  qint8 weights and quint8 activations;
* ``ORT int8``: ONNX Runtime ``QLinearConv`` / ``QLinearMatMul`` (uint8 x int8).

Prints a table and writes ``benchmarks/results/kernels.json``. Run: ``make bench`` or
``python -m benchmarks.bench_kernels [--seconds S]`` (time budget per measurement).
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


def c_call(shape: Shape, preset: str, isa: str, rng: np.random.Generator) -> Callable[[], object]:
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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "threads": 1,
        "isa_auto": "avx2" if kernels.isa_available("avx2") else "portable",
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
    for shape in SHAPES:
        rng = np.random.default_rng(0)
        calls: dict[str, Optional[Callable[[], object]]] = {
            name: c_call(shape, preset, isa, rng) for name, (preset, isa) in C_VARIANTS.items()
        }
        calls["torch fp32"] = torch_float_call(shape, rng)
        calls["fbgemm int8"] = fbgemm_call(shape, rng)
        calls["ORT int8"] = ort_call(shape, rng)
        row: dict[str, Any] = {"name": shape.name, "macs": shape.macs, "results": {}}
        for name in COLUMNS:
            fn = calls[name]
            if fn is None:
                row["results"][name] = None
                continue
            t = median_time(fn, args.seconds)
            row["results"][name] = {"median_s": t, "gmacs": shape.macs / t / 1e9}
        results["shapes"].append(row)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"GMAC/s, 1 thread, median after warm-up; {results['cpu']}; C hot loops: {results['isa_auto']}")
    width = max(len(s["name"]) for s in results["shapes"])
    print(f"{'shape':<{width}}  " + "  ".join(f"{c:>15}" for c in COLUMNS))
    for s in results["shapes"]:
        cells = []
        for c in COLUMNS:
            r = s["results"][c]
            cells.append(f"{r['gmacs']:>15.2f}" if r else f"{'n/a':>15}")
        print(f"{s['name']:<{width}}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
