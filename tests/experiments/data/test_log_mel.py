"""The log-mel front end against an independent NumPy/SciPy framing and power spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from experiments.data.log_mel import hz_to_mel, log_mel_energies, mel_filterbank, mel_to_hz


def test_the_mel_scale_round_trips() -> None:
    hz = torch.tensor([0.0, 20.0, 700.0, 1000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(hz)), hz)
    assert abs(float(hz_to_mel(torch.tensor(1000.0, dtype=torch.float64))) - 1000.0) < 0.1  # the scale's anchor


def test_the_filters_are_triangles_that_sum_to_one_between_the_outer_centres() -> None:
    fb = mel_filterbank(40, 1024, 16000, 20.0, 8000.0).double()
    assert fb.shape == (40, 513) and bool((fb >= 0).all()) and bool((fb <= 1).all())
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(20.0))), float(hz_to_mel(torch.tensor(8000.0))), 42).double())
    bins = torch.arange(513, dtype=torch.float64) * 16000 / 1024
    inside = (bins >= edges[1]) & (bins <= edges[-2])
    assert torch.allclose(fb[:, inside].sum(0), torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-5)
    assert bool((fb[:, (bins < edges[0]) | (bins > edges[-1])] == 0).all())
    assert bool((fb.sum(1) > 0).all())  # no empty filter


def test_the_power_spectrum_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000).astype(np.float32) * 0.1
    window = get_window("hann", 640)  # periodic, SciPy's own definition
    frames = np.stack([audio[t * 320 : t * 320 + 640] for t in range(49)]).astype(np.float64)
    power = np.abs(np.fft.rfft(frames * window, n=1024)) ** 2
    fb = mel_filterbank(40, 1024, 16000, 20.0, 8000.0).double().numpy()
    expected = np.log(power @ fb.T + 1e-6).T
    got = log_mel_energies(torch.from_numpy(audio)).double().numpy()
    assert got.shape == (40, 49)
    assert np.max(np.abs(got - expected)) < 1e-4  # float32 FFT against float64


def test_a_tone_lands_in_its_band() -> None:
    t = torch.arange(16000, dtype=torch.float64) / 16000
    features = log_mel_energies(torch.sin(2 * torch.pi * 1000.0 * t).float())
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(20.0))), float(hz_to_mel(torch.tensor(8000.0))), 42))[1:-1]
    assert bool((features.argmax(0) == (centres - 1000.0).abs().argmin()).all())


def test_batches_and_frame_counts() -> None:
    assert log_mel_energies(torch.zeros(3, 16000)).shape == (3, 40, 49)
    assert log_mel_energies(torch.zeros(2, 8000), n_mels=20).shape == (2, 20, 24)
    with pytest.raises(ValueError, match="fewer than one frame"):
        log_mel_energies(torch.zeros(100))
    with pytest.raises(ValueError, match="float"):
        log_mel_energies(torch.zeros(16000, dtype=torch.int64))
