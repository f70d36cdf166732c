"""Audio I/O: read any clip soundfile can decode as mono float32 at the model's rate.

torchaudio.load needs torchcodec and FFmpeg, so clips are read with soundfile;
torchaudio only resamples. Every failure becomes an ``AudioError`` whose message
is one line naming the file and the problem, so callers can report and skip it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechrnn.labels import BACKGROUND_NOISE_DIR

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3")


class AudioError(ValueError):
    """A clip that cannot be used; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def as_float(samples: torch.Tensor) -> torch.Tensor:
    """Samples as float32 in [-1, 1]: int16 PCM is divided by 32768 (as soundfile reads it), floats pass."""
    if samples.dtype == torch.int16:
        return samples.float() / 32768.0
    return samples.float()


def to_pcm16(wave: torch.Tensor) -> torch.Tensor:
    """Float samples in [-1, 1] -> int16 PCM, as the decoded-audio cache stores every training clip.

    Clamped, times 32767 and rounded (``as_float`` reads it back as / 32768). Inference reads
    clips through the same rounding (``load_pcm16``), because it is not harmless: int16 rounding
    leaves a noise floor near -100 dB, where the log-mel floor sits, and a clip resampled in
    float keeps bands far below it (an 8 kHz clip's empty 4-8 kHz), so the same clip gave other
    features: one FSDD model scored 84.3 % on float reads of its test clips, 89.0 % through the cache.
    """
    return (wave.clamp(-1, 1) * 32767).round().to(torch.int16)


def load_pcm16(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``load_audio`` rounded to int16 PCM by ``to_pcm16``: a clip exactly as training saw it, ``(num_samples,)``."""
    return to_pcm16(load_audio(path, sample_rate))


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read a clip as a mono float32 waveform at ``sample_rate``.

    Args:
        path (str | Path): any file soundfile reads (wav, flac, ogg, ...), any rate, any channels.
        sample_rate (int, optional): rate to resample to. (Default: ``16000``)

    Returns:
        Tensor: ``(num_samples,)`` in [-1, 1]; channels are averaged.

    Raises:
        AudioError: empty, unreadable, truncated or non-finite audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    missing = _wav_bytes_missing(path)
    if missing:
        raise AudioError(path, f"truncated wav: {missing} bytes of the audio its header declares are missing")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).replace("\n", " ").replace(f"Error opening {str(path)!r}: ", "")
        raise AudioError(path, f"not readable audio ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no samples (zero-length audio)")
    if not np.isfinite(data).all():
        raise AudioError(path, "audio has NaN or infinite samples")
    wave = torch.from_numpy(data.mean(axis=1))  # (N,)
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    return wave


def _wav_bytes_missing(path: Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete).

    libsndfile quietly reads what is there of a cut-off wav, so a half-copied clip would
    pass as a short one; the header's declared length tells them apart. Non-RIFF files and
    streamed wavs (length 0 or 0xFFFFFFFF, "unknown") are left to libsndfile.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return 0
        while (chunk := f.read(8)) and len(chunk) == 8:
            declared = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return 0 if declared in (0, 0xFFFFFFFF) else max(0, declared - (size - f.tell()))
            f.seek(declared + (declared & 1), 1)  # chunks are padded to an even length
    return 0


def load_noise(root: Path, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """The ``_background_noise_`` clips of a dataset (unreadable ones reported and skipped)."""
    return load_noise_dir(root / BACKGROUND_NOISE_DIR, sample_rate)


def load_noise_dir(folder: Path, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """The ``.wav`` recordings in a folder of noise (unreadable ones reported and skipped)."""
    noise = []
    for path in sorted(folder.glob("*.wav")):
        try:
            noise.append(load_audio(path, sample_rate))
        except AudioError as err:
            log.warning("skipping background noise %s", err)
    return noise


ALIGNMENTS = ("start", "centre", "end")


def fix_length(wave: torch.Tensor, num_samples: int, align: str = "start") -> torch.Tensor:
    """Crop to the first ``num_samples`` or zero-pad to exactly ``num_samples`` (last dimension).

    ``align`` says where a shorter clip sits: ``"start"`` (padding after it, as Speech Commands
    and training lay clips out), ``"centre"`` or ``"end"`` (padding before it).
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    n = wave.shape[-1]
    if n >= num_samples:
        return wave[..., :num_samples]
    before = {"start": 0, "centre": (num_samples - n) // 2, "end": num_samples - n}[align]
    return torch.nn.functional.pad(wave, (before, num_samples - n - before))


def find_audio(path: str | Path) -> list[Path]:
    """Audio files under a folder (recursive, sorted), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
