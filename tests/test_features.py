import librosa
import numpy as np
import pytest

from mgc import inputs
from mgc.errors import MgcError, Reject
from mgc.features import FeatureConfig
from mgc.segments import mel_power, segment

CFG = FeatureConfig(inputs=("logmel", "mfcc", "waveform"))


def logmel_mfcc(y, cfg):
    """(log-mel, MFCC) of a decoded track, as extraction computes them."""
    arrays = inputs.compute(y, cfg, ("logmel", "mfcc"))
    return arrays["logmel"], arrays["mfcc"]


def tone(seconds, freq=440.0, sr=22050, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_30s_clip_gives_ten_segments_of_the_contract_shapes():
    logmel, mfcc = logmel_mfcc(tone(30.0), CFG)
    assert logmel.shape == (10, 128, 130) and mfcc.shape == (10, 20, 130)
    assert logmel.dtype == np.float16 and mfcc.dtype == np.float16
    assert logmel.flags.c_contiguous and mfcc.flags.c_contiguous
    # 440 Hz sits in one mel band: the loudest band is the same in every frame.
    peak_band = logmel.astype(np.float32).mean(axis=2).argmax(axis=1)
    assert len(set(peak_band)) == 1
    expected = np.argmin(np.abs(librosa.mel_frequencies(n_mels=128, fmax=11025) - 440.0))
    assert abs(int(peak_band[0]) - int(expected)) <= 1


def test_every_input_has_its_shape_and_the_waveform_is_the_segment():
    y = tone(9.0)
    arrays = inputs.compute(y, CFG, CFG.inputs)
    for name in CFG.inputs:
        assert arrays[name].shape == (3, *inputs.get(name).shape(CFG)) and arrays[name].dtype == np.float16
    assert arrays["waveform"].shape == (3, 66150)
    np.testing.assert_array_equal(arrays["waveform"][1], y[66150:132300].astype(np.float16))
    only = inputs.compute(y, CFG, ("mfcc",))  # an input alone is the same as beside the others
    assert list(only) == ["mfcc"] and np.array_equal(only["mfcc"], arrays["mfcc"])
    with pytest.raises(MgcError, match="unknown input 'chroma'; choose among logmel, mfcc, waveform"):
        FeatureConfig(inputs=("logmel", "chroma"))


def test_fast_mel_matches_librosa_melspectrogram():
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(3 * 66150) * 0.1).astype(np.float32)
    segs = segment(y, CFG)
    ours = mel_power(segs, CFG)
    ref = librosa.feature.melspectrogram(y=segs, sr=22050, n_fft=2048, hop_length=512, n_mels=128, pad_mode="constant")
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-6 * ref.max())


def test_segment_counts_drop_the_tail_and_short_clips_are_rejected():
    assert segment(tone(7.5), CFG).shape == (2, 66150)
    with pytest.raises(Reject) as e:
        logmel_mfcc(tone(2.9), CFG)
    assert e.value.reason == "too_short" and "2.90 s" in e.value.detail


def test_silence_is_rejected():
    with pytest.raises(Reject) as e:
        logmel_mfcc(np.zeros(66150 * 2, np.float32), CFG)
    assert e.value.reason == "silent"
    # Quiet but real audio passes.
    logmel_mfcc(tone(6.0, amp=0.01), CFG)


def test_segments_are_independent_of_each_other():
    a = tone(3.0, 300.0)
    b = tone(3.0, 2000.0)
    together, _ = logmel_mfcc(np.concatenate([a, b]), CFG)
    alone, _ = logmel_mfcc(b, CFG)
    np.testing.assert_array_equal(together[1], alone[0])


def test_config_round_trip_diff_and_validation():
    cfg = FeatureConfig(n_mels=64)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert FeatureConfig().diff(cfg) == ["n_mels: 128 -> 64"]
    assert inputs.get("logmel").shape(cfg) == (64, 130)
    with pytest.raises(MgcError, match="unknown field"):
        FeatureConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(MgcError, match="n_mfcc"):
        FeatureConfig(n_mels=10, n_mfcc=20)
