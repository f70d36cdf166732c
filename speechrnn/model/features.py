"""The MFCC frontend: waveform -> normalised MFCC frames, as part of the model.

It lives inside the model (as in NeMo and SpeechBrain) so that its settings and
the normalisation statistics travel in the checkpoint, and ``transcribe`` on a
raw clip computes exactly the training features.

Frames are computed with ``center=False``: frame t covers samples
[t * hop, t * hop + win), so features of a stream can be produced chunk by chunk
with the same result as the whole clip (see ``speechrnn.inference.streaming``). For the same
reason the dB scale has no ``top_db`` clamp, which would depend on the whole clip.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torchaudio
from torch import Tensor, nn


def deltas(x: Tensor) -> Tensor:
    """Deltas along time of ``(B, T, C)``: (2 x[t+2] + x[t+1] - x[t-1] - 2 x[t-2]) / 10, edges repeated.

    The numbers of ``torchaudio.functional.compute_deltas`` (5-frame window), written as
    shifted differences because its grouped convolution has no ONNX form for a free batch size.
    """
    p = torch.cat([x[:, :1], x[:, :1], x, x[:, -1:], x[:, -1:]], dim=1)  # (B, T + 4, C)
    return (2 * (p[:, 4:] - p[:, :-4]) + (p[:, 3:-1] - p[:, 1:-3])) / 10


# features.cmn as configs and checkpoints spell it -> the mode MFCC.cmn holds
CMN_MODES = {False: None, True: "clip", "clip": "clip", "causal": "causal"}


class MFCC(nn.Module):
    """Mel-frequency cepstral coefficients with per-coefficient normalisation.

    Args:
        sample_rate (int, optional): input rate in Hz. (Default: ``16000``)
        n_mfcc (int, optional): cepstral coefficients per frame. (Default: ``40``)
        win_ms (float, optional): analysis window in ms. (Default: ``30``)
        hop_ms (float, optional): frame hop in ms. (Default: ``10``)
        n_mels (int, optional): mel bands. (Default: ``40``)
        f_min (float, optional): lowest mel frequency in Hz. (Default: ``20``)
        f_max (float, optional): highest mel frequency in Hz. (Default: ``7600``)
        deltas (int, optional): 0 (none), 1 (add deltas) or 2 (add deltas and delta-deltas). (Default: ``0``)
        stack (int, optional): consecutive frames concatenated into one RNN step, which
            shortens the sequence the RNN must carry gradients through. (Default: ``1``)
        normalize (bool, optional): subtract the training mean and divide by the
            training std of each coefficient (see ``fit_normalization``). (Default: ``True``)
        floor_db (float, optional): lowest mel energy in dB (ref 1, as librosa's ``amin``):
            digital silence (zero padding) sits here, far below any recorded noise floor
            when it is -100. (Default: ``-100``)
        cmn (bool or str, optional): also subtract a mean of the clip's own frames per
            coefficient (cepstral mean normalisation), which removes a fixed channel or
            microphone colouring. ``False``: none. ``"clip"`` (or ``True``, as older
            checkpoints store it): the mean of the frames the steps use; it needs the whole
            clip, so such a model streams by classifying whole windows. ``"causal"``: frame j
            minus the running mean of frames 0..j (see ``subtract_running_mean``), so a
            model streams frame by frame. (Default: ``False``)
        cmn_prior (float, optional): with ``cmn="causal"``, frames of value 0 (the training
            mean, after ``normalize``) the running mean starts from, so the first frames of a
            clip are barely shifted by their own noisy mean. (Default: ``10``)

    Shapes:
        ``(B, N)`` waveform -> ``(B, T, F)`` with ``T = num_frames(N)`` and ``F = dim``.

    Example:
        >>> mfcc = MFCC(n_mfcc=20, stack=4)
        >>> mfcc(torch.randn(2, 16000)).shape
        torch.Size([2, 24, 80])
    """

    def __init__(self, sample_rate: int = 16000, n_mfcc: int = 40, win_ms: float = 30.0,
                 hop_ms: float = 10.0, n_mels: int = 40, f_min: float = 20.0,
                 f_max: float = 7600.0, deltas: int = 0, stack: int = 1, normalize: bool = True,
                 floor_db: float = -100.0, cmn: bool | str = False, cmn_prior: float = 10.0):
        super().__init__()
        if n_mfcc < 1 or n_mels < n_mfcc:
            raise ValueError(f"need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
        if not 0 < hop_ms <= win_ms:
            raise ValueError(f"need 0 < hop_ms <= win_ms, got hop_ms={hop_ms}, win_ms={win_ms}")
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2 = {sample_rate / 2}, got f_min={f_min}, f_max={f_max}")
        if deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {deltas}")
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        if cmn not in CMN_MODES:
            raise ValueError(f"cmn must be false, true, 'clip' or 'causal', got {cmn!r}")
        if not cmn_prior >= 0:
            raise ValueError(f"cmn_prior must be >= 0 frames, got {cmn_prior}")
        # the arguments, as MFCC(**settings) takes them: exported models carry them in their metadata
        self.settings = dict(sample_rate=sample_rate, n_mfcc=n_mfcc, win_ms=win_ms, hop_ms=hop_ms, n_mels=n_mels,
                             f_min=f_min, f_max=f_max, deltas=deltas, stack=stack, normalize=normalize,
                             floor_db=floor_db, cmn=cmn, cmn_prior=cmn_prior)
        self.sample_rate, self.n_mfcc, self.deltas, self.stack = sample_rate, n_mfcc, deltas, stack
        self.normalize, self.floor_db = normalize, float(floor_db)
        self.cmn, self.cmn_prior = CMN_MODES[cmn], float(cmn_prior)  # None, "clip" or "causal"
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        self.n_mels, self.f_min, self.f_max = n_mels, f_min, f_max
        # n_fft = window, so with center=False frame t covers exactly [t * hop, t * hop + win).
        # The power spectrum and mel projection are written out rather than calling
        # torchaudio's MelSpectrogram, which costs ~3x more per batch on CPU for the same numbers.
        # rebuilt from the settings, so not saved: only mean/std (and dct) are checkpoint state
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("fbank", torchaudio.functional.melscale_fbanks(
            self.win_length // 2 + 1, f_min, f_max, n_mels, sample_rate, norm=None, mel_scale="htk"),
            persistent=False)  # (K, M)
        self.register_buffer("dct", torchaudio.functional.create_dct(n_mfcc, n_mels, "ortho"))  # (M, C)
        self.register_buffer("mean", torch.zeros(n_mfcc))
        self.register_buffer("std", torch.ones(n_mfcc))

    @property
    def dim(self) -> int:
        """Features per RNN step."""
        return self.n_mfcc * (1 + self.deltas) * self.stack

    def frames(self, num_samples: int) -> int:
        """Complete 10 ms frames in ``num_samples`` (before stacking): frame t covers [t * hop, t * hop + win)."""
        return max(0, 1 + (num_samples - self.win_length) // self.hop_length)

    def num_frames(self, num_samples: int) -> int:
        """RNN steps for a clip of ``num_samples`` (after stacking)."""
        return self.frames(num_samples) // self.stack

    def normalise(self, c: Tensor) -> Tensor:
        """Cepstra ``(..., n_mfcc)`` minus the training mean, over the training std (if ``normalize``)."""
        return (c - self.mean) / self.std if self.normalize else c

    def stack_frames(self, x: Tensor) -> Tensor:
        """``stack`` consecutive frames per RNN step: ``(..., T0, F0)`` -> ``(..., T0 // stack, F0 * stack)``.

        The offline and the streaming frontend both end here; fewer than ``stack`` frames left over are dropped."""
        T = x.shape[-2] // self.stack
        return x[..., : T * self.stack, :].reshape(*x.shape[:-2], T, x.shape[-1] * self.stack)

    def cepstra(self, wave: Tensor) -> Tensor:
        """Un-normalised MFCC frames: ``(B, N)`` -> ``(B, T0, n_mfcc)``."""
        if wave.shape[-1] < self.win_length:
            raise ValueError(f"need at least {self.win_length} samples for one frame, got {wave.shape[-1]}")
        spec = torch.stft(wave, self.win_length, self.hop_length, self.win_length, self.window,
                          center=False, return_complex=True).abs().pow(2)  # (B, K, T0) power
        mel = spec.transpose(-1, -2) @ self.fbank  # (B, T0, M)
        db = 10.0 * torch.log10(mel.clamp_min(10.0 ** (self.floor_db / 10)))  # power to dB, ref 1, no top_db
        return db @ self.dct  # (B, T0, C)

    def forward(self, wave: Tensor, mask: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Waveform ``(B, N)`` -> steps ``(B, T, F)``; ``mask`` (SpecAugment) sees frames before stacking."""
        x = self.normalise(self.cepstra(wave))  # (B, T0, C)
        if self.cmn == "clip":  # minus the mean of the frames the steps use (not the < stack left over)
            x = x - x[:, : x.shape[1] // self.stack * self.stack].mean(dim=1, keepdim=True)  # (B, T0, C)
        if mask is not None:
            x = mask(x)
        if self.deltas:
            parts = [x]
            for _ in range(self.deltas):
                parts.append(deltas(parts[-1]))  # d1 from x, d2 from d1
            x = torch.cat(parts, dim=-1)  # (B, T0, C * (1 + deltas))
        if self.cmn == "causal":
            x, _ = self.subtract_running_mean(x)
        return self.stack_frames(x)  # (B, T, F * stack)

    def subtract_running_mean(self, x: Tensor, total: Tensor | float = 0.0,
                              seen: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """Causal mean normalisation (``cmn="causal"``): frame j's cepstra minus the mean of frames 0..j.

        Frame j has ``m_j = (total + x_0 + ... + x_j) / (cmn_prior + seen + j + 1)`` subtracted
        from its ``n_mfcc`` cepstra: the clip's frames so far and ``cmn_prior`` frames of 0, so
        early frames are barely shifted and late ones lose nearly the whole clip's mean. Deltas
        (the rest of each frame) are left alone: a fixed channel offset has no deltas, and so
        every frame before this is shared by all the windows a stream overlaps, while the running
        mean, which restarts with each window, is the only per-window part
        (``speechrnn.inference.streaming.RunningMean``). It comes after SpecAugment's masks, so a
        masked frame counts as a frame of the training mean.

        Args:
            x (Tensor): frames ``(..., T0, D)``, the ``n_mfcc`` cepstra first.
            total (Tensor or float, optional): sum of the cepstra of the frames before ``x``,
                ``(..., 1, n_mfcc)``, when a stream carries them over. (Default: ``0``)
            seen (Tensor or float, optional): how many frames ``total`` sums, ``(..., 1, 1)``. (Default: ``0``)

        Returns:
            ``x`` with the running means subtracted ``(..., T0, D)``, and the new ``total`` ``(..., 1, n_mfcc)``.
        """
        c = x[..., : self.n_mfcc]  # (..., T0, C)
        sums = total + c.cumsum(dim=-2)  # (..., T0, C): frames 0..j
        counts = self.cmn_prior + seen + torch.arange(1, c.shape[-2] + 1, dtype=x.dtype, device=x.device)[:, None]
        total = total + c.sum(dim=-2, keepdim=True)  # (..., 1, C), also for T0 = 0 frames
        return torch.cat([c - sums / counts, x[..., self.n_mfcc:]], dim=-1), total  # (..., T0, D)

    @torch.no_grad()
    def fit_normalization(self, waves: Iterable[Tensor]) -> None:
        """Set ``mean`` and ``std`` per coefficient from batches of training waveforms ``(B, N)``."""
        total, sq, count = 0.0, 0.0, 0
        for wave in waves:
            x = self.cepstra(wave.to(self.dct.device)).double().reshape(-1, self.n_mfcc)
            total, sq, count = total + x.sum(0), sq + (x * x).sum(0), count + x.shape[0]
        if count == 0:
            raise ValueError("fit_normalization got no audio")
        mean = total / count
        std = (sq / count - mean * mean).clamp_min(1e-8).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
