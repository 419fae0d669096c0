"""A float log-mel front end for keyword spotting: framing, Hann window, power spectrum, mel bands, log.

For audio ``a`` of ``T`` samples at ``sample_rate`` Hz, frame ``t`` is
``a[t hop : t hop + frame_length]`` for ``t`` in ``[0, 1 + (T - frame_length) // hop)`` (no
padding), times a periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / frame_length)``; its
power spectrum is ``|rfft(frame, n_fft)|^2`` (``n_fft // 2 + 1`` bins, zero-padded, no
scaling). Mel energies are that spectrum times the triangular filterbank of
:func:`mel_filterbank`, and the features are ``log(energy + floor)``. With the defaults (16 kHz,
40 ms frames, 20 ms hop, 1024-point FFT, 40 bands from 20 Hz to 8 kHz) one second gives
``(40, 49)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "log_mel_energies"]


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """The HTK mel scale: ``2595 log10(1 + hz / 700)``."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`hz_to_mel`: ``700 (10^(mel / 2595) - 1)``."""
    return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular mel filters, float32 ``(n_mels, n_fft // 2 + 1)``, each peaking at 1.

    The ``n_mels + 2`` edges are equally spaced in mel from ``f_min`` to ``f_max``; filter
    ``m`` rises linearly (in Hz) from edge ``m`` to 1 at edge ``m + 1`` and falls to 0 at edge
    ``m + 2``, evaluated at the FFT bin frequencies ``k sample_rate / n_fft``.

    >>> fb = mel_filterbank(4, 16, 16000, 0.0, 8000.0)
    >>> fb.shape, bool((fb >= 0).all()), bool((fb <= 1).all())
    (torch.Size([4, 9]), True, True)
    """
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels={n_mels} must be >= 1 and n_fft={n_fft} >= 2")
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min={f_min} < f_max={f_max} <= sample_rate / 2 = {sample_rate / 2}")
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    edges = mel_to_hz(mels.to(torch.float64))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lo) / (centre - lo)
    falling = (hi - bins) / (hi - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def log_mel_energies(
    audio: torch.Tensor,
    sample_rate: int = 16000,
    *,
    n_mels: int = 40,
    frame_length: int = 640,
    hop_length: int = 320,
    n_fft: int = 1024,
    f_min: float = 20.0,
    f_max: float = 8000.0,
    floor: float = 1e-6,
) -> torch.Tensor:
    """Log mel energies, float32 ``(N, n_mels, frames)``, of float audio ``(N, T)`` (or ``(T,)``, giving ``(n_mels, frames)``).

    ``frames = 1 + (T - frame_length) // hop_length``; ``T >= frame_length`` and
    ``frame_length <= n_fft``.

    >>> log_mel_energies(torch.zeros(2, 16000)).shape
    torch.Size([2, 40, 49])
    """
    single = audio.dim() == 1
    batch = audio.unsqueeze(0) if single else audio
    if batch.dim() != 2 or not batch.is_floating_point():
        raise ValueError(f"audio must be float (N, T) or (T,), got {tuple(audio.shape)} {audio.dtype}")
    if not 0 < frame_length <= n_fft or hop_length < 1:
        raise ValueError(f"need 0 < frame_length={frame_length} <= n_fft={n_fft} and hop_length={hop_length} >= 1")
    if batch.shape[1] < frame_length:
        raise ValueError(f"audio has {batch.shape[1]} samples, fewer than one frame of {frame_length}")
    frames = batch.to(torch.float32).unfold(1, frame_length, hop_length)  # (N, frames, frame_length)
    n = torch.arange(frame_length, dtype=torch.float64)
    window = (0.5 - 0.5 * torch.cos(2.0 * math.pi * n / frame_length)).to(torch.float32)
    power = torch.fft.rfft(frames * window, n=n_fft).abs().square()  # (N, frames, n_fft // 2 + 1)
    energies = power @ mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max).T  # (N, frames, n_mels)
    features = torch.log(energies + floor).transpose(1, 2).contiguous()
    return features[0] if single else features
