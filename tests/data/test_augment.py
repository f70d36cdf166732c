"""Training augmentation: shifts keep the clip and fill with zeros; noise is added at the set volume."""

import torch

from speechrnn.data.augment import SpecAugment, WaveAugment


def test_time_shift_moves_each_clip_within_the_limit_and_fills_zeros():
    torch.manual_seed(0)
    wave = torch.arange(1, 1601, dtype=torch.float32).repeat(8, 1) / 2000  # (8, 1600), no zeros
    out = WaveAugment(shift_ms=10, noise_prob=0.0, sample_rate=16000)(wave)  # up to 160 samples
    shifts = []
    for row in out:
        s = int(round(float(row[row > 0][0]) * 2000)) - 1  # first kept sample tells the shift
        first = int((row > 0).nonzero()[0])
        shift = first - s  # > 0: moved later (zeros in front); < 0: moved earlier
        assert abs(shift) <= 160
        torch.testing.assert_close(row, torch.roll(wave[0], shift) * _keep(shift, 1600))
        shifts.append(shift)
    assert len(set(shifts)) > 1  # clips are shifted independently


def _keep(shift: int, n: int) -> torch.Tensor:
    keep = torch.ones(n)
    if shift > 0:
        keep[:shift] = 0
    elif shift < 0:
        keep[shift:] = 0
    return keep


def test_place_moves_a_padded_word_anywhere_in_its_padding_and_never_cuts_its_end():
    torch.manual_seed(0)
    wave = torch.zeros(400, 1600)
    wave[:, :200] = torch.arange(1, 201, dtype=torch.float32) / 200  # a 200-sample word, then 1400 zeros
    out = WaveAugment(shift_ms=10, noise_prob=0.0, sample_rate=16000, place=True)(wave)  # shift_ms: 160 samples
    ends = torch.tensor([int(row.nonzero()[-1]) for row in out])
    starts = torch.tensor([int(row.nonzero()[0]) for row in out])
    assert ends.max() > 1500  # the word can end at the window's end
    assert (ends >= 199 - 160).all() and ends.float().mean() > 600  # spread over the padding, not within +-160
    whole = starts > 0  # moved later: nothing was cut
    assert torch.allclose(out[whole].sum(1), wave[0].sum().expand(int(whole.sum())))


def test_place_leaves_clips_without_padding_as_the_plain_shift_draws_them():
    wave = torch.rand(16, 1600) + 0.1  # no zero samples
    plain, placed = WaveAugment(shift_ms=10, noise_prob=0.0), WaveAugment(shift_ms=10, noise_prob=0.0, place=True)
    torch.manual_seed(3)
    a = plain(wave)
    torch.manual_seed(3)
    b = placed(wave)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same random numbers, same shifts


def test_noise_is_mixed_at_most_at_the_set_volume_and_only_with_its_probability():
    torch.manual_seed(0)
    wave, noise = torch.zeros(200, 800), torch.ones(3, 4000)
    out = WaveAugment(shift_ms=0, noise_prob=0.5, noise_volume=0.1)(wave, noise)
    gains = out[:, 0]
    assert torch.all(out == gains[:, None])  # constant noise, one gain per clip
    assert gains.max() <= 0.1 and 0.3 < (gains > 0).float().mean() < 0.7


def test_specaugment_masks_whole_rows_and_columns_with_zeros():
    torch.manual_seed(0)
    x = torch.ones(4, 98, 13)
    y = SpecAugment(freq_masks=1, freq_width=3, time_masks=1, time_width=10)(x)
    assert y.shape == x.shape and (y == 0).any() and (y[y != 0] == 1).all()
