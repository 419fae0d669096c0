"""experiments.mixed_precision: sensitivity, allocations over size budgets and the uniform recipes, end to end
with tiny settings; the tables print, the PNG is written and logged to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.mixed_precision import MixedPrecisionSettings, main


def test_a_quick_run_prints_the_tables_and_writes_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, points = tmp_path / "plots" / "mp.png", tmp_path / "mp.json"
    argv = ["--epochs", "1", "--candidates", "2", "8", "--calibration", "128", "--hessian-samples", "2", "--points", "1",
            "--no-progress", "--plot", str(png), "--json", str(points), "--tensorboard", str(tmp_path / "tb")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| W2 | " in out and "| W8 | " in out and "| mixed | " in out and "| float | " in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    rows = json.loads(points.read_text())["points"]
    uniform = {r["label"]: r["weight_bytes"] for r in rows if r["kind"] == "uniform"}
    assert set(uniform) == {"W2", "W8"} and uniform["W8"] == 4 * uniform["W2"]
    mixed = [r for r in rows if r["kind"] == "mixed"]
    assert len(mixed) == 3 and all(r["weight_bytes"] <= r["budget"] and 0.0 <= r["accuracy"] <= 1.0 for r in mixed)


def test_the_settings_and_the_command_line_refuse_a_width_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="candidates"):
        MixedPrecisionSettings(candidates=(1, 4))
    with pytest.raises(SystemExit):
        main(["--candidates", "9"])
    assert "give weight widths in 2..8" in capsys.readouterr().err
