"""``python -m experiments.export``: a saved program becomes a C folder that builds and checks its vectors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.export import main, random_codes
from tests.kernels.export.test_export_c import build_and_run, zoo_program

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_writes_a_c_folder_from_a_saved_program(tmp_path: Path) -> None:
    program, x = zoo_program("keyword_spotter", "w4a4_acc16_sat", samples=4)
    program.save(tmp_path / "p.npz")
    np.save(tmp_path / "x.npy", x.numpy())
    done = subprocess.run([sys.executable, "-m", "experiments.export", str(tmp_path / "p.npz"), "--c",
                           str(tmp_path / "kws"), "--name", "kws", "--inputs", str(tmp_path / "x.npy"),
                           "--intermediates"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "bytes of weights" in done.stdout and (tmp_path / "kws" / "kws.c").is_file()
    built = build_and_run(tmp_path / "kws", tmp_path)
    assert built.returncode == 0 and "kws: 4 runs" in built.stdout, built.stdout + built.stderr


def test_random_vectors_and_refusals(tmp_path: Path) -> None:
    program, _ = zoo_program("mlp", "w2a2_pow2_acc16", samples=2)
    codes = random_codes(program, 5)
    info = program.tensors[program.inputs[0]]
    assert codes[0].shape == (5, 20) and codes[0].dtype == info.dtype
    program.save(tmp_path / "p.npz")
    main([str(tmp_path / "p.npz"), "--c", str(tmp_path / "out"), "--samples", "3", "--batch", "2"])
    built = build_and_run(tmp_path / "out", tmp_path)
    assert built.returncode == 0 and "3 runs, 24 output codes" in built.stdout, built.stdout
    with pytest.raises(SystemExit):
        main([str(tmp_path / "p.npz")])  # nothing to do
    with pytest.raises(ValueError, match="exists and is not empty"):
        main([str(tmp_path / "p.npz"), "--c", str(tmp_path / "out")])


def test_the_cli_writes_onnx(tmp_path: Path) -> None:
    import onnx

    program, _ = zoo_program("residual", "mlas", samples=2)
    program.save(tmp_path / "p.npz")
    for form in ("qoperator", "qdq"):
        main([str(tmp_path / "p.npz"), "--onnx", str(tmp_path / f"{form}.onnx"), "--form", form])
        model = onnx.load(str(tmp_path / f"{form}.onnx"))
        onnx.checker.check_model(model)
        meta = {p.key: p.value for p in model.metadata_props}
        assert program.digest() in meta.values()
