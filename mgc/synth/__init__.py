"""A deterministic synthetic corpus in the exact FMA layout and metadata format.

The real FMA cannot be downloaded everywhere mgc is developed and tested, so this package writes
N clips of 44.1 kHz stereo MP3 under <out>/<audio_dir>/NNN/NNNNNN.mp3 with fma_metadata/tracks.csv
and genres.csv in the published format. Eight genres differ the way real ones do (tempo, rhythm
pattern, timbre, harmony, noise colour); an artist has a style of its own and each track varies
it, so a model has to learn the genre rather than look clips up. A configurable share of files is
broken like the FMA's own bad clips (empty, truncated, not audio, under 2 s, silent, missing).

Two opt-in options make the genre lists of tracks.csv audible, for multi-label tagging over the
FMA's genre tree (with both off, not a byte of the corpus depends on them):
- `subgenres`: each artist plays one of its genre's two SUBGENRES, heard as the parent genre plus
  that sub-genre's voice (SUBGENRE_VOICES: a low sustained pad or a high, bright ostinato);
  `genres` lists the sub-genre, `genres_all` it and its parent.
- `multi_genre`: that share of the usable tracks is a blend of two genres, both rendered whole and
  mixed at comparable loudness; `genres` lists both, `genre_top` is empty (as the FMA leaves it
  when a track's genres span several roots), `genres_all` has both roots.
With either on, tracks.csv lists only what is audible: a single-genre track its genre (or its
sub-genre), a blend both, and a track without genre_top that is no blend nothing at all. Label
noise flips single-genre tracks only (a blend is listed as it sounds). synth_truth.csv says what
each track sounds like (`genres`, `subgenres`) and what it is listed as (`listed_genre`, and
`labelled`: tagged at all, which a blend is, its genre_top empty notwithstanding).

Everything derives from the seed: the same config writes byte-identical audio and metadata.

The modules, each importing only those above it:
- sound: notes, noise, drum hits and the stereo mix the genres are composed of;
- genres: the FMA genre tree, the eight genre composers and the sub-genres' voices;
- clip: `render`, one clip with its layers, as the catalogue holds it or `record_upload` records it;
- config: `SynthConfig`, what to generate;
- planning: `plan`, every track's artist, split, subset, kind and labels, before any audio;
- metadata: tracks.csv, genres.csv and synth_truth.csv;
- corpus: `generate`, the plan rendered into MP3s by a process pool, and the reuse stamp;
- upload_folder: `uploads`, a folder of new uploads to label.
"""

from mgc.synth.clip import UPLOAD_CONDITIONS, UPLOAD_OFFSET_S, record_upload, render
from mgc.synth.config import SynthConfig
from mgc.synth.corpus import generate, stamp_of
from mgc.synth.genres import GENRES, SUBGENRE_PARENT, SUBGENRES
from mgc.synth.planning import BROKEN_EXPECTED, FMA_SUBSET_SHARES, plan
from mgc.synth.upload_folder import uploads

__all__ = [
    "BROKEN_EXPECTED",
    "FMA_SUBSET_SHARES",
    "GENRES",
    "SUBGENRES",
    "SUBGENRE_PARENT",
    "SynthConfig",
    "UPLOAD_CONDITIONS",
    "UPLOAD_OFFSET_S",
    "generate",
    "plan",
    "record_upload",
    "render",
    "stamp_of",
    "uploads",
]
