"""What to generate: SynthConfig, checked whole when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from mgc.errors import MgcError
from mgc.options import option, validate
from mgc.synth.clip import UPLOAD_CONDITIONS


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `workers` 0 means one process per core."""

    out: str = option(help="folder to write (fma_metadata/ and the audio folder)")
    tracks: int = option(400, low=1, help="number of tracks")
    seconds: float = option(30.0, low=3, help="clip length, s (one segment at least)")
    sample_rate: int = option(44100, low=8000, help="sample rate of the clips, Hz")
    seed: int = option(0, low=0, help="random seed")
    broken_share: float = option(0.05, low=0, below=1, help="share of broken files")
    unlabelled_share: float = option(0.03, low=0, below=1, help="share of tracks without genre_top")
    # The audio keeps its genre; synth_truth.csv has both: noisy labels, as real catalogues have.
    label_noise: float = option(
        0.0,
        low=0,
        below=1,
        help="share of training tracks given another genre at random in tracks.csv, the audio unchanged: noisy labels",
    )
    # Held-out recording conditions (`record_upload`), on top of the held-out artists every split has.
    upload_conditions: tuple[str, ...] = option(
        (),
        choices=UPLOAD_CONDITIONS,
        metavar="LIST",
        help="record the validation and test tracks as new uploads, unlike the catalogue training sees: any of "
        "offset (not starting on a bar), band (band-limited, EQ tilt), noise (background noise), level (peak -30 "
        "to -1 dBFS)",
    )
    # More held-out tracks make a comparison of two trainings tell smaller differences apart.
    held_out: float = option(
        0.1,
        above=0,
        high=0.4,
        metavar="SHARE",
        help="share of the tracks in validation and in test, each, by artist (the FMA's split: 0.1)",
    )
    audio_dir: str = option("fma_large", help="audio folder name under --out")
    workers: int = option(0, low=0, help="processes writing audio (0: one per core)")
    link_pool: int = option(
        0,
        low=0,
        metavar="N",
        help="render only N clips and hard-link every track to one of its genre's: FMA large's 106,574 tracks in "
        "minutes, for scale benchmarks (0: render every track)",
    )
    fma_proportions: bool = option(
        False,
        help="FMA large's subset sizes (7.5%% small, 16%% more medium) and genre_top coverage (47%%) instead of even "
        "subsets and --unlabelled-share",
    )
    # Without it, the tracks listing two genres sound like one.
    multi_genre: float = option(
        0.0,
        low=0,
        high=1,
        metavar="SHARE",
        help="share of the usable tracks rendered as an audible blend of their genre and another, listed with both "
        "genres and no genre_top; with it (or --subgenres) tracks.csv lists only genres the audio has",
    )
    subgenres: bool = option(
        False,
        help="each artist plays one of its genre's two sub-genres, audibly (an extra low pad or high ostinato over "
        "the genre), and tracks.csv lists it",
    )
    crossover: float = option(
        0.0,
        low=0,
        high=1,
        metavar="SHARE",
        help="each artist also plays a second genre, in its tempo and key, mixed under its own at up to SHARE of its "
        "loudness (per track): genres that share instruments, tempi and keys; the label stays the artist's genre "
        "(the demo's hard corpus: 0.8)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "upload_conditions", tuple(self.upload_conditions))
        validate(self)
        if len(set(self.upload_conditions)) != len(self.upload_conditions):
            raise MgcError(f"synth: --upload-conditions {','.join(self.upload_conditions)}: name each once")
        if self.link_pool and (self.truthful or self.crossover):
            raise MgcError(
                "synth: --link-pool shares one clip per genre; it cannot be used with --multi-genre, --subgenres or "
                "--crossover"
            )

    @property
    def truthful(self) -> bool:
        """Whether tracks.csv lists only audible genres (either option on); else genre lists drawn
        regardless of the audio."""
        return self.multi_genre > 0 or self.subgenres
