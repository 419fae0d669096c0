"""``experiments.run`` and ``experiments.compare``: a run trains (or reuses) the float model, applies the scheme,
evaluates float / fast / exact / C accuracy, verifies with 0 mismatches and writes its summary, program and
TensorBoard logs; impossible configs are refused before training; the Hydra CLI runs and sweeps; compare
tabulates and plots a sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import experiments.run as run_app
from experiments.compare import main as compare_main, pareto_front
from experiments.run import ExperimentError, run
from experiments.schema import compose_config, to_objects
from quant.ir.program import IntegerProgram

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(cache: Path, *overrides: str) -> Any:
    return to_objects(compose_config(["+experiment=smoke", f"cache_dir={cache}", "progress=false", *overrides]))


def test_a_run_writes_its_summary_program_and_logs(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = run(config(cache), tmp_path / "a")
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary))
    assert set(s["accuracy"]) == {"float", "fast", "exact", "c"} and all(0 <= v <= 1 for v in s["accuracy"].values())
    assert s["accuracy"]["exact"] == s["accuracy"]["c"]  # exact simulation is the datapath
    assert s["verification"]["mismatches"] == 0 and s["verification"]["outputs"] == 64 * 10
    assert s["scheme"]["name"] == "w4a4" and s["datapath"]["name"] == "fbgemm_int8" and s["scheme"]["weight"]["bits"] == 4
    assert s["bops"] > 0 and 0 < s["model_bytes"] < s["program_bytes"]  # 4-bit codes, stored in bytes on int8
    program = IntegerProgram.load(tmp_path / "a" / "program.npz")
    assert program.datapath.name == "fbgemm_int8"
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    printed = capsys.readouterr().out
    assert "w4a4" in printed and "float" in printed and "exact" in printed
    again = run(config(cache), tmp_path / "b")
    assert again["float_cached"] and again["accuracy"] == summary["accuracy"]  # same config and seed: same results


def test_qat_and_float_runs(cache: Path, tmp_path: Path) -> None:
    qat = run(config(cache, "method=qat_ste", "method.epochs=1", "logger=none"), tmp_path / "qat")
    assert qat["method"]["kind"] == "qat" and qat["verification"]["mismatches"] == 0
    fp = run(config(cache, "scheme=fp32", "logger=none"), tmp_path / "fp32")
    assert fp["accuracy"]["fast"] is None and fp["verification"]["mismatches"] is None and fp["float_cached"]
    assert not (tmp_path / "fp32" / "program.npz").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["scheme=w2a2", "datapath=w2a2_pow2_acc16"], "scheme 'w2a2' (scheme.weight) cannot run on datapath 'w2a2_pow2_acc16'"),
    (["scheme=w8a8", "datapath=tflite_int8"], "scheme 'w8a8' (scheme.input) cannot run on datapath 'tflite_int8'"),
    (["method=qat_lsq", "method.epochs=0"], "QAT needs method.epochs >= 1"),
    (["method.observer=median"], "method 'ptq_minmax' with scheme 'w4a4'"),
    (["data.name=cifar"], "data 'cifar': unknown dataset 'cifar'"),
    (["model=kws"], "model 'kws' on data 'digits'"),
])  # fmt: skip
def test_impossible_configs_are_refused_before_training(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        overrides: list[str], message: str) -> None:  # fmt: skip
    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("trained before the config was checked")

    monkeypatch.setattr(run_app, "float_model", no_training)
    with pytest.raises(ExperimentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(config(cache, *overrides), tmp_path / "out")


def test_a_missing_data_package_is_named_before_training(cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import experiments.data.fashion_mnist as fashion

    monkeypatch.setattr(fashion, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(ExperimentError, match=r"data 'fashion_mnist': .*make data"):
        run(config(cache, "data=fashion_mnist"), tmp_path / "out")


def test_an_unwritable_output_directory_is_refused(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ExperimentError, match="is not writable"):
        run(config(cache), tmp_path / "file" / "run")


def test_the_cli_runs_sweeps_and_compares(cache: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "experiments.run", "+experiment=smoke", f"cache_dir={cache}", "progress=false",
            "logger=none"]  # fmt: skip
    single = subprocess.run([*base, f"hydra.run.dir={tmp_path / 'one'}", "train.epochs=3"], capture_output=True,
                            text=True, cwd=ROOT)  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "one" / "summary.json").is_file()
    sweep = subprocess.run([*base[:3], "-m", *base[3:], "scheme=w8a8,w2a8", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    summaries = sorted((tmp_path / "sweep").rglob("summary.json"))
    assert len(summaries) == 2
    compare_main([str(tmp_path / "sweep"), "--no-tensorboard"])
    table = (tmp_path / "sweep" / "compare.md").read_text()
    assert "w8a8" in table and "w2a8" in table and (tmp_path / "sweep" / "compare.csv").is_file()
    assert (tmp_path / "sweep" / "accuracy_vs_bops.png").stat().st_size > 1000
    bad = subprocess.run([*base, "scheme.weight.bitz=3", f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode != 0 and "Could not override 'scheme.weight.bitz'" in bad.stderr
    impossible = subprocess.run([*base, "scheme=w8a8", "datapath=tflite_int8", f"hydra.run.dir={tmp_path / 'no'}"],
                                capture_output=True,
                                text=True, cwd=ROOT)  # fmt: skip
    assert impossible.returncode != 0 and "cannot run on datapath 'tflite_int8'" in impossible.stderr
    assert "Traceback" not in impossible.stderr


def test_the_pareto_front() -> None:
    points = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.85), (0.5, 0.2), (2.0, 0.8)]
    assert pareto_front(points) == [3, 0, 1]


def test_per_layer_bits_and_the_sweep_objective(cache: Path, tmp_path: Path) -> None:
    from experiments.run import objective

    s = run(config(cache, "+scheme.layer_bits.classifier=8", "logger=none"), tmp_path / "mixed")
    plain = run(config(cache, "logger=none"), tmp_path / "plain")
    assert s["bops_per_layer"]["classifier"] == 2 * plain["bops_per_layer"]["classifier"]  # 8 x 4 vs 4 x 4
    assert s["model_bytes"] > plain["model_bytes"] and s["verification"]["mismatches"] == 0
    assert objective(s, None) == s["accuracy"]["c"]
    assert objective(s, s["bops"] - 1) == s["accuracy"]["c"] - 1.0
    with pytest.raises(ExperimentError, match="'head' is not a Conv/Linear of the model"):
        run(config(cache, "+scheme.layer_bits.head=8", "logger=none"), tmp_path / "bad")


@pytest.mark.parametrize(("data", "model"), [("mnist1d", "kws"), ("spoken_digits", "kws"), ("digits", "mlp"),
                                             ("digits", "resnet8"), ("digits", "mobilenet"),
                                             ("mnist1d", "transformer"), ("mnist1d", "lstm"), ("digits", "unet")])  # fmt: skip
def test_the_datasets_and_models_run_to_zero_mismatches(cache: Path, tmp_path: Path, data: str, model: str) -> None:
    """Every model family on a dataset of its shape, through the whole run (1-D convs on audio features too)."""
    import shutil

    if data == "spoken_digits" and not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("spoken_digits needs espeak-ng and sox: make data")
    s = run(config(cache, f"data={data}", f"model={model}", "train.epochs=1", "logger=none", "verify_samples=32"),
            tmp_path / "out")  # fmt: skip
    assert s["verification"]["mismatches"] == 0 and s["accuracy"]["exact"] == s["accuracy"]["c"]


def test_a_model_the_datapath_cannot_run_reports_simulation_accuracy(cache: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """When the lowering refuses the model, QAT runs and the fast accuracy is reported; the refusal is recorded."""
    import quant
    from quant.lowering.lowerer import LoweringError

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise LoweringError("lower: cannot lower 'Example' to the integer datapath")

    monkeypatch.setattr(quant, "lower", refuse)  # experiments.run calls quant.lower
    s = run(config(cache, "data=mnist1d", "model=lstm", "model.width=16", "train.epochs=1", "method=qat_lsq",
                   "method.epochs=1", "logger=none"), tmp_path / "out")  # fmt: skip
    assert 0 <= s["accuracy"]["fast"] <= 1 and s["accuracy"]["exact"] is None and s["accuracy"]["c"] is None
    assert "cannot" in s["verification"]["not_lowered"] and s["verification"]["mismatches"] is None
    assert s["model_bytes"] > 0 and not (tmp_path / "out" / "program.npz").exists()


def test_the_weight_histograms_cover_every_quantized_tensor(cache: Path, tmp_path: Path) -> None:
    """An LSTM's weights are weight_ih_l0/weight_hh_l0, not one weight: each gets its histograms."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(config(cache, "data=mnist1d", "model=lstm", "model.width=16", "train.epochs=1", "verify_samples=16"),
        tmp_path / "h")  # fmt: skip
    events = EventAccumulator(str(tmp_path / "h" / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = set(events.Tags()["histograms"])
    for tensor in ("weight_ih_l0", "weight_hh_l0"):
        assert f"weights/lstm.{tensor}" in tags and f"weight_quantization_error/lstm.{tensor}" in tags
    assert "weights/fc" in tags
