"""Synthetic spoken digits: "zero".."nine" said by espeak-ng, varied by sox, as log-mel features.

Each clip draws, with ``numpy.random.default_rng(seed)``, an espeak-ng voice (one of
:data:`VOICES` with one of the :data:`VARIANTS`, e.g. ``en-gb-scotland+f3``), a speed (words per
minute) and a base pitch, then sox effects: a tempo change (WSOLA, speech mode), a pitch
shift in cents and a gain in dB; sox also resamples espeak-ng's 22.05 kHz output to 16 kHz
mono float. The word's samples (where ``|a| > 2 %`` of the peak) are placed at a random
offset in a one-second clip (cropped about their middle when longer), and white noise is
added at a random signal-to-noise ratio. The noise is drawn here from a generator seeded
with ``(seed, clip)``: sox's own noise generator is seeded either by the clock or, with
``-R``, by one constant, so it could not be made to follow ``seed``.

The features are :func:`experiments.data.log_mel.log_mel_energies` of each clip, 40 bands x
49 frames (40 ms frames, 20 ms hop), standardized per band with the training split's mean
and standard deviation. Generation runs two subprocesses a clip (about 30 ms); the raw
features are cached (``experiments.data.cache``) keyed by every generation argument, so
only the first load with given arguments runs espeak-ng and sox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from experiments.data.cache import PathLike, load_or_generate
from experiments.data.dataset import Dataset, DatasetNotInstalledError
from experiments.data.log_mel import log_mel_energies
from experiments.data.split import stratified_split

__all__ = ["INSTALL_COMMAND", "Utterance", "VARIANTS", "VOICES", "WORDS", "draw_utterances", "load_spoken_digits", "synthesize"]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng's own English voices (the mbrola ones need the separate mbrola program).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
INSTALL_COMMAND = "make data (as root: apt-get install --no-install-recommends espeak-ng sox)"
_FORMAT = 1  # bump when generation changes in a way the key below does not show
# Ranges the clip parameters are drawn from, uniformly (both ends included for the integers).
_INT_RANGES: dict[str, tuple[int, int]] = {"speed_wpm": (120, 200), "pitch": (25, 75), "pitch_cents": (-150, 150)}
_FLOAT_RANGES: dict[str, tuple[float, float]] = {"tempo": (0.88, 1.12), "gain_db": (-6.0, 0.0), "snr_db": (15.0, 35.0)}
_FRONT_END: dict[str, Any] = {
    "n_mels": 40, "frame_length": 640, "hop_length": 320, "n_fft": 1024, "f_min": 20.0, "f_max": 8000.0, "floor": 1e-6,
}  # fmt: skip
_ONSET_FRACTION = 0.02


@dataclass(frozen=True)
class Utterance:
    """One clip's parameters: the word's label, espeak-ng's voice, speed and pitch, the sox effects,
    the noise level and where the word sits in the clip (``offset`` in [0, 1) of the free space)."""

    label: int
    voice: str
    speed_wpm: int
    pitch: int
    tempo: float
    pitch_cents: int
    gain_db: float
    snr_db: float
    offset: float


def draw_utterances(variants_per_word: int, seed: int) -> list[Utterance]:
    """``variants_per_word`` clips of each word, word-major, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    out = []

    def integer(name: str) -> int:
        low, high = _INT_RANGES[name]
        return int(rng.integers(low, high, endpoint=True))

    def uniform(name: str, decimals: int) -> float:
        return round(float(rng.uniform(*_FLOAT_RANGES[name])), decimals)

    for label in range(len(WORDS)):
        for _ in range(variants_per_word):
            out.append(
                Utterance(
                    label=label,
                    voice=f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}",
                    speed_wpm=integer("speed_wpm"),
                    pitch=integer("pitch"),
                    tempo=uniform("tempo", 3),
                    pitch_cents=integer("pitch_cents"),
                    gain_db=uniform("gain_db", 2),
                    snr_db=uniform("snr_db", 2),
                    offset=round(float(rng.uniform(0.0, 1.0)), 4),
                )
            )
    return out


def _tools() -> tuple[str, str]:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        missing = [name for name, path in (("espeak-ng", espeak), ("sox", sox)) if path is None]
        raise DatasetNotInstalledError(
            f"spoken_digits generates its audio with espeak-ng and sox, and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; "
            f"install with {INSTALL_COMMAND}"
        )
    return espeak, sox


def _run(command: Sequence[str], stdin: Optional[bytes] = None) -> bytes:
    done = subprocess.run(list(command), input=stdin, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def synthesize(u: Utterance, seed: int, index: int, tools: Optional[tuple[str, str]] = None) -> np.ndarray:
    """The clip for ``u``: float32 ``(CLIP_SAMPLES,)`` at 16 kHz, the noise seeded with ``(seed, index)``."""
    espeak, sox = tools if tools is not None else _tools()
    wav = _run([espeak, "-v", u.voice, "-s", str(u.speed_wpm), "-p", str(u.pitch), "--stdout", WORDS[u.label]])
    raw = _run(
        [sox, "-R", "-V1", "-t", "wav", "-",
         "-t", "raw", "-e", "floating-point", "-b", "32", "--endian", "little", "-c", "1", "-r", str(SAMPLE_RATE), "-",
         "tempo", "-s", f"{u.tempo}", "pitch", str(u.pitch_cents), "gain", f"{u.gain_db}", "rate", str(SAMPLE_RATE)],
        wav,
    )  # fmt: skip
    speech = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    loud = np.flatnonzero(np.abs(speech) > _ONSET_FRACTION * float(np.abs(speech).max()))
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {u}")
    speech = speech[loud[0] : loud[-1] + 1]
    if len(speech) > CLIP_SAMPLES:
        start = (len(speech) - CLIP_SAMPLES) // 2
        speech = speech[start : start + CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    start = int(u.offset * (CLIP_SAMPLES - len(speech)))
    clip[start : start + len(speech)] = speech
    noise_rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64)) / 10.0 ** (u.snr_db / 10.0)))
    noise = np.random.default_rng([seed, index]).standard_normal(CLIP_SAMPLES) * noise_rms
    return (clip + noise).astype(np.float32)


def _generate(utterances: Sequence[Utterance], seed: int, workers: int, progress: bool) -> dict[str, np.ndarray]:
    tools = _tools()
    clips = np.zeros((len(utterances), CLIP_SAMPLES), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(utterances), desc="spoken_digits: espeak-ng + sox", unit="clip", leave=False, disable=not progress
    ) as bar:
        for i, clip in enumerate(pool.map(lambda iu: synthesize(iu[1], seed, iu[0], tools), enumerate(utterances))):
            clips[i] = clip
            bar.update()
    features = log_mel_energies(torch.from_numpy(clips), SAMPLE_RATE, **_FRONT_END)
    return {
        "features": features.numpy(),
        "labels": np.array([u.label for u in utterances], dtype=np.int64),
        "utterances": np.asarray(json.dumps([asdict(u) for u in utterances])),
    }


def load_spoken_digits(
    *,
    seed: int = 0,
    variants_per_word: int = 30,
    test_fraction: float = 0.25,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
    workers: Optional[int] = None,
) -> Dataset:
    """Spoken digits: ``x`` float32 ``(N, 40, 49)`` (mel bands x frames), standardized; ``y`` int64 in [0, 10).

    ``N = 10 variants_per_word`` clips (300 by default), split stratified by word with
    ``seed``, ``test_fraction`` of them held out (225 training, 75 test by default). Each
    band is standardized with the training clips' mean and standard deviation over clips
    and frames. The same ``seed`` gives the same clips. ``workers`` subprocess pipelines run
    at once (the CPU count by default); ``progress`` shows a tqdm bar while generating.
    ``DatasetNotInstalledError`` names the install command when espeak-ng or sox is missing
    and the features are not cached.
    """
    if variants_per_word < 1:
        raise ValueError(f"variants_per_word={variants_per_word} must be at least 1")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise ValueError(f"workers={workers} must be at least 1")
    utterances = draw_utterances(variants_per_word, seed)
    key = {
        "format": _FORMAT,
        "seed": seed,
        "variants_per_word": variants_per_word,
        "words": WORDS,
        "voices": VOICES,
        "variants": VARIANTS,
        "ranges": {**_INT_RANGES, **_FLOAT_RANGES},
        "onset_fraction": _ONSET_FRACTION,
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "front_end": _FRONT_END,
    }
    arrays = load_or_generate("spoken_digits", key, lambda: _generate(utterances, seed, n_workers, progress), cache_dir)
    features = torch.from_numpy(np.ascontiguousarray(arrays["features"], dtype=np.float32))
    labels = torch.from_numpy(np.ascontiguousarray(arrays["labels"], dtype=np.int64))
    train, test = (torch.from_numpy(i) for i in stratified_split(arrays["labels"], test_fraction, seed))
    mean = features[train].mean(dim=(0, 2), keepdim=True)
    std = features[train].std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
    x = (features - mean) / std
    return Dataset(
        name="spoken_digits",
        x_train=x[train],
        y_train=labels[train],
        x_test=x[test],
        y_test=labels[test],
        num_classes=len(WORDS),
        input_shape=(int(_FRONT_END["n_mels"]), int(features.shape[2])),
    )
