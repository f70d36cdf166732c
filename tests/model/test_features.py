"""The MFCC frontend: agrees with librosa, stacks frames, carries its normalisation, causal or per clip."""

import librosa
import numpy as np
import pytest
import torch
import torchaudio

from speechrnn.model.features import MFCC, deltas

# torchaudio and librosa build the same mel filterbank (HTK scale, no norm) and dB scale;
# in float32 they differ by rounding only. Measured: max |diff| about 7e-5 dB on
# coefficients up to ~60 dB, so 1e-3 dB absolute is a safe, documented tolerance.
LIBROSA_TOLERANCE_DB = 1e-3


@pytest.mark.slow
def test_matches_librosa_mfcc_on_the_same_settings():
    y = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    ours = MFCC(n_mfcc=40, win_ms=30, hop_ms=10, n_mels=40, f_min=20, f_max=7600, normalize=False)
    got = ours(torch.from_numpy(y)[None])[0].numpy()  # (T, C)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=480, hop_length=160, win_length=480, window="hann",
                                         center=False, power=2.0, n_mels=40, fmin=20, fmax=7600, htk=True, norm=None)
    want = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None),
                                n_mfcc=40, dct_type=2, norm="ortho").T
    assert got.shape == want.shape == (98, 40)
    np.testing.assert_allclose(got, want, atol=LIBROSA_TOLERANCE_DB)


def test_stacking_concatenates_consecutive_frames():
    wave = torch.randn(2, 16000)
    plain = MFCC(n_mfcc=13, n_mels=40, normalize=False)(wave)  # (2, 98, 13)
    stacked = MFCC(n_mfcc=13, n_mels=40, stack=4, normalize=False)(wave)  # (2, 24, 52)
    assert stacked.shape == (2, 24, 52)
    torch.testing.assert_close(stacked[:, 1, 13:26], plain[:, 5])


def test_deltas_add_coefficients_and_num_frames_predicts_length():
    mfcc = MFCC(n_mfcc=20, deltas=2, stack=3, hop_ms=20, win_ms=40)
    out = mfcc(torch.randn(1, 16000))
    assert out.shape == (1, mfcc.num_frames(16000), mfcc.dim) == (1, 16, 180)


def test_deltas_are_torchaudios_compute_deltas():
    x = torch.randn(3, 17, 5)  # (B, T, C)
    expected = torchaudio.functional.compute_deltas(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(deltas(x), expected, atol=1e-6, rtol=0)


def test_floor_db_is_where_digital_silence_lands_and_leaves_louder_sound_alone():
    loud = 0.1 * torch.randn(1, 16000)
    silence = torch.zeros(1, 16000)
    deep, shallow = MFCC(n_mfcc=13, normalize=False), MFCC(n_mfcc=13, normalize=False, floor_db=-60)
    # ortho DCT of a constant -F dB over 40 mel bands: c0 = -F * sqrt(40), the rest 0
    torch.testing.assert_close(shallow(silence)[0, :, 0], torch.full((98,), -60 * 40 ** 0.5), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(deep(silence)[0, :, 0], torch.full((98,), -100 * 40 ** 0.5), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(shallow(loud), deep(loud))


def test_cmn_removes_a_fixed_channel_colouring():
    wave = torch.randn(2, 16000) * 0.1
    # a fixed linear filter (a microphone's colouring) is a constant added to every frame's log-mel
    coloured = torchaudio.functional.lfilter(wave, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -0.9]), clamp=False)
    plain, cmn = MFCC(n_mfcc=13, normalize=False), MFCC(n_mfcc=13, normalize=False, cmn=True)
    assert (plain(coloured) - plain(wave)).abs().mean() > 1.0
    assert (cmn(coloured) - cmn(wave)).abs().mean() < 0.3 * (plain(coloured) - plain(wave)).abs().mean()
    torch.testing.assert_close(cmn(wave).mean(1), torch.zeros(2, 13), atol=1e-4, rtol=0)


def test_cmn_true_is_the_clip_mean_as_older_checkpoints_store_it():
    wave = 0.1 * torch.randn(2, 16000)
    old, clip = MFCC(n_mfcc=13, stack=4, cmn=True), MFCC(n_mfcc=13, stack=4, cmn="clip")
    assert old.cmn == clip.cmn == "clip" and MFCC(cmn=False).cmn is None
    torch.testing.assert_close(old(wave), clip(wave), atol=0, rtol=0)


def test_causal_cmn_subtracts_the_running_mean_with_its_prior_frames_of_zero():
    """Constant frames v: frame j loses (j + 1) v / (prior + j + 1), keeping v * prior / (prior + j + 1)."""
    mfcc = MFCC(n_mfcc=2, cmn="causal", cmn_prior=3)
    x = torch.tensor([[2.0, -1.0, 5.0, 7.0]]).expand(4, -1)[None]  # (1, T0=4, D=4): cepstra 2, -1; deltas 5, 7
    out, total = mfcc.subtract_running_mean(x)
    keep = torch.tensor([3 / 4, 3 / 5, 3 / 6, 3 / 7])[:, None]  # prior / (prior + j + 1)
    torch.testing.assert_close(out[0, :, :2], keep * torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(out[0, :, 2:], x[0, :, 2:])  # the deltas are left alone
    torch.testing.assert_close(total, torch.tensor([[[8.0, -4.0]]]))  # the sum a stream carries on with


def test_causal_cmn_is_causal_and_ends_near_the_clip_mean():
    wave = 0.1 * torch.randn(1, 16000)
    later = wave.clone()
    later[:, 8000:] *= 3  # frames 0..47 end before sample 8000 (47 * 160 + 480 = 8000)
    causal = MFCC(n_mfcc=13, cmn="causal")
    torch.testing.assert_close(causal(later)[:, :48], causal(wave)[:, :48], atol=0, rtol=0)
    assert not torch.allclose(causal(later)[:, 48:], causal(wave)[:, 48:])
    # without a prior, the last frame's running mean is the whole clip's
    torch.testing.assert_close(MFCC(n_mfcc=13, cmn="causal", cmn_prior=0)(wave)[:, -1],
                               MFCC(n_mfcc=13, cmn="clip")(wave)[:, -1], atol=1e-4, rtol=0)


def test_fit_normalization_whitens_the_training_features_and_is_saved():
    mfcc = MFCC(n_mfcc=10)
    waves = [torch.randn(4, 16000) * s for s in (0.1, 0.5)]
    mfcc.fit_normalization(waves)
    x = torch.cat([mfcc(w) for w in waves]).reshape(-1, 10)
    torch.testing.assert_close(x.mean(0), torch.zeros(10), atol=1e-3, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(10), atol=1e-3, rtol=0)
    restored = MFCC(n_mfcc=10)
    restored.load_state_dict(mfcc.state_dict())
    torch.testing.assert_close(restored(waves[0]), mfcc(waves[0]))


@pytest.mark.parametrize("kwargs", [dict(n_mfcc=50, n_mels=40), dict(hop_ms=40, win_ms=30), dict(deltas=3),
                                    dict(stack=0), dict(f_max=9000), dict(cmn="mean"), dict(cmn="true"),
                                    dict(cmn_prior=-1)])
def test_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MFCC(**kwargs)
