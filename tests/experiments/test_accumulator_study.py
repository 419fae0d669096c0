"""experiments.accumulator_study: the accumulator-width table runs end to end on bundled data (a tiny setting)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.accumulator_study import main


def test_the_study_runs_and_writes_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study.json"
    assert main(["--acc-bits", "9", "--width", "16", "--epochs", "2", "--qat-epochs", "1", "--no-progress",
                 "--json", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| data | acc bits | L1 limit |" in printed and "| digits | 9 | 17 |" in printed
    rows = json.loads(out.read_text())
    assert [r["acc_bits"] for r in rows] == [9] and [r["l1_limit"] for r in rows] == [17]
    for r in rows:
        assert set(r["accuracy"]) == set(r["program_accuracy"]) == {"plain", "a2q"}
        assert all(0.0 <= v <= 1.0 for v in (*r["accuracy"].values(), *r["program_accuracy"].values()))
        assert r["layers"] == 3 and r["samples"] == 450
        # A2Q rules overflow out by construction: no layer can overflow, no sample makes the datapath saturate
        assert r["overflowing_layers"]["a2q"] == 0 and r["saturating_samples"]["a2q"] == 0
        assert r["max_l1"]["a2q"] <= r["l1_limit"]
    assert rows[0]["overflowing_layers"]["plain"] > 0  # 9 bits: the plain model's worst case does not fit


def test_the_command_line_refuses_a_width_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--acc-bits", "40"])
    assert "accumulator widths lie in 8..32" in capsys.readouterr().err
