"""``experiments.results``: docs/results.md from the study sweeps, every figure read from the runs' summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.results import main
from experiments.run import run
from experiments.schema import compose_config, to_objects


def test_the_page_reads_the_measured_numbers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for i, scheme in enumerate(["w4a8_per_tensor", "w4a8"]):
        cfg = to_objects(compose_config(["+experiment=smoke", f"scheme={scheme}", f"cache_dir={cache}", "logger=none",
                                         "progress=false"]))  # fmt: skip
        run(cfg, tmp_path / "results" / "granularity" / f"{i}_{scheme}")
    main([str(tmp_path / "results"), "--out", str(tmp_path / "docs")])
    page = (tmp_path / "docs" / "results.md").read_text()
    c = {s: json.loads((tmp_path / "results" / "granularity" / f"{i}_{s}" / "summary.json").read_text())["accuracy"]["c"]
         for i, s in enumerate(["w4a8_per_tensor", "w4a8"])}  # fmt: skip
    assert f"reaches {100 * c['w4a8']:.2f}% on the datapath against {100 * c['w4a8_per_tensor']:.2f}%" in page
    assert "| w4a8_per_tensor | ptq_minmax | fbgemm_int8 | 32 | wrap |" in page
    assert "(not run: `calibration` is missing" in page and "Krishnamoorthi (2018)" in page
    assert (tmp_path / "docs" / "results" / "granularity_accuracy_vs_bops.png").is_file()
    (tmp_path / "empty" / "granularity").mkdir(parents=True)  # a study folder without runs
    with pytest.raises(SystemExit, match="no summary.json below"):
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "docs2")])
