"""mgc.fma against genuine FMA metadata (tests/data/fma) and broken variants of it."""

import shutil

import pandas as pd
import pytest

from mgc import fma
from mgc.errors import MgcError


@pytest.fixture
def fma_root(tmp_path, fma_sample):
    """A folder laid out like the FMA download around the genuine metadata."""
    (tmp_path / "fma_metadata").mkdir()
    for name in ("tracks.csv", "genres.csv"):
        shutil.copy(fma_sample / name, tmp_path / "fma_metadata" / name)
    (tmp_path / "fma_large").mkdir()
    return tmp_path


def test_real_tracks_csv_subsets_are_nested_and_ordered(fma_sample):
    tracks = fma.read_tracks(str(fma_sample / "tracks.csv"))
    assert len(tracks) == 682 and tracks.index.name == "track_id"
    sizes = {s: len(fma.select_subset(tracks, s)) for s in fma.SUBSETS}
    assert sizes == {"small": 58, "medium": 58 + 136, "large": 682, "full": 682}
    small = set(fma.select_subset(tracks, "small").index)
    assert small <= set(fma.select_subset(tracks, "medium").index)


def test_tracks_csv_columns_read_alone_equal_the_full_read(fma_sample):
    """read_tracks parses only the columns asked for (the driver's memory at FMA large's size):
    they equal the same columns of the whole file, in file order, with the same dtypes."""
    path = str(fma_sample / "tracks.csv")
    whole = fma.read_tracks(path, columns=None)
    assert whole.shape == (682, 52)
    few = fma.read_tracks(path, columns=[("track", "genres_all"), ("artist", "id")])
    assert len(few.columns) == len(fma.TRACK_COLUMNS) + 2
    pd.testing.assert_frame_equal(few, whole[few.columns])
    assert list(few.columns) == [c for c in whole.columns if c in set(few.columns)]


def test_manifest_keeps_the_official_split_and_maps_genre_top_to_labels(fma_root):
    m = fma.manifest(str(fma_root), "fma_large", "large")
    t = m.tracks
    assert len(t) == 682
    assert t["split"].value_counts().to_dict() == {"training": 563, "test": 71, "validation": 48}
    assert m.labels == sorted(t["genre_top"].dropna().unique())
    assert (t["label"] == -1).sum() == 51 == t["genre_top"].isna().sum()
    labelled = t[t["label"] >= 0]
    assert all(m.labels[label] == g for label, g in zip(labelled["label"], labelled["genre_top"]))
    row = t[t["track_id"] == 2].iloc[0]
    assert row["path"] == str(fma_root / "fma_large" / "000" / "000002.mp3")
    assert row["genre_top"] == "Hip-Hop" and row["split"] == "training"
    assert fma.audio_path("fma_large", 133297).endswith("fma_large/133/133297.mp3")
    # The small subset holds 8 balanced genres in the full FMA; here only those present count.
    assert set(fma.manifest(str(fma_root), "fma_large", "small").labels) <= set(m.labels)


def test_bad_roots_and_subsets_fail_with_clear_messages(fma_root, tmp_path):
    with pytest.raises(MgcError, match="unknown subset 'huge'"):
        fma.manifest(str(fma_root), "fma_large", "huge")
    with pytest.raises(MgcError, match="FMA root not found"):
        fma.manifest(str(tmp_path / "nowhere"))
    with pytest.raises(MgcError, match="fma_full: audio folder not found"):
        fma.manifest(str(fma_root), "fma_full")


@pytest.mark.parametrize(
    "mangle,message",
    [
        (lambda text: "", "cannot parse"),
        (lambda text: "\n".join(text.splitlines()[1:]), "not in FMA tracks.csv format"),
        (lambda text: text.replace(",split,subset,", ",splits,subset,", 1), r"\('set', 'split'\)"),
        (lambda text: text.replace(",training,small,", ",training,tiny,", 1), "tiny"),
    ],
)
def test_malformed_tracks_csv_names_the_file_and_the_problem(fma_root, mangle, message):
    path = fma_root / "fma_metadata" / "tracks.csv"
    path.write_text(mangle(path.read_text()))
    with pytest.raises(MgcError, match=message) as e:
        fma.manifest(str(fma_root))
    assert str(path) in str(e.value)


def test_missing_or_malformed_genres_csv(fma_root):
    path = fma_root / "fma_metadata" / "genres.csv"
    path.write_text("id,name\n1,x\n")
    with pytest.raises(MgcError, match="genres.csv format"):
        fma.manifest(str(fma_root))
    path.unlink()
    with pytest.raises(MgcError, match="genres.csv.*not found"):
        fma.manifest(str(fma_root))
