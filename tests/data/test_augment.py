"""Training augmentation: shifts keep the clip and fill with zeros; noise is added at the set volume;
speed perturbation moves pitch and tempo together; the simulated room reverberates, band-limits and
clips at the clip's own level; all of it is drawn from torch's seeded generator."""

import pytest
import torch

from speechrnn.data.augment import RoomMic, SpecAugment, SpeedPerturb, WaveAugment


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


# --- speed perturbation ----------------------------------------------------------------------------

RATE = 16000


def _sine(freq: float, n: int = RATE, amp: float = 0.3) -> torch.Tensor:
    return amp * torch.sin(2 * torch.pi * freq * torch.arange(n) / RATE)  # (n,)


def _magnitude(wave: torch.Tensor, freq: float) -> torch.Tensor:
    """``(B,)`` FFT magnitude of each clip at ``freq`` (a whole number of cycles per clip: one bin)."""
    return torch.fft.rfft(wave).abs()[:, round(freq * wave.shape[1] / RATE)]


def _seeded(module, wave: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return module(wave)


@pytest.mark.parametrize("augment", [SpeedPerturb(max_change=0.1, step=0.05),
                                     RoomMic(reverb_prob=0.5, band_prob=0.5, clip_prob=0.5)], ids=["speed", "room"])
def test_speed_and_room_keep_the_shape_and_are_drawn_from_the_seed(augment):
    wave = torch.randn(16, 4000) * 0.1
    a, b, c = _seeded(augment, wave, 1), _seeded(augment, wave, 1), _seeded(augment, wave, 2)
    assert a.shape == wave.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_speed_moves_a_tone_by_the_drawn_factor_and_a_faster_clip_ends_earlier():
    torch.manual_seed(0)
    burst = torch.zeros(30, RATE)
    burst[:, :8000] = _sine(1000.0, 8000)  # a 1 kHz tone for 0.5 s, then silence
    out = SpeedPerturb(max_change=0.1, step=0.1)(burst)  # each clip at 0.9, 1.0 or 1.1 speed
    assert out.shape == burst.shape
    factors = []
    for row in out:
        hz = float(torch.fft.rfftfreq(RATE, 1 / RATE)[torch.fft.rfft(row).abs().argmax()])
        factor = min((0.9, 1.0, 1.1), key=lambda f: abs(hz - 1000 * f))
        assert abs(hz - 1000 * factor) <= 5, hz  # ~900, 1000 or 1100 Hz
        end = int((row.abs() > 0.01).nonzero()[-1])  # the last sample of the burst
        assert abs(end - 8000 / factor) <= 10, (factor, end)  # higher is faster: it ends earlier
        factors.append(factor)
    assert set(factors) == {0.9, 1.0, 1.1}  # each clip draws its own


def test_speed_of_zero_returns_the_input_without_drawing():
    wave = torch.randn(4, 1600)
    state = torch.get_rng_state()
    assert SpeedPerturb(max_change=0.0)(wave) is wave
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kwargs", [dict(max_change=-0.1), dict(max_change=0.5), dict(step=0.0), dict(step=-0.025)])
def test_speed_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="max_change"):
        SpeedPerturb(**kwargs)


# --- the simulated room and microphone --------------------------------------------------------------

def _rms(wave: torch.Tensor) -> torch.Tensor:
    return wave.pow(2).mean(1).sqrt()  # (B,)


def test_room_keeps_each_clips_level_through_reverb_and_band_limiting():
    torch.manual_seed(0)
    wave = torch.randn(8, RATE) * torch.linspace(0.01, 0.08, 8)[:, None]  # a different level per clip
    out = RoomMic(reverb_prob=1.0, band_prob=1.0)(wave)
    assert (out - wave).abs().amax(1).min() > 0.01  # every clip was changed...
    torch.testing.assert_close(_rms(out), _rms(wave), rtol=0.02, atol=0)  # ...at its own level


def test_reverb_gives_a_click_a_decaying_tail_and_a_longer_rt60_a_longer_one():
    click = torch.zeros(1, RATE)
    click[0, 1000] = 0.5

    def room(rt60: float) -> torch.Tensor:
        torch.manual_seed(0)
        return RoomMic(reverb_prob=1.0, band_prob=0.0, rt60=(rt60, rt60), drr_db=(0.0, 0.0))(click)[0]

    out = room(0.3)
    assert out[:1000].abs().max() < 1e-4  # nothing before the sound
    windows = out[1001:1001 + 6 * 800].reshape(6, 800).pow(2).sum(1)  # 50 ms windows over the 0.3 s tail
    assert windows[-1] > 0 and (windows[1:] < windows[:-1]).all(), windows  # ~10 dB less per window
    late = [float(x[1800:2600].pow(2).sum() / x.pow(2).sum()) for x in (room(0.1), room(0.5))]  # 50-100 ms after
    assert late[1] > 10 * late[0], late


def test_band_limiting_attenuates_a_high_tone_far_more_than_a_low_one():
    wave = (_sine(500.0, amp=0.2) + _sine(6000.0, amp=0.2)).repeat(8, 1)
    torch.manual_seed(0)
    out = RoomMic(reverb_prob=0.0, band_prob=1.0, high_hz=(2000.0, 2000.0))(wave)  # any tilt, any high-pass
    ratio = _magnitude(out, 6000) / _magnitude(out, 500)  # 1 in the input
    assert (ratio < 0.1).all(), ratio
    flat = RoomMic(reverb_prob=0.0, band_prob=1.0, low_hz=(1.0, 1.0), high_hz=(2000.0, 2000.0), tilt_db=0.0)(wave)
    ratio = _magnitude(flat, 6000) / _magnitude(flat, 500)
    torch.testing.assert_close(ratio, torch.full((8,), (1 + 3.0 ** 8) ** -0.5), rtol=0.05, atol=0)  # 4th order: -38 dB


def test_the_microphone_is_3_db_down_at_its_cut_offs_and_tilts_by_the_drawn_db_per_octave():
    freqs = torch.tensor([100.0, 1000.0, 2000.0, 4000.0])
    mic = RoomMic(low_hz=(100.0, 100.0), high_hz=(4000.0, 4000.0), tilt_db=0.0).mic_responses(1, freqs)[0]
    torch.testing.assert_close(mic[[0, 3]], torch.full((2,), 2 ** -0.5), rtol=0.02, atol=0)  # -3 dB at both
    torch.testing.assert_close(mic[1], torch.tensor(1.0), rtol=0.01, atol=0)  # flat between them
    torch.manual_seed(0)
    tilted = RoomMic(low_hz=(1.0, 1.0), high_hz=(1e6, 1e6), tilt_db=6.0).mic_responses(4, freqs)  # (4, F)
    db_per_octave = 20 * torch.log10(tilted[:, 2] / tilted[:, 1])  # 1 -> 2 kHz
    torch.testing.assert_close(tilted[:, 1], torch.ones(4), rtol=1e-4, atol=0)  # the tilt pivots on 1 kHz
    assert (db_per_octave.abs() <= 6.0 + 1e-4).all() and db_per_octave.std() > 0.5, db_per_octave
    torch.testing.assert_close(20 * torch.log10(tilted[:, 3] / tilted[:, 2]), db_per_octave, rtol=1e-4, atol=1e-4)


def test_room_with_nothing_drawn_returns_the_input():
    wave = torch.randn(8, 1600) * 0.1
    assert RoomMic(reverb_prob=0.0, band_prob=0.0, clip_prob=0.0)(wave) is wave


def test_clipping_limits_the_peak_relative_to_the_level():
    torch.manual_seed(0)
    wave = torch.randn(8, RATE) * 0.05
    out = RoomMic(reverb_prob=0.0, band_prob=0.0, clip_prob=1.0)(wave)
    crest_in, crest_out = wave.abs().amax(1) / _rms(wave), out.abs().amax(1) / _rms(out)
    assert (crest_out < 0.6 * crest_in).all(), (crest_in, crest_out)
    peak_in, peak_out = wave.abs().amax(1), out.abs().amax(1)
    assert (peak_out <= peak_in / 10 ** (6 / 20) * 1.001).all() and (peak_out >= peak_in / 10).all()  # 6 to 20 dB


@pytest.mark.parametrize("kwargs, match", [
    (dict(reverb_prob=1.5), "reverb_prob"), (dict(band_prob=-0.1), "band_prob"), (dict(clip_prob=2.0), "clip_prob"),
    (dict(rt60=(0.8, 0.15)), "rt60"), (dict(drr_db=(12.0, -3.0)), "drr_db"), (dict(low_hz=(400.0, 50.0)), "low_hz"),
    (dict(high_hz=(8000.0, 3000.0)), "high_hz"), (dict(rt60=(0.0, 0.5)), "rt60"), (dict(tilt_db=-1.0), "tilt_db")])
def test_room_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoomMic(**kwargs)


@pytest.mark.parametrize("device", ["meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_speed_and_room_stay_on_the_batchs_device(device):
    """The data module augments batches already on the accelerator; the draws are made on the CPU."""
    wave = torch.randn(4, 1600, device=device) * 0.1
    for module in (SpeedPerturb(max_change=0.1), RoomMic(reverb_prob=1.0, band_prob=1.0, clip_prob=1.0)):
        out = module(wave)
        assert out.device == wave.device and out.shape == wave.shape


# --- WaveAugment's speed and room -------------------------------------------------------------------

def test_wave_augment_perturbs_speed_then_the_room_before_shift_and_noise():
    wave, noise = torch.randn(8, 4000) * 0.05, torch.randn(2, 8000) * 0.05
    room = dict(reverb_prob=1.0, band_prob=1.0)
    torch.manual_seed(0)
    plain = WaveAugment(shift_ms=10)(wave, noise)
    torch.manual_seed(0)
    out = WaveAugment(shift_ms=10, speed=0.1, room=room)(wave, noise)
    assert out.shape == wave.shape and (out - plain).abs().amax(1).min() > 1e-3  # every clip differs
    alone = WaveAugment(shift_ms=0, noise_prob=0.0, speed=0.1, room=room)
    by_hand = _seeded(lambda w: RoomMic(**room)(SpeedPerturb(max_change=0.1)(w)), wave, 3)
    torch.testing.assert_close(_seeded(alone, wave, 3), by_hand, rtol=0, atol=0)


def test_wave_augment_defaults_keep_the_random_stream_of_shift_and_noise_alone():
    wave, noise = torch.randn(16, 1600) * 0.1, torch.randn(3, 8000) * 0.1
    outs = []
    without = WaveAugment(shift_ms=10, noise_prob=0.5)  # as built before speed and room existed
    for augment in (without, WaveAugment(shift_ms=10, noise_prob=0.5, speed=0, room=None)):
        torch.manual_seed(7)
        outs.append((augment(wave, noise), torch.rand(4)))  # the output and what is drawn after it
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_an_empty_room_config_means_the_default_room_not_none():
    # data.augment.room={} on the command line: RoomMic's defaults, not augmentation off
    assert isinstance(WaveAugment(room={}).room, RoomMic)
    assert WaveAugment(room=None).room is None
