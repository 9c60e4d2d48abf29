import pandas as pd
import pytest

from mgc import manifest
from mgc.errors import MgcError


def write_csv(path, n_per_genre=20, genres=("jazz", "rock", "folk")):
    rows = [{"path": f"audio/{g}_{i}.wav", "label": g} for g in genres for i in range(n_per_genre)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return rows


def test_csv_manifest_resolves_relative_paths_and_makes_a_stratified_split(tmp_path):
    write_csv(tmp_path / "m.csv")
    m = manifest.from_csv(str(tmp_path / "m.csv"))
    t = m.tracks
    assert m.labels == ["folk", "jazz", "rock"]
    assert t["path"].iloc[0].startswith(str(tmp_path / "audio"))
    assert m.source["split"]["method"] == "stratified"
    counts = t.groupby(["genre_top", "split"]).size().unstack()
    assert (counts["training"] == 16).all() and (counts["validation"] == 2).all() and (counts["test"] == 2).all()


def test_stratified_split_is_by_track_and_independent_of_row_order():
    ids = list(range(200))
    genres = [f"g{i % 4}" for i in ids]
    a = dict(zip(ids, manifest.stratified_split(ids, genres, seed=3)))
    b = dict(zip(ids[::-1], manifest.stratified_split(ids[::-1], genres[::-1], seed=3)))
    assert a == b
    assert a != dict(zip(ids, manifest.stratified_split(ids, genres, seed=4)))


def test_csv_with_its_own_split_and_track_ids_is_kept(tmp_path):
    pd.DataFrame(
        {"path": ["/x/a.mp3", "/x/b.mp3"], "label": ["a", ""], "split": ["test", "training"], "track_id": [7, 9]}
    ).to_csv(tmp_path / "m.csv", index=False)
    t = manifest.from_csv(str(tmp_path / "m.csv")).tracks
    assert t["track_id"].tolist() == [7, 9] and t["split"].tolist() == ["test", "training"]
    assert t["label"].tolist() == [0, -1] and t["path"].tolist() == ["/x/a.mp3", "/x/b.mp3"]


@pytest.mark.parametrize(
    "frame,message",
    [
        (pd.DataFrame({"file": ["a.mp3"], "label": ["x"]}), "lacks column"),
        (pd.DataFrame({"path": ["a.mp3", "b.mp3"], "label": ["x", "y"], "split": ["train", "test"]}), "unknown split"),
        (pd.DataFrame({"path": ["a.mp3", "b.mp3"], "label": ["x", "y"], "track_id": [1, 1]}), "track_id 1 appears"),
        (pd.DataFrame({"path": [], "label": [], "track_id": []}), "a header but no rows"),
    ],
)
def test_bad_csv_manifests_name_the_file(tmp_path, frame, message):
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MgcError, match=message) as e:
        manifest.from_csv(str(tmp_path / "m.csv"))
    assert "m.csv" in str(e.value)
    with pytest.raises(MgcError, match="not found"):
        manifest.from_csv(str(tmp_path / "absent.csv"))


def test_folder_layout_one_subfolder_per_genre(tmp_path):
    for g in ("blues", "metal"):
        (tmp_path / g).mkdir()
        for i in range(10):
            (tmp_path / g / f"{g}.{i:05d}.wav").write_bytes(b"x")
    (tmp_path / "README.txt").write_text("ignored")
    m = manifest.from_folder(str(tmp_path))
    assert m.labels == ["blues", "metal"] and len(m) == 20
    assert set(m.tracks["split"]) == {"training", "validation", "test"}
    with pytest.raises(MgcError, match="no audio files"):
        manifest.from_folder(str(tmp_path / "blues"))
