"""``quant.register_op``: a user's custom op, its C twin built from a C99 source into a shared library, traced,
calibrated, lowered, run on both backends, saved and loaded, and verified like a built-in op; a twin that
disagrees with its Python reference is found by ``verify`` and named; refusals."""

from __future__ import annotations

import copy
import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import quant
from kernels.custom import INCLUDE_DIR, CustomParam, CustomTensor, compile_custom_op
from quant.contract.codes import code_range
from quant.contract.custom import CustomOperand, custom_op_names
from quant.contract.datapath import PRESETS, Datapath
from quant.ir.program import IntegerProgram
from tests.quant.lowering.test_lowering import calibrated

#: y = clamp(floor((x - z_in) / 2) + z_out): halving on codes whose output keeps the input's qparams.
HALVE_C = r"""
#include "qk_custom.h"

int32_t {symbol}(const qk_custom_tensor *in, int32_t n_in, const qk_custom_param *p, int32_t n_p,
                 qk_custom_tensor *out, void *scratch, size_t scratch_bytes)
{{
    size_t count = 1, i;
    int32_t d;
    (void)scratch;
    (void)scratch_bytes;
    if (n_in != 1 || n_p != 4) {{
        return QK_ERR_PARAM_LENGTH;
    }}
    for (d = 0; d < in[0].ndim; ++d) {{
        count *= (size_t)in[0].shape[d];
    }}
    for (i = 0; i < count; ++i) {{
        int64_t x = in[0].is_signed ? ((const int8_t *)in[0].data)[i] : ((const uint8_t *)in[0].data)[i];
        int64_t v = x - p[0].values[0];
        int64_t q = {rounding} + p[1].values[0];
        q = q < p[2].values[0] ? p[2].values[0] : q > p[3].values[0] ? p[3].values[0] : q;
        if (out->is_signed) {{
            ((int8_t *)out->data)[i] = (int8_t)q;
        }} else {{
            ((uint8_t *)out->data)[i] = (uint8_t)q;
        }}
    }}
    return 0;
}}
"""
FLOOR = "(v - (v < 0)) / 2"  # floor(v / 2), as the reference
HALF_UP = "(v + 1 - (v + 1 < 0)) / 2"  # floor((v + 1) / 2): a different rounding, for the disagreeing twin


def _halve_params(inputs: Sequence[CustomOperand], output: CustomOperand, datapath: Datapath) -> dict[str, int]:
    lo, hi = code_range(output.bits, output.signed)
    return {"z_in": inputs[0].zero_point, "z_out": output.zero_point, "y_min": lo, "y_max": hi}


def _halve_reference(x: torch.Tensor, *, z_in: int, z_out: int, y_min: int, y_max: int) -> torch.Tensor:
    return torch.clamp(torch.div(x - z_in, 2, rounding_mode="floor") + z_out, y_min, y_max)


def _halve_float(x: torch.Tensor) -> torch.Tensor:
    """x / 2."""
    return x * 0.5


def _build(tmp_path: Path, symbol: str, rounding: str) -> Path:
    src = tmp_path / f"{symbol}.c"
    src.write_text(HALVE_C.format(symbol=symbol, rounding=rounding))
    return compile_custom_op([src], tmp_path / f"lib{symbol}.so", cflags=("-O2", "-Wall", "-Wextra", "-Werror", "-pedantic"))


@pytest.fixture
def register(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``register(name, **kw)``: quant.register_op, unregistered again after the test."""
    names: list[str] = []

    def reg(name: str, **kw: Any) -> Any:
        names.append(name)
        return quant.register_op(name, **kw)

    yield reg
    for n in set(names) & set(custom_op_names()):
        quant.unregister_op(n)


def _halve(register: Callable[..., Any], name: str, library: Path, symbol: str, **overrides: Any) -> Any:
    kw: dict[str, Any] = dict(float_fn=_halve_float, integer_params=_halve_params, reference=_halve_reference,
                              param_names=("z_in", "z_out", "y_min", "y_max"), c_symbol=symbol, c_library=str(library),
                              output_like=0)  # fmt: skip
    kw.update(overrides)
    return register(name, **kw)


class _HalvingNet(nn.Module):
    def __init__(self, halve: Any) -> None:
        super().__init__()
        self.halve = halve
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.halve(self.conv(x))
        out: torch.Tensor = self.fc(torch.flatten(F.relu(y), 1))
        return out


def _setup(model: nn.Module, preset: str = "tflite_int8") -> tuple[nn.Module, quant.QuantHandle, IntegerProgram, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(24, 3, 4, 4)
    dp = PRESETS[preset]
    model, handle = calibrated(model, dp, [x[:8], x[8:16], x[16:]])
    return model, handle, quant.lower(model, handle, x[:8], datapath=dp), x


@pytest.mark.parametrize("preset", ["tflite_int8", "w4a4_acc16_sat"])
def test_a_users_op_from_a_c_library_lowers_runs_and_verifies(tmp_path: Path, register: Any, preset: str) -> None:
    halve = _halve(register, "user.halve", _build(tmp_path, "user_halve", FLOOR), "user_halve")
    model, handle, program, x = _setup(_HalvingNet(halve), preset)
    node = next(n for n in program.nodes if n.op == "user.halve")
    assert "z_in=" in str(program) and node.attrs.x_bits == (PRESETS[preset].a_bits,)
    assert program.tensors[node.output].scale == program.tensors[node.inputs[0]].scale  # output_like=0
    report = quant.verify(model, handle, program, x, batch_size=8, progress=False)
    row = next(o for o in report.ops if o.op == "user.halve")
    assert report.mismatches == 0 and row.compared == 24 * 6 * 16 and row.in_exact
    np.testing.assert_array_equal(program.run(x, backend="torch"), program.run(x, backend="c"))


def test_a_twin_that_disagrees_with_its_reference_is_found_and_named(tmp_path: Path, register: Any) -> None:
    halve = _halve(register, "user.halve_up", _build(tmp_path, "user_halve_up", HALF_UP), "user_halve_up")
    model, handle, program, x = _setup(_HalvingNet(halve))
    report = quant.verify(model, handle, program, x, batch_size=8, progress=False)
    assert report.mismatches > 0 and not report.ok
    assert report.divergence is not None and report.divergence.op == "halve_up"
    v = report.divergence.values
    assert v["exact"] == v["torch"] != v["c"]
    assert "first divergence at op 'halve_up'" in str(report) and "FAILED" in str(report)


def test_the_op_is_one_graph_node_and_one_calibrated_tensor(tmp_path: Path, register: Any) -> None:
    halve = _halve(register, "user.halve_trace", _build(tmp_path, "user_halve_trace", FLOOR), "user_halve_trace")
    net = _HalvingNet(halve)
    float_copy = copy.deepcopy(net)
    graph = torch.fx.Tracer().trace(net)
    assert [n.target for n in graph.nodes if n.op == "call_function"].count(halve) == 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model, handle, program, x = _setup(net)
    assert handle.edges is not None  # the sites of the last forward: the op's output, nothing inside float_fn
    assert [label for _, label in handle.edges.sites] == ["input", "ParametrizedConv2d", "halve_trace", "relu",
                                                          "flatten", "ParametrizedLinear"]  # fmt: skip
    handle.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(x), float_copy(x))


def test_a_program_with_a_custom_op_saves_loads_and_needs_the_op_registered(tmp_path: Path, register: Any) -> None:
    halve = _halve(register, "user.halve_io", _build(tmp_path, "user_halve_io", FLOOR), "user_halve_io")
    model, handle, program, x = _setup(_HalvingNet(halve))
    program.save(tmp_path / "p.npz")
    loaded = IntegerProgram.load(tmp_path / "p.npz")
    assert str(loaded) == str(program)
    np.testing.assert_array_equal(loaded.run(x, backend="c"), program.run(x, backend="c"))
    quant.unregister_op("user.halve_io")
    try:
        with pytest.raises(ValueError, match=r"custom op 'user.halve_io' is not registered .*quant.register_op"):
            IntegerProgram.load(tmp_path / "p.npz")
    finally:
        _halve(register, "user.halve_io", tmp_path / "libuser_halve_io.so", "user_halve_io")


def test_the_builtin_nms_loads_without_an_import(tmp_path: Path) -> None:
    """A saved program using ``detection.nms`` loads in a process that never imported quant.custom.nms."""
    from experiments.models.small import TinyDetector

    torch.manual_seed(0)
    x = TinyDetector.example_input(8)
    model, handle = calibrated(TinyDetector(), PRESETS["fbgemm_int8"], [x])
    program = quant.lower(model, handle, x, datapath=PRESETS["fbgemm_int8"])
    program.save(tmp_path / "det.npz")
    np.save(tmp_path / "x.npy", program.quantize_input(x))
    code = (f"import numpy as np; from quant.ir.program import IntegerProgram; "
            f"p = IntegerProgram.load({str(tmp_path / 'det.npz')!r}); "
            f"print(p.run_codes(np.load({str(tmp_path / 'x.npy')!r}), backend='c')[0].tolist())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[3])
    assert json.loads(out.stdout) == program.run(x, backend="torch")[0].tolist()


def test_the_ctypes_structs_match_the_header(tmp_path: Path) -> None:
    probe = tmp_path / "probe.c"
    probe.write_text(r"""
#include <stddef.h>
#include <stdio.h>
#include "qk_custom.h"
int main(void) {
    printf("[%zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu]\n", sizeof(qk_custom_tensor),
           offsetof(qk_custom_tensor, data), offsetof(qk_custom_tensor, shape), offsetof(qk_custom_tensor, ndim),
           offsetof(qk_custom_tensor, bits), offsetof(qk_custom_tensor, is_signed), sizeof(qk_custom_param),
           offsetof(qk_custom_param, values), offsetof(qk_custom_param, count));
    return 0;
}
""")
    exe = tmp_path / "probe"
    subprocess.run(["cc", "-std=c99", f"-I{INCLUDE_DIR}", str(probe), "-o", str(exe)], check=True)
    c_layout = json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    py_layout = [ctypes.sizeof(CustomTensor), CustomTensor.data.offset, CustomTensor.shape.offset,
                 CustomTensor.ndim.offset, CustomTensor.bits.offset, CustomTensor.is_signed.offset,
                 ctypes.sizeof(CustomParam), CustomParam.values.offset, CustomParam.count.offset]  # fmt: skip
    assert c_layout == py_layout


# ----------------------------------------------------------------------------- refusals


def test_registration_is_checked(register: Any) -> None:
    kw: dict[str, Any] = dict(float_fn=_halve_float, integer_params=_halve_params, reference=_halve_reference,
                              param_names=("z_in", "z_out", "y_min", "y_max"), c_symbol="user_halve")  # fmt: skip
    with pytest.raises(ValueError, match=r"name='halve' must be a dotted lower-case name"):
        quant.register_op("halve", **kw)
    with pytest.raises(ValueError, match=r"n_inputs=0 must be an int in \[1, 16\]"):
        quant.register_op("user.bad", n_inputs=0, **kw)
    with pytest.raises(ValueError, match="must be distinct identifiers"):
        quant.register_op("user.bad", **{**kw, "param_names": ("a", "a")})
    with pytest.raises(ValueError, match=r"output_like=1 must be None or an input index in \[0, 0\]"):
        quant.register_op("user.bad", output_like=1, **kw)
    with pytest.raises(TypeError, match="reference must be callable"):
        quant.register_op("user.bad", **{**kw, "reference": 3})
    with pytest.raises(ValueError, match="c_symbol='not a symbol' must be a C identifier"):
        quant.register_op("user.bad", **{**kw, "c_symbol": "not a symbol"})
    register("user.once", **kw)
    with pytest.raises(ValueError, match="'user.once' is already registered"):
        quant.register_op("user.once", **kw)
    with pytest.raises(ValueError, match="no custom op named 'user.never'"):
        quant.unregister_op("user.never")


def test_a_missing_library_or_symbol_is_named(tmp_path: Path, register: Any) -> None:
    lib = _build(tmp_path, "user_halve_sym", FLOOR)
    halve = _halve(register, "user.halve_sym", lib, "user_halve_nowhere")
    model, handle, program, x = _setup(_HalvingNet(halve))
    with pytest.raises(ValueError, match=r"custom op 'user.halve_sym': .*libuser_halve_sym.so' exports no function "
                                         r"'user_halve_nowhere'"):  # fmt: skip
        program.run(x, backend="c")
    quant.unregister_op("user.halve_sym")
    _halve(register, "user.halve_sym", tmp_path / "missing.so", "user_halve_sym")
    with pytest.raises(ValueError, match=r"custom op 'user.halve_sym': cannot load c_library=.*missing.so"):
        program.run(x, backend="c")


def test_a_reference_returning_no_codes_is_named(tmp_path: Path, register: Any) -> None:
    lib = _build(tmp_path, "user_halve_ref", FLOOR)

    def wrong_shape(x: torch.Tensor, **p: int) -> torch.Tensor:
        return _halve_reference(x, **p)[:, :1]

    halve = _halve(register, "user.halve_ref", lib, "user_halve_ref", reference=wrong_shape)
    model, handle, program, x = _setup(_HalvingNet(halve))
    with pytest.raises(ValueError, match=r"node 'halve_ref' \(user.halve_ref\): user.halve_ref: the Python reference "
                                         r"returned shape \(24, 1, 4, 4\), the program expects \(24, 6, 4, 4\)"):  # fmt: skip
        program.run(x, backend="torch")

    def out_of_range(x: torch.Tensor, **p: int) -> torch.Tensor:
        return _halve_reference(x, **p) + 1000

    quant.unregister_op("user.halve_ref")
    _halve(register, "user.halve_ref", lib, "user_halve_ref", reference=out_of_range)
    with pytest.raises(ValueError, match="the Python reference's output"):
        program.run(x, backend="torch")


def test_integer_params_that_miss_a_name_fail_at_lowering_naming_the_node(tmp_path: Path, register: Any) -> None:
    def partial(inputs: Any, output: Any, datapath: Any) -> dict[str, int]:
        return {"z_in": 0, "z_out": 0}

    halve = _halve(register, "user.halve_params", tmp_path / "unused.so", "user_halve_params", integer_params=partial)
    with pytest.raises(quant.lowering.lowerer.LoweringError,
                       match=r"user.halve_params: integer parameters must be exactly \['z_in', 'z_out', 'y_min', "
                             r"'y_max'\]; missing \['y_min', 'y_max'\] \(graph node 'halve_params' at .*test_registry.py"):  # fmt: skip
        _setup(_HalvingNet(halve))


def test_options_computed_by_the_model_are_refused(register: Any, tmp_path: Path) -> None:
    def scaled(x: torch.Tensor, *, factor: Any = 1.0) -> torch.Tensor:
        """x * factor."""
        out: torch.Tensor = x * factor
        return out

    op = register("user.scaled", float_fn=scaled, integer_params=lambda i, o, d, **k: {}, reference=lambda x: x,
                  param_names=(), c_symbol="user_scaled")  # fmt: skip

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return op(self.fc(x), factor=x.size(0))  # type: ignore[no-any-return]

    torch.manual_seed(0)
    x = torch.randn(8, 4)
    model, handle = calibrated(Net(), PRESETS["tflite_int8"], [x])
    with pytest.raises(quant.lowering.lowerer.LoweringError, match="user.scaled: options must be constants"):
        quant.lower(model, handle, x, datapath=PRESETS["tflite_int8"])
