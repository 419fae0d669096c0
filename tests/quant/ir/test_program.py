"""The IntegerProgram: printing, running on both backends from floats or codes, traces, exact save/load
round trips and the refusals of bad inputs and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.models.small import ResidualCNN
from quant.contract.datapath import PRESETS
from quant.ir import FORMAT_VERSION, IntegerProgram
from quant.lowering import lower
from tests.quant.lowering.test_lowering import calibrated


@pytest.fixture(scope="module", params=["tflite_int8", "w4a4_acc16_sat"])
def program(request: pytest.FixtureRequest) -> IntegerProgram:
    torch.manual_seed(0)
    dp = PRESETS[request.param]
    batches = [ResidualCNN.example_input(8) for _ in range(2)]
    model, handle = calibrated(ResidualCNN(), dp, batches)
    return lower(model, handle, batches[0], datapath=dp)


def test_print_shows_one_line_per_op(program: IntegerProgram) -> None:
    text = str(program)
    lines = text.splitlines()
    assert lines[0].startswith("IntegerProgram on ") and program.datapath.name in lines[0]
    assert sum(1 for ln in lines if " = " in ln) == len(program.nodes)
    assert "conv2d(%x)" in text and "clamp=" in text and lines[-1].startswith("  return %")
    if program.datapath.w_bits == 4:
        assert "packed" in text


def test_run_from_floats_and_codes_on_both_backends(program: IntegerProgram) -> None:
    x = ResidualCNN.example_input(3)
    codes = program.quantize_input(x)
    assert codes.dtype == program.tensors[program.inputs[0]].dtype and codes.shape == (3, 3, 8, 8)
    y_torch, trace = program.run_codes(codes, backend="torch", trace=True)
    y_c = program.run(x, backend="c")
    assert np.array_equal(y_torch, y_c) and y_torch.shape == (3, 10)
    assert set(trace) == {program.inputs[0], *(n.output for n in program.nodes)}
    real = program.dequantize(y_torch)
    info = program.tensors[program.outputs[0]]
    assert np.array_equal(real, (y_torch.astype(np.int64) - info.zero_point).astype(np.float32) * np.float32(info.scale))


def test_save_load_round_trip_is_exact(program: IntegerProgram, tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    program.save(path)
    again = IntegerProgram.load(path)
    assert str(again) == str(program)
    assert [n.attrs for n in again.nodes] == [n.attrs for n in program.nodes]
    x = ResidualCNN.example_input(4)
    for backend in ("torch", "c"):
        assert np.array_equal(again.run(x, backend=backend), program.run(x, backend=backend))
    again.save(tmp_path / "q.npz")
    assert (tmp_path / "q.npz").read_bytes() == path.read_bytes()  # reproducible
    assert again.digest() == program.digest() and len(program.digest()) == 64


def test_the_digest_sees_every_array(program: IntegerProgram) -> None:
    doc, arrays = program.to_json()
    key = next(k for k in sorted(arrays) if k.endswith(".bias"))
    changed = dict(arrays)
    changed[key] = arrays[key].copy()
    changed[key][0] += 1
    assert IntegerProgram.from_json(doc, changed).digest() != program.digest()


def test_bad_inputs_are_refused(program: IntegerProgram) -> None:
    codes = program.quantize_input(ResidualCNN.example_input(2))
    with pytest.raises(ValueError, match=r"must have shape \(N, 3, 8, 8\)"):
        program.run_codes(codes[:, :, :4])
    with pytest.raises(TypeError, match="must have dtype"):
        program.run_codes(codes.astype(np.int32))
    with pytest.raises(TypeError, match="takes 1 input"):
        program.run_codes(codes, codes)
    with pytest.raises(TypeError, match="floating tensor"):
        program.run(torch.zeros(2, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend='gpu' is not one of"):
        program.run_codes(codes, backend="gpu")


def _rewrite(path: Path, out: Path, edit: object) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    doc = json.loads(arrays.pop("program.json").tobytes())
    edit(doc, arrays)  # type: ignore[operator]
    arrays["program.json"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    np.savez(out, **arrays)


def test_bad_files_are_refused(program: IntegerProgram, tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    program.save(path)

    def version(doc: dict, arrays: dict) -> None:  # type: ignore[type-arg]
        doc["version"] = FORMAT_VERSION + 1

    def zero_point(doc: dict, arrays: dict) -> None:  # type: ignore[type-arg]
        doc["nodes"][0]["attrs"]["x_zero_point"] = 10_000

    def weight(doc: dict, arrays: dict) -> None:  # type: ignore[type-arg]
        ref = doc["nodes"][0]["params"]["weight"]["array"]
        arrays[ref] = arrays[ref][:1]

    def missing(doc: dict, arrays: dict) -> None:  # type: ignore[type-arg]
        del arrays[doc["nodes"][0]["params"]["weight"]["array"]]

    for edit, match in ((version, "format version"), (zero_point, "x_zero_point=10000 is outside"),
                        (weight, "weight"), (missing, "is missing")):  # fmt: skip
        bad = tmp_path / f"{edit.__name__}.npz"
        _rewrite(path, bad, edit)
        with pytest.raises(ValueError, match=match):
            IntegerProgram.load(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a program")
    with pytest.raises(ValueError, match="not a saved IntegerProgram"):
        IntegerProgram.load(tmp_path / "junk.npz")
