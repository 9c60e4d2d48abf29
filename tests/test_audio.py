import numpy as np
import pytest
import soundfile as sf

from mgc import inputs
from mgc.audio import load
from mgc.errors import Reject
from mgc.features import FeatureConfig

CFG = FeatureConfig()
FORMATS = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
}


def write_tone(path, sr, channels, seconds=4.0, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    fmt, subtype = FORMATS[path.suffix[1:]]
    sf.write(path, data, sr, format=fmt, subtype=subtype)


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("sr,channels", [(8000, 1), (16000, 2), (44100, 2), (48000, 1)])
def test_every_format_rate_and_channel_count_decodes_to_mono_22050(tmp_path, ext, sr, channels):
    p = tmp_path / f"a.{ext}"
    write_tone(p, sr, channels)
    y = load(str(p), CFG)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) / 22050 - 4.0) < 0.15  # MP3 encoders pad a little
    spectrum = np.abs(np.fft.rfft(y[2000:-2000]))
    freq = np.argmax(spectrum) * 22050 / len(y[2000:-2000])
    assert abs(freq - 440.0) < 3.0


def test_max_seconds_caps_what_is_decoded(tmp_path):
    p = tmp_path / "long.flac"
    write_tone(p, 44100, 2, seconds=20.0)
    y = load(str(p), FeatureConfig(max_seconds=6.0))
    assert len(y) == 6 * 22050


@pytest.mark.parametrize(
    "make,reason,words",
    [
        (lambda p: None, "missing_file", "no such file"),
        (lambda p: p.write_bytes(b""), "decode_error", "empty"),
        (lambda p: p.write_bytes(b"<html>not audio</html>" * 50), "decode_error", "not a recognised audio format"),
        (lambda p: p.mkdir(), "decode_error", "directory"),
    ],
)
def test_bad_files_are_rejects_naming_the_file(tmp_path, make, reason, words):
    p = tmp_path / "bad.mp3"
    make(p)
    with pytest.raises(Reject) as e:
        load(str(p), CFG)
    assert e.value.reason == reason
    assert str(p) in e.value.detail and words in e.value.detail


def test_real_fma_clips_decode_and_are_too_short(fma_sample):
    for name in ("000010.mp3", "000141.mp3"):
        y = load(str(fma_sample / "audio" / name), CFG)
        assert 1.9 < len(y) / 22050 < 2.1
        with pytest.raises(Reject) as e:
            inputs.compute(y, CFG, CFG.inputs)
        assert e.value.reason == "too_short"


def test_a_long_file_decodes_in_blocks_to_the_same_samples(tmp_path):
    """Past a minute, decoding goes block by block (bounded memory), with the same result."""
    import soxr

    from mgc.synth import render

    path = tmp_path / "long.flac"
    sf.write(path, render("Rock", 1, 2, 150.0, 44100), 44100, format="FLAC", subtype="PCM_16")
    y = load(str(path), FeatureConfig())
    whole = soxr.resample(sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1), 44100, 22050, quality="HQ")
    assert len(y) == len(whole) and np.allclose(y, whole, atol=1e-5)
    assert len(load(str(path), FeatureConfig(max_seconds=100.0))) == 100 * 22050
