"""Model inputs: what each 3 s segment of decoded audio becomes, as a registry.

Each input kind is a small class that registers itself: its name, its shape from the
FeatureConfig, how it is computed from the segments of a decoded track (the one implementation
that extraction, training, labelling and embedding share), how a model normalises it (a
z-score per band for spectra, one z-score for the waveform) and how training augments it. The
shard schema, _config.json, the training checks, the artifact and the labeller derive from the
inputs selected; adding an input is one new class here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mgc import augment, musicnn
from mgc.errors import MgcError
from mgc.segments import BLOCK_SEGMENTS, check_not_silent, mel_power, segment

if TYPE_CHECKING:  # FeatureConfig checks its inputs against this registry
    from mgc.features import FeatureConfig

INPUTS: dict[str, "Input"] = {}


class Input:
    """One kind of model input; subclasses set the class attributes and `shape`, `compute`, `augment`."""

    name: ClassVar[str]
    norm: ClassVar[str]  # "band": a z-score per row of a spectrum; "global": one z-score
    about: ClassVar[str]  # for --help

    def shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        """The shape of one segment's array."""
        raise NotImplementedError

    def check(self, cfg: FeatureConfig) -> None:
        """Raise MgcError where `cfg` cannot give this input."""

    def compute(self, segments: np.ndarray, cfg: FeatureConfig, cache: dict[str, Any]) -> np.ndarray:
        """float16 [n, *shape] for n segments [n, segment_samples]; `cache` shares work between
        inputs of the same block of segments (MFCCs come from the log-mel spectrogram)."""
        raise NotImplementedError

    def augment(self, x, aug, gen):
        """A training batch [n, *shape] of this input, normalised, augmented on its device by the
        settings of `aug` (mgc.augment.Augment) that apply to this kind."""
        raise NotImplementedError

    # Computed by a pretrained network: `prepare` runs in the decode task and `finish` where the
    # network is loaded (extraction can put that in an actor pool, on GPUs).
    network: ClassVar[bool] = False

    def prepare(self, segments: np.ndarray, cfg: FeatureConfig, cache: dict[str, Any]) -> Any:
        """The CPU part of `compute`; the whole of it for inputs that are not networks."""
        return self.compute(segments, cfg, cache)

    def finish(self, prepared: Any, device: str = "cpu") -> np.ndarray:
        """`compute`'s result from `prepare`'s."""
        return prepared

    def stats_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes of a batch [n, *shape] that a normalisation statistic sums over."""
        return tuple(a for a in range(ndim) if a != 1) if self.norm == "band" else tuple(range(ndim))

    def stats_size(self, shape: tuple[int, ...]) -> int:
        """How many (mean, std) pairs normalise an input of `shape`."""
        return shape[0] if self.norm == "band" else 1


def register(cls: type[Input]) -> type[Input]:
    """Class decorator: make an input kind available by its name."""
    INPUTS[cls.name] = cls()
    return cls


def get(name: str) -> Input:
    """The input kind called `name`; MgcError listing the kinds otherwise."""
    try:
        return INPUTS[name]
    except KeyError:
        raise MgcError(f"unknown input {name!r}; choose among {', '.join(INPUTS)}") from None


class Spectrum(Input):
    """A spectrum [bands, frames]: a z-score per band; a random time shift and SpecAugment masks."""

    norm = "band"

    def augment(self, x, aug, gen):
        x = augment.time_shift(x, aug.shift, gen)
        return augment.mask(augment.mask(x, aug.mask, 1, gen), aug.mask, 2, gen)


@register
class LogMel(Spectrum):
    name = "logmel"
    about = "log-mel spectrogram [n_mels, frames], absolute dB"

    def shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        return (cfg.n_mels, cfg.frames)

    def compute(self, segments, cfg, cache):
        return self.decibels(segments, cfg, cache).astype(np.float16)

    @staticmethod
    def decibels(segments, cfg, cache) -> np.ndarray:
        import librosa  # here, not at the top: the networks import without it (bench/gpu.py on a bare GPU machine)

        if "logmel" not in cache:
            # Absolute dB with no per-clip reference or top_db clipping: each segment's values
            # depend on that segment alone, whatever else was decoded with it.
            cache["logmel"] = librosa.power_to_db(mel_power(segments, cfg), ref=1.0, amin=1e-10, top_db=None)
        return cache["logmel"]


@register
class Mfcc(Spectrum):
    name = "mfcc"
    about = "MFCCs [n_mfcc, frames] of the same spectrogram"

    def shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        return (cfg.n_mfcc, cfg.frames)

    def compute(self, segments, cfg, cache):
        import librosa  # as in LogMel.decibels

        return librosa.feature.mfcc(S=LogMel.decibels(segments, cfg, cache), n_mfcc=cfg.n_mfcc).astype(np.float16)


@register
class Waveform(Input):
    name, norm = "waveform", "global"
    about = "the samples [segment_samples] at the sample rate, float16 (66,150 per 3 s: 4x a log-mel's bytes)"

    def shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        return (cfg.segment_samples,)

    def compute(self, segments, cfg, cache):
        return segments.astype(np.float16)

    def augment(self, x, aug, gen):
        return augment.gain(augment.time_shift(x, aug.shift, gen), aug.gain_db, gen)


@register
class Musicnn(Input):
    name, norm, network = "musicnn", "band", True  # a z-score per dimension
    about = (
        "the pretrained MSD musicnn tagger's 200-d embedding then its 50 tag probabilities, per segment (mgc.musicnn)"
    )

    def shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        return (musicnn.EMBEDDING + len(musicnn.TAGS),)

    def check(self, cfg: FeatureConfig) -> None:
        if cfg.segment_seconds < 3.0:
            raise MgcError(
                "FeatureConfig: the musicnn input needs segments of at least 3 s (its 187-frame patch), not "
                f"{cfg.segment_seconds:g} s"
            )

    def prepare(self, segments, cfg, cache):
        """(the network's input patches for the segments it runs on; for each segment the index
        of the patch whose output it takes)."""
        n, k = len(segments), cfg.musicnn_patches
        # k segments at the centres of k equal spans (one: the middle), or all: the network is
        # most of this input's cost (bench/README.md).
        run = np.unique(((np.arange(k) + 0.5) * n / k).astype(int)) if 0 < k < n else np.arange(n)
        nearest = np.abs(np.arange(n)[:, None] - run[None, :]).argmin(1)
        # A 3 s segment at 16 kHz is 188 frames: the first 187 (of a longer one too) are the
        # network's one patch (`check` refuses shorter segments).
        return musicnn.logmel(segments[run], cfg.sample_rate)[:, : musicnn.FRAMES], nearest

    def finish(self, prepared, device="cpu"):
        x, nearest = prepared
        out = musicnn.run(x, device)
        return np.concatenate([out["embedding"], out["tags"]], 1).astype(np.float16)[nearest]

    def compute(self, segments, cfg, cache):
        return self.finish(self.prepare(segments, cfg, cache))

    def augment(self, x, aug, gen):
        return x  # a pretrained summary: mixup (the training loop's) is the augmentation that applies


def prepare(y: np.ndarray, cfg: FeatureConfig, names: tuple[str, ...]) -> dict[str, list]:
    """The CPU part of `compute` for one decoded track: {name: one `prepare` result per block}.

    Raises Reject('too_short') or Reject('silent') for unusable audio.
    """
    segs = segment(y, cfg)
    check_not_silent(y, cfg)
    kinds = [get(n) for n in names]
    parts: dict[str, list] = {n: [] for n in names}
    for start in range(0, len(segs), BLOCK_SEGMENTS):
        block, cache = segs[start : start + BLOCK_SEGMENTS], {}
        for kind in kinds:
            parts[kind.name].append(kind.prepare(block, cfg, cache))
    return parts


def finish(parts: dict[str, list], device: str = "cpu") -> dict[str, np.ndarray]:
    """`prepare`'s result made whole, {name: float16 [n_segments, *shape]}: the networks run here."""
    return {n: np.ascontiguousarray(np.concatenate([get(n).finish(p, device) for p in ps])) for n, ps in parts.items()}


def compute(y: np.ndarray, cfg: FeatureConfig, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The inputs `names` of one decoded track, {name: float16 [n_segments, *shape]}.

    Raises Reject('too_short') or Reject('silent') for unusable audio.
    """
    return finish(prepare(y, cfg, names))
