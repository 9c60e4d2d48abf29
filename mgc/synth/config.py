"""What to generate: SynthConfig, checked whole when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from mgc.errors import MgcError
from mgc.synth.clip import UPLOAD_CONDITIONS


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `workers` 0 means one process per core."""

    out: str
    tracks: int = 400
    seconds: float = 30.0
    sample_rate: int = 44100
    seed: int = 0
    broken_share: float = 0.05
    unlabelled_share: float = 0.03
    # Share of training tracks whose genre in tracks.csv is another one, drawn at random (the
    # audio keeps its genre; synth_truth.csv has both): noisy labels, as real catalogues have.
    label_noise: float = 0.0
    # Validation and test tracks recorded as new uploads are, unlike the catalogue that training
    # sees: any of UPLOAD_CONDITIONS (`record_upload`). Held-out recording conditions, on top of
    # the held-out artists every split has; empty: every split recorded alike.
    upload_conditions: tuple[str, ...] = ()
    # Share of the artists' tracks in validation and in test, each (the FMA's split: 0.1). More
    # held-out tracks make a comparison of two trainings tell smaller differences apart.
    held_out: float = 0.1
    audio_dir: str = "fma_large"
    workers: int = 0
    # Render only this many clips (shared by the genres) and hard-link every track to one of its
    # genre's: a corpus of FMA large's size in minutes, for benchmarks of what grows with it.
    link_pool: int = 0
    # FMA large's subset sizes and genre_top coverage (FMA_SUBSET_SHARES) instead of even
    # subsets and `unlabelled_share`.
    fma_proportions: bool = False
    # Share of the usable (kind "ok") tracks rendered as a blend of their genre and another drawn
    # at random, listed with both genres and no genre_top: multi-genre tracks that a multi-label
    # model can learn from the audio (without it, the tracks listing two genres sound like one).
    multi_genre: float = 0.0
    # Each artist plays one of its genre's two SUBGENRES, audibly (SUBGENRE_VOICES), and
    # tracks.csv lists that sub-genre: sub-genre tags that can be learnt, not random ones.
    subgenres: bool = False
    # Each artist also plays a second genre (drawn per artist), in the artist's tempo and key, mixed
    # under its genre at up to this share of its RMS (drawn per track): genres that share
    # instruments, tempi and keys, and artists whose sound carries across genres. The label stays
    # the artist's genre. 0: off.
    crossover: float = 0.0

    def __post_init__(self) -> None:
        if self.tracks < 1:
            raise MgcError("synth: --tracks must be at least 1")
        if self.seconds < 3:
            raise MgcError("synth: --seconds must be at least 3 (one segment)")
        if not 0 <= self.broken_share < 1 or not 0 <= self.unlabelled_share < 1 or not 0 <= self.label_noise < 1:
            raise MgcError("synth: shares must be in [0, 1)")
        object.__setattr__(self, "upload_conditions", tuple(self.upload_conditions))
        unknown = [c for c in self.upload_conditions if c not in UPLOAD_CONDITIONS]
        if unknown or len(set(self.upload_conditions)) != len(self.upload_conditions):
            raise MgcError(
                f"synth: --upload-conditions {','.join(self.upload_conditions)}: name each once, among {', '.join(UPLOAD_CONDITIONS)}"
            )
        if self.link_pool < 0:
            raise MgcError("synth: --link-pool must be at least 0")
        if not 0 < self.held_out <= 0.4:
            raise MgcError(
                "synth: --held-out must be in (0, 0.4]: validation and test take that share each, training the rest"
            )
        if not 0 <= self.multi_genre <= 1 or not 0 <= self.crossover <= 1:
            raise MgcError("synth: --multi-genre and --crossover must be in [0, 1]")
        if self.link_pool and (self.truthful or self.crossover):
            raise MgcError(
                "synth: --link-pool shares one clip per genre; it cannot be used with --multi-genre, --subgenres or --crossover"
            )

    @property
    def truthful(self) -> bool:
        """Whether tracks.csv lists only audible genres (either option on); else genre lists drawn regardless of the audio."""
        return self.multi_genre > 0 or self.subgenres
