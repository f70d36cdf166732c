"""Background noise made, not recorded: for the embedded corpus, and for any folder that has no noise of its own.

Five kinds, after the Speech Commands ``_background_noise_`` recordings: white, pink and brown
noise, a running tap (water: a quickly fluctuating band around 2.5 kHz) and mains hum (50 Hz
and harmonics over faint pink noise), each at -20 dBFS RMS. ``generated_noise`` is what
``SpeechCommandsData`` mixes into training clips when a dataset brings no recordings (real
folders often do not): fine-tuned on the 1,191 real clips of half A's training split with it,
the basic RNN kept its accuracy on clean dev clips and caught far more keywords in a noisy
stream (README, "Streaming").
"""

from __future__ import annotations

import numpy as np
import torch

from speechrnn.core.audio import SAMPLE_RATE, as_float, to_pcm16

NOISES = ("white_noise", "pink_noise", "brown_noise", "running_tap", "hum")


def make_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Background noise as int16, -20 dBFS RMS (less if its peak would clip): one of ``NOISES``."""
    freqs = np.fft.rfftfreq(num_samples, 1 / SAMPLE_RATE)
    f = np.maximum(freqs, 20.0)
    shape = {"white_noise": np.ones_like(f), "pink_noise": f ** -0.5, "brown_noise": f ** -1.0,
             "running_tap": np.exp(-0.5 * (np.log2(f / 2500) / 0.8) ** 2), "hum": f ** -0.5 * 0.05}
    if kind not in shape:
        raise ValueError(f"unknown noise {kind!r}: expected one of {NOISES}")
    spectrum = np.fft.rfft(rng.standard_normal(num_samples)) * shape[kind]
    x = np.fft.irfft(spectrum, num_samples)  # (S,)
    t = np.arange(num_samples) / SAMPLE_RATE
    if kind == "running_tap":  # water splashes: a quickly fluctuating envelope
        env = np.abs(np.fft.irfft(np.fft.rfft(rng.standard_normal(num_samples)) * (freqs < 8), num_samples))
        x *= 0.4 + env / env.mean()
    elif kind == "hum":  # mains hum: 50 Hz and harmonics over faint pink noise
        x = x / x.std() * 0.05 + sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    x *= min(0.1 / x.std(), 0.9 / np.abs(x).max())  # -20 dBFS RMS unless that would clip
    return to_pcm16(torch.from_numpy(x)).numpy()


def noise_recordings(seconds: float = 60.0, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(kind, int16 samples (S,))`` of each of ``NOISES``, ``seconds`` long at 16 kHz, the same for the same seed."""
    n = int(seconds * SAMPLE_RATE)
    return [(kind, make_noise(kind, n, np.random.default_rng([seed, 1, k]))) for k, kind in enumerate(NOISES)]


def generated_noise(seconds: float = 60.0, seed: int = 0) -> list[torch.Tensor]:
    """``noise_recordings`` as float32 ``(S,)`` in [-1, 1], as ``load_noise`` gives a dataset's recordings."""
    return [as_float(torch.from_numpy(x)) for _, x in noise_recordings(seconds, seed)]
