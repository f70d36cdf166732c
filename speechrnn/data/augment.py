"""Training-only augmentation: the reference recipe's shift, background noise and SpecAugment,
and what makes clean synthetic speech sound recorded: speed perturbation and a simulated room
and microphone.

Waveform augmentation (``WaveAugment``, holding ``SpeedPerturb`` and ``RoomMic``) runs on a
training batch where it is collated (``speechrnn.data.datamodule.AugmentingCollate``: in a loader
worker, or in the training process); SpecAugment masks (``SpecAugment``) run on features inside
the training step. Evaluation never sees any of them. All draw from torch's global generator,
which the data module seeds per batch, so a batch's augmentation is a function of its position
in the run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn


class SpeedPerturb(nn.Module):
    """Play each clip faster or slower (tempo and pitch together, as Kaldi's speed perturbation):
    a shorter or longer vocal tract, a faster or slower talker.

    Each clip draws a factor from ``1 + {-max_change, ..., +max_change}`` in steps of ``step``
    and is resampled by it (torchaudio's windowed-sinc resampler, so speeding up does not
    alias); the result keeps the clip's start and is cut or zero-padded to its length.

    Args:
        max_change (float, optional): largest relative change, ``0`` turns it off. (Default: ``0.1``)
        step (float, optional): spacing of the factors; clips sharing one are resampled together. (Default: ``0.025``)
        sample_rate (int, optional): rate of the clips. (Default: ``16000``)

    Shapes:
        ``(B, N)`` -> ``(B, N)``.
    """

    def __init__(self, max_change: float = 0.1, step: float = 0.025, sample_rate: int = 16000):
        super().__init__()
        if not 0 <= max_change < 0.5 or step <= 0:
            raise ValueError(f"need 0 <= max_change < 0.5 and step > 0, got {max_change} and {step}")
        n = int(round(max_change / step))
        # rates as multiples of 100 Hz: a small gcd-reduced kernel per factor, computed once here
        # (torchaudio.functional.resample would compute it again for every batch)
        self.rates = [int(round(sample_rate * (1 + k * step) / 100)) * 100 for k in range(-n, n + 1)]
        self.resamplers = nn.ModuleList(torchaudio.transforms.Resample(r, sample_rate) for r in self.rates)
        self.sample_rate = sample_rate

    def forward(self, wave: Tensor) -> Tensor:
        B, N = wave.shape
        if len(self.rates) == 1:
            return wave
        pick = torch.randint(len(self.rates), (B,))  # (B,)
        out = torch.zeros_like(wave)
        if (kernel := self.resamplers[0].kernel).device != wave.device or kernel.dtype != wave.dtype:
            self.resamplers.to(wave.device, wave.dtype)  # once, not every batch
        for k in pick.unique().tolist():
            rows = (pick == k).nonzero().squeeze(1).to(wave.device)
            # played at rate r as if it were sample_rate: r > sample_rate is faster and higher
            moved = self.resamplers[k](wave[rows])  # (b, N')
            n = min(N, moved.shape[1])
            out[rows, :n] = moved[:, :n]
        return out


class RoomMic(nn.Module):
    """A simulated room and microphone: reverberation, band-limiting and spectral tilt, clipping.

    Real recordings of a keyword are reverberant and coloured by cheap microphones; a
    synthesiser's are dry and flat. Each clip, independently:

    - with ``reverb_prob``, is convolved with a generated room impulse response: the direct
      sound, then exponentially decaying noise whose decay time (RT60) is drawn from ``rt60``
      seconds and whose energy relative to the direct sound from ``drr_db`` (direct-to-reverberant
      ratio, dB);
    - with ``band_prob``, is filtered by a microphone response: a 2nd-order high-pass at a
      cut-off drawn from ``low_hz``, a 4th-order low-pass at one drawn from ``high_hz`` and a
      tilt of up to ``tilt_db`` dB per octave either way (zero-phase, applied in the FFT domain
      with the reverberation);
    - keeps its RMS level, and with ``clip_prob`` is driven into clipping by 6 to 20 dB.

    Args:
        reverb_prob (float, optional): share of clips with reverberation. (Default: ``0.5``)
        rt60 (tuple[float, float], optional): decay time range, seconds. (Default: ``(0.15, 0.8)``)
        drr_db (tuple[float, float], optional): direct-to-reverberant ratio range, dB. (Default: ``(-3, 12)``)
        band_prob (float, optional): share of clips through a microphone response. (Default: ``0.5``)
        low_hz (tuple[float, float], optional): high-pass cut-off range, Hz. (Default: ``(50, 400)``)
        high_hz (tuple[float, float], optional): low-pass cut-off range, Hz. (Default: ``(3000, 8000)``)
        tilt_db (float, optional): largest tilt, dB per octave around 1 kHz. (Default: ``3``)
        clip_prob (float, optional): share of clips clipped. (Default: ``0.0``)
        sample_rate (int, optional): rate of the clips. (Default: ``16000``)

    Shapes:
        ``(B, N)`` -> ``(B, N)``.
    """

    def __init__(self, reverb_prob: float = 0.5, rt60=(0.15, 0.8), drr_db=(-3.0, 12.0), band_prob: float = 0.5,
                 low_hz=(50.0, 400.0), high_hz=(3000.0, 8000.0), tilt_db: float = 3.0, clip_prob: float = 0.0,
                 sample_rate: int = 16000):
        super().__init__()
        for name, p in (("reverb_prob", reverb_prob), ("band_prob", band_prob), ("clip_prob", clip_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name, (lo, hi) in (("rt60", rt60), ("drr_db", drr_db), ("low_hz", low_hz), ("high_hz", high_hz)):
            if lo > hi:
                raise ValueError(f"{name} must be a (low, high) range, got ({lo}, {hi})")
        if min(*rt60, *low_hz, *high_hz) <= 0 or tilt_db < 0:
            raise ValueError("rt60, low_hz and high_hz must be > 0 and tilt_db >= 0")
        self.reverb_prob, self.band_prob, self.clip_prob = reverb_prob, band_prob, clip_prob
        self.rt60, self.drr_db, self.low_hz, self.high_hz = tuple(rt60), tuple(drr_db), tuple(low_hz), tuple(high_hz)
        self.tilt_db, self.sample_rate = tilt_db, sample_rate
        self.rir_len = int(sample_rate * min(0.5, max(rt60)))  # 0.5 s: a 0.8 s tail is 37 dB down by then

    @staticmethod
    def _uniform(B: int, bounds) -> Tensor:
        return bounds[0] + torch.rand(B) * (bounds[1] - bounds[0])  # (B,)

    def impulse_responses(self, B: int) -> Tensor:
        """``(B, L)`` room impulse responses: a unit direct sound then a decaying noise tail."""
        L, sr = self.rir_len, self.sample_rate
        t = torch.arange(1, L) / sr  # (L-1,) seconds after the direct sound
        rt60, drr = self._uniform(B, self.rt60), self._uniform(B, self.drr_db)
        tail = torch.randn(B, L - 1) * torch.exp(-6.9078 * t / rt60[:, None])  # (B, L-1), -60 dB at rt60
        tail *= torch.sqrt(10 ** (-drr[:, None] / 10) / tail.pow(2).sum(1, keepdim=True))  # tail energy = 10^(-DRR/10)
        return torch.cat([torch.ones(B, 1), tail], 1)  # (B, L)

    def mic_responses(self, B: int, freqs: Tensor) -> Tensor:
        """``(B, F)`` magnitude responses at ``freqs`` (Hz): high-pass x low-pass x tilt."""
        low, high = self._uniform(B, self.low_hz)[:, None], self._uniform(B, self.high_hz)[:, None]
        tilt = (torch.rand(B, 1) * 2 - 1) * self.tilt_db
        f = freqs.clamp(min=1.0)[None]  # (1, F)
        # tilt dB/octave around 1 kHz, a 2nd-order Butterworth high-pass and a 4th-order low-pass, as magnitudes
        # (10^(dB/20) as one exp; squares and one rsqrt rather than pow and log10: this runs every batch)
        tilted = torch.exp(tilt * torch.log2(f / 1000) * (math.log(10) / 20))  # (B, F)
        high_pass, low_pass = (low / f).square().square(), (f / high).square().square().square()
        return tilted * torch.rsqrt((1 + high_pass) * (1 + low_pass))

    def forward(self, wave: Tensor) -> Tensor:
        B, N = wave.shape
        reverb = torch.rand(B) < self.reverb_prob  # (B,)
        band = torch.rand(B) < self.band_prob
        clip = torch.rand(B) < self.clip_prob
        if not (reverb.any() or band.any() or clip.any()):
            return wave
        n_fft = -(-(N + self.rir_len) // 2000) * 2000  # linear convolution; 2^4 * 5^3 keeps the FFT fast
        response = None  # (B, F): the room's, the microphone's, or their product
        if reverb.any():
            rir = self.impulse_responses(B)  # (B, L)
            rir[~reverb, 1:] = 0  # the direct sound alone: a dry clip
            response = torch.fft.rfft(rir, n_fft)
        if band.any():
            mic = self.mic_responses(B, torch.fft.rfftfreq(n_fft, 1 / self.sample_rate))  # (B, F)
            mic[~band] = 1.0  # a flat microphone
            response = mic if response is None else response * mic
        x = wave
        if response is not None:
            x = torch.fft.irfft(torch.fft.rfft(wave, n_fft) * response.to(wave.device), n_fft)[:, :N]  # (B, N)
            level = wave.pow(2).mean(1, keepdim=True).sqrt() / x.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-8)
            x = x * level
        if clip.any():
            drive = (10 ** ((6 + 14 * torch.rand(B, 1)) / 20)).to(x.device)  # (B, 1), drawn on the CPU as the rest
            peak = x.abs().amax(1, keepdim=True).clamp(min=1e-8)
            clipped = (x * drive / peak).clamp(-1, 1) * peak / drive
            x = torch.where(clip[:, None].to(x.device), clipped, x)
        return x.clamp(-1, 1)


class WaveAugment(nn.Module):
    """Speed perturbation, a simulated room and microphone, random time shift and background-noise
    mixing of a batch of clips, in that order (the noise is not reverberated: it is the room's own).

    Args:
        shift_ms (float, optional): shift uniformly in [-shift_ms, shift_ms], zero-filled. (Default: ``100``)
        noise_prob (float, optional): probability a clip gets background noise. (Default: ``0.8``)
        noise_volume (float, optional): noise gain drawn uniformly in [0, noise_volume]. (Default: ``0.1``)
        sample_rate (int, optional): rate of the clips. (Default: ``16000``)
        place (bool, optional): a clip that ends in more than ``shift_ms`` of digital silence
            (the zero padding of a clip shorter than the window) is shifted by a draw from
            [-shift_ms, its padding] instead: the word then ends anywhere in the window, as in a
            stream, not always near its start. Clips without such padding draw as without it,
            from the same random numbers. (Default: ``False``)
        speed (float, optional): ``SpeedPerturb``'s ``max_change``; ``0`` turns it off. (Default: ``0``)
        room (dict, optional): ``RoomMic`` arguments; ``None`` turns it off. (Default: ``None``)

    Shapes:
        ``(B, N)`` clips and ``(K, M)`` noise (``M >= N``) -> ``(B, N)``.
    """

    def __init__(self, shift_ms: float = 100.0, noise_prob: float = 0.8, noise_volume: float = 0.1,
                 sample_rate: int = 16000, place: bool = False, speed: float = 0.0, room: dict | None = None):
        super().__init__()
        self.speed = SpeedPerturb(speed, sample_rate=sample_rate) if speed else None
        self.room = RoomMic(**room, sample_rate=sample_rate) if room is not None else None
        if shift_ms < 0 or not 0 <= noise_prob <= 1 or noise_volume < 0:
            raise ValueError(f"need shift_ms >= 0, 0 <= noise_prob <= 1, noise_volume >= 0; got "
                             f"{shift_ms}, {noise_prob}, {noise_volume}")
        self.shift = int(sample_rate * shift_ms / 1000)
        self.noise_prob, self.noise_volume, self.place = noise_prob, noise_volume, place

    def forward(self, wave: Tensor, noise: Tensor | None = None) -> Tensor:
        B, N = wave.shape
        if self.speed is not None:
            wave = self.speed(wave)
        if self.room is not None:
            wave = self.room(wave)
        # per-clip slices of padded copies: ~10x cheaper than gathering with (B, N) index tensors
        if self.shift or self.place:
            shift = torch.randint(-self.shift, self.shift + 1, (B,))  # (B,)
            if self.place:
                padding = (wave != 0).flip(-1).int().argmax(-1).cpu()  # (B,) trailing zeros (0 for a silent clip)
                far = padding > self.shift
                if far.any():  # drawn only then, so clips without padding keep the random stream of place=False
                    span = padding[far] + self.shift + 1
                    shift[far] = (torch.rand(len(span)) * span).long() - self.shift
            shift, reach = shift.tolist(), int(shift.abs().max())
            padded = F.pad(wave, (reach, reach))  # (B, N + 2 * reach), zeros outside the clip
            wave = torch.stack([padded[b, reach - s: reach - s + N] for b, s in enumerate(shift)])
        if noise is not None and len(noise) and self.noise_prob > 0:
            k = torch.randint(len(noise), (B,)).tolist()
            start = (torch.rand(B) * (noise.shape[1] - N)).long().tolist()
            clips = torch.stack([noise[i, s: s + N] for i, s in zip(k, start)])  # (B, N)
            gain = torch.rand(B, 1) * self.noise_volume * (torch.rand(B, 1) < self.noise_prob)
            wave = (wave + gain.to(wave.device) * clips).clamp(-1, 1)
        return wave


class SpecAugment(nn.Module):
    """Time and frequency masks on MFCC frames (Park et al., 2019).

    Args:
        freq_masks (int, optional): number of frequency masks. (Default: ``2``)
        freq_width (int, optional): largest frequency mask, in coefficients. (Default: ``5``)
        time_masks (int, optional): number of time masks. (Default: ``2``)
        time_width (int, optional): largest time mask, in 10 ms frames (masks apply before stacking). (Default: ``2``)

    Shapes:
        ``(B, T, F)`` -> ``(B, T, F)``.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 5, time_masks: int = 2, time_width: int = 2):
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width) < 0:
            raise ValueError("SpecAugment mask counts and widths must be >= 0")
        self.masks = nn.ModuleList(
            [torchaudio.transforms.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks if freq_width else 0)]
            + [torchaudio.transforms.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks if time_width else 0)])

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)  # (B, F, T), the layout torchaudio's masks expect
        for mask in self.masks:
            x = mask(x)
        return x.transpose(1, 2)
