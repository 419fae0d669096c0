"""experiments.ptq_table: the tables of RTN and the post-training algorithms' accuracies run end to end on bundled
data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.ptq_table import main


def test_the_table_runs_and_writes_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ptq.json"
    assert main(["--models", "cnn", "--bits", "3", "--epochs", "2", "--no-progress", "--json", str(out)]) == 0
    assert "| cnn | digits | W3A8 |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert set(row["accuracy"]) == {"rtn", "adaround", "gptq", "bias_correction"}
    assert all(0.0 <= v <= 1.0 for v in row["accuracy"].values())


def test_the_per_tensor_table_compares_the_rescaling_algorithms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ptq.json"
    assert main(["--models", "mlp", "--bits", "4", "--epochs", "2", "--per-tensor", "--no-progress", "--json", str(out)]) == 0
    assert "| mlp | mnist1d | W4A8 |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert set(row["accuracy"]) == {"rtn", "equalize", "equalize+bias_correction"}


def test_the_command_line_refuses_a_width_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--bits", "1"])
    assert "widths lie in 2..8" in capsys.readouterr().err
