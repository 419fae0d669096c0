"""Spoken digits synthesized with espeak-ng and sox: parameters, the missing-tool error, caching, real clips."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from experiments.data import DatasetNotInstalledError, load_dataset, spoken_digits
from experiments.data.spoken_digits import CLIP_SAMPLES, Utterance, draw_utterances, synthesize


def test_the_parameters_follow_the_seed() -> None:
    a, b, c = draw_utterances(3, seed=1), draw_utterances(3, seed=1), draw_utterances(3, seed=2)
    assert a == b and a != c
    assert [u.label for u in a] == [w for w in range(10) for _ in range(3)]
    for u in draw_utterances(20, seed=0):
        voice, variant = u.voice.split("+")
        assert voice in spoken_digits.VOICES and variant in spoken_digits.VARIANTS
        assert 120 <= u.speed_wpm <= 200 and 0.88 <= u.tempo <= 1.12 and -6.0 <= u.gain_db <= 0.0 and 0.0 <= u.offset < 1.0


@pytest.mark.parametrize("missing", ["espeak-ng", "sox"])
def test_a_missing_tool_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str) -> None:
    def without(name: str) -> Optional[str]:
        return None if name == missing else f"/usr/bin/{name}"

    monkeypatch.setattr(shutil, "which", without)
    with pytest.raises(DatasetNotInstalledError, match=rf"{missing} is not installed.*make data.*apt-get install .*espeak-ng sox"):
        load_dataset("spoken_digits", variants_per_word=1, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DatasetNotInstalledError, match="espeak-ng and sox are not installed"):
        load_dataset("spoken_digits", variants_per_word=1, cache_dir=tmp_path, progress=False)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="variants_per_word=0"):
        load_dataset("spoken_digits", variants_per_word=0)
    with pytest.raises(ValueError, match="workers=0"):
        load_dataset("spoken_digits", workers=0)


def _fake_generate(utterances: list[Utterance], seed: int, workers: int, progress: bool) -> dict[str, np.ndarray]:
    """Stands in for espeak-ng and sox: features that depend on the label only."""
    labels = np.array([u.label for u in utterances], dtype=np.int64)
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((len(labels), 40, 49)).astype(np.float32) + labels[:, None, None]
    return {"features": features, "labels": labels}


def test_the_split_and_the_standardization(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spoken_digits, "_generate", _fake_generate)
    d = load_dataset("spoken_digits", variants_per_word=8, cache_dir=tmp_path)
    assert (d.name, d.num_classes, d.input_shape) == ("spoken_digits", 10, (40, 49))
    assert d.x_train.shape == (60, 40, 49) and d.x_test.shape == (20, 40, 49)
    assert torch.bincount(d.y_test).tolist() == [2] * 10
    assert torch.allclose(d.x_train.mean(dim=(0, 2)), torch.zeros(40), atol=1e-5)
    assert torch.allclose(d.x_train.std(dim=(0, 2)), torch.ones(40), atol=1e-5)


def test_the_second_load_reads_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spoken_digits, "_generate", _fake_generate)
    first = load_dataset("spoken_digits", variants_per_word=2, cache_dir=tmp_path)

    def refuse(*args: object) -> None:
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(spoken_digits, "_generate", refuse)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a cached set needs neither tool
    second = load_dataset("spoken_digits", variants_per_word=2, cache_dir=tmp_path)
    assert torch.equal(first.x_train, second.x_train)
    with pytest.raises(AssertionError, match="regenerated"):
        load_dataset("spoken_digits", variants_per_word=2, seed=1, cache_dir=tmp_path)


@pytest.mark.usefixtures("speech_tools_installed")
def test_a_clip_is_one_second_of_finite_audio() -> None:
    u = draw_utterances(1, seed=0)[7]
    clip = synthesize(u, seed=0, index=7)
    assert clip.shape == (CLIP_SAMPLES,) and clip.dtype == np.float32
    assert bool(np.isfinite(clip).all()) and 0.01 < float(np.abs(clip).max()) <= 1.5
    assert np.array_equal(clip, synthesize(u, seed=0, index=7))


@pytest.mark.usefixtures("speech_tools_installed")
def test_a_failing_tool_reports_its_command() -> None:
    bad = Utterance(label=0, voice="zzvoice", speed_wpm=150, pitch=50, tempo=1.0, pitch_cents=0, gain_db=0.0, snr_db=30.0, offset=0.5)
    with pytest.raises(RuntimeError, match="zzvoice"):
        synthesize(bad, seed=0, index=0)


@pytest.mark.usefixtures("speech_tools_installed")
def test_a_small_real_set_is_deterministic(tmp_path: Path) -> None:
    a = load_dataset("spoken_digits", variants_per_word=2, cache_dir=tmp_path / "a", progress=False)
    b = load_dataset("spoken_digits", variants_per_word=2, cache_dir=tmp_path / "b", progress=False, workers=1)
    c = load_dataset("spoken_digits", variants_per_word=2, seed=1, cache_dir=tmp_path / "a", progress=False)
    assert a.x_train.shape == (15, 40, 49) and a.x_test.shape == (5, 40, 49)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert set(torch.cat([a.y_train, a.y_test]).tolist()) == set(range(10))
    assert bool(torch.isfinite(a.x_train).all())
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
