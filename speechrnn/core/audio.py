"""Audio I/O: read any clip soundfile can decode as mono float32 at the model's rate.

torchaudio.load needs torchcodec and FFmpeg, so clips are read with soundfile;
torchaudio only resamples. Every failure becomes an ``AudioError`` whose message
is one line naming the file and the problem, so callers can report and skip it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechrnn.core.errors import SpeechRNNError

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".mp3")
WAVE_FORMAT_PCM, WAVE_FORMAT_EXTENSIBLE = 0x0001, 0xFFFE  # format tags of a wav's fmt chunk


class AudioError(SpeechRNNError, ValueError):
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
    return downmix_resample(data, rate, sample_rate)


def downmix_resample(data: np.ndarray, rate: int, sample_rate: int) -> torch.Tensor:
    """Samples ``(N, C)`` float32 at ``rate`` -> ``(N',)`` mono at ``sample_rate``: channels averaged, resampled."""
    wave = torch.from_numpy(data.mean(axis=1))  # (N,)
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    return wave


def is_wav(head: bytes) -> bool:
    """Whether ``head``, the first 12 bytes of a file or stream, open a RIFF/WAVE file."""
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def wav_stream_pcm16(stream: BinaryIO, sample_rate: int, chunk: int, name: str = "-") -> Iterator[torch.Tensor]:
    """A 16-bit PCM wav read from a pipe, as int16 chunks ``(<= chunk,)``, as ``load_pcm16`` reads a file.

    ``stream`` (e.g. ``sys.stdin.buffer``) is past the 12 bytes ``is_wav`` checked and need not
    seek. Each chunk is downmixed and rounded as soon as it arrives; a stream at another rate
    than ``sample_rate`` is read to its end and resampled whole, as a file is, so live
    recordings should be made at ``sample_rate``.

    Args:
        stream (BinaryIO): a buffered binary stream; ``read(n)`` returns fewer than ``n`` bytes only at its end.
        sample_rate (int): the rate to deliver.
        chunk (int): samples per chunk, at ``sample_rate``.
        name (str, optional): how errors name the stream. (Default: ``"-"``)

    Raises:
        AudioError: the header holds no fmt chunk before the audio, or the audio is not 16-bit PCM.
    """
    rate, channels, remaining = _wav_stream_format(stream, name)
    frame, parts = 2 * channels, []
    while data := stream.read(frame * chunk if remaining is None else min(frame * chunk, remaining)):
        remaining = None if remaining is None else remaining - len(data)
        pcm = np.frombuffer(data[: len(data) - len(data) % frame], "<i2").reshape(-1, channels)  # (n, C)
        samples = pcm.astype(np.float32) / 32768  # as soundfile reads 16-bit PCM
        if rate == sample_rate:
            yield to_pcm16(downmix_resample(samples, rate, sample_rate))
        else:
            parts.append(samples)
    if parts:
        yield from to_pcm16(downmix_resample(np.concatenate(parts), rate, sample_rate)).split(chunk)


def _wav_stream_format(stream: BinaryIO, name: str) -> tuple[int, int, int | None]:
    """Rate, channels and audio bytes (None: until the stream ends) of a wav stream, read up to its audio."""
    chunks, size = _chunks_before_audio(stream)
    if size is None:
        raise AudioError(name, "wav stream ends before its audio (no data chunk)")
    fmt = chunks.get(b"fmt ", b"")
    if len(fmt) < 16:
        raise AudioError(name, "wav stream has no fmt chunk before its audio")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID begins with the format tag
    if tag != WAVE_FORMAT_PCM or bits != 16 or not channels or not rate:
        raise AudioError(name, f"a wav stream is read only as 16-bit PCM, this one has format tag {tag} and {bits} "
                               "bits; give the file's path instead, or convert it (sox in.wav -b 16 -e signed out.wav)")
    return rate, channels, None if size in (0, 0xFFFFFFFF) else size  # streamed wavs declare 0 or 0xFFFFFFFF


def _wav_bytes_missing(path: Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete).

    libsndfile quietly reads what is there of a cut-off wav, so a half-copied clip would
    pass as a short one; the header's declared length tells them apart. Non-RIFF files and
    streamed wavs (length 0 or 0xFFFFFFFF, "unknown") are left to libsndfile.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        if not is_wav(f.read(12)):
            return 0
        _, declared = _chunks_before_audio(f)
        if declared is None or declared in (0, 0xFFFFFFFF):
            return 0
        return max(0, declared - (size - f.tell()))


def _chunks_before_audio(f: BinaryIO) -> tuple[dict[bytes, bytes], int | None]:
    """Walk a RIFF/WAVE file or stream, past its first 12 bytes, up to its audio.

    Returns the chunks before the ``data`` chunk (``{id: body}``, e.g. ``b"fmt "``) and the
    audio's declared byte count, ``f`` left at the audio's first byte; ``None`` when the
    file ends without a ``data`` chunk. Reads rather than seeks, so pipes work too.
    """
    chunks = {}
    while len(header := f.read(8)) == 8:
        size = int.from_bytes(header[4:], "little")
        if header[:4] == b"data":
            return chunks, size
        chunks[header[:4]] = f.read(size + (size & 1))  # chunks are padded to an even length
    return chunks, None



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
