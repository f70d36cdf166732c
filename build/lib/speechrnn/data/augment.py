"""Training-only augmentation, as in the reference recipe: shift, background noise, SpecAugment.

Waveform augmentation (``WaveAugment``) runs on a batch in the data module's
``on_after_batch_transfer``; SpecAugment masks (``SpecAugment``) run on features
inside the training step. Evaluation never sees either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn


class WaveAugment(nn.Module):
    """Random time shift and background-noise mixing of a batch of clips.

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

    Shapes:
        ``(B, N)`` clips and ``(K, M)`` noise (``M >= N``) -> ``(B, N)``.
    """

    def __init__(self, shift_ms: float = 100.0, noise_prob: float = 0.8, noise_volume: float = 0.1,
                 sample_rate: int = 16000, place: bool = False):
        super().__init__()
        if shift_ms < 0 or not 0 <= noise_prob <= 1 or noise_volume < 0:
            raise ValueError(f"need shift_ms >= 0, 0 <= noise_prob <= 1, noise_volume >= 0; got "
                             f"{shift_ms}, {noise_prob}, {noise_volume}")
        self.shift = int(sample_rate * shift_ms / 1000)
        self.noise_prob, self.noise_volume, self.place = noise_prob, noise_volume, place

    def forward(self, wave: Tensor, noise: Tensor | None = None) -> Tensor:
        B, N = wave.shape
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
