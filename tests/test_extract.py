"""The extraction job on a real Ray cluster, in-process driver."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from helpers import assert_complete_and_unique, first_shard_tensors, read_output

from mgc import fma, manifest
from mgc.cli import main
from mgc.errors import MgcError
from mgc.extract import ExtractConfig, run
from mgc.features import FeatureConfig


def test_shards_hold_every_good_track_once_and_every_bad_one_as_a_reject(extracted, truth, corpus):
    out, summary = extracted
    feats, rejects = assert_complete_and_unique(out, truth, segments_per_track=3)
    assert (rejects["path"].str.startswith(str(corpus))).all()
    assert all(
        detail.startswith(f"{path}: ") for path, detail in zip(rejects["path"], rejects["detail"])
    )  # every reason, too_short and silent too
    # Labels, genres and splits per track agree with the metadata and the label map.
    config = json.loads((out / "_config.json").read_text())
    labels = config["labels"]
    per_track = feats.drop_duplicates("track_id").merge(truth, on="track_id")
    assert (per_track["split_x"] == per_track["split_y"]).all()
    lab = per_track[per_track["labelled"]]
    assert [labels[i] for i in lab["label"]] == list(lab["genre"]) == list(lab["genre_top"])
    assert (per_track.loc[~per_track["labelled"], "label"] == -1).all()
    assert feats.groupby("track_id")["split"].nunique().max() == 1
    # Summary agrees with what is on disk.
    assert summary["tracks_ok"] == feats["track_id"].nunique() and summary["segments"] == len(feats)
    assert summary["rejects_by_reason"] == rejects["reason"].value_counts().to_dict()
    assert json.loads((out / "_summary.json").read_text())["tracks_ok"] == summary["tracks_ok"]
    assert summary["this_run"]["tracks_processed"] == 48 and summary["this_run"]["tracks_per_s"] > 0
    assert config["feature_config"] == FeatureConfig().to_dict()


def test_tensor_columns_are_fixed_shape_float16(extracted):
    logmel, mfcc, ids = first_shard_tensors(extracted[0])
    assert logmel.shape[1:] == (128, 130) and mfcc.shape[1:] == (20, 130)
    assert logmel.dtype == np.float16 and np.isfinite(logmel).all()
    assert len(ids) == len(logmel)


def test_each_split_is_a_row_group_that_split_reads_skip_and_labels_are_in_the_manifest(extracted):
    """Training reads one split's segments: the shards keep them in row groups of their own, with
    statistics, so a filtered read decodes nothing else. No label is in a shard: they are the
    manifest's, joined when training reads them."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    groups, wanted_groups = 0, 0
    for path in sorted((extracted[0] / "features").glob("part-*.parquet")):
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        keys = []
        assert not {"label", "genre_top", "genres", "genres_all"} & set(names)
        for g in range(meta.num_row_groups):
            split = meta.row_group(g).column(names.index("split")).statistics
            assert split.min == split.max, (path, g)
            keys.append(split.min)
        assert len(set(keys)) == len(keys)  # one row group per split
        groups += meta.num_row_groups
        wanted_groups += keys.count("validation")
    dataset = pads.dataset(str(extracted[0] / "features"), format="parquet")
    wanted = pads.field("split") == "validation"
    fragments = [f.subset(wanted) for f in dataset.get_fragments()]
    kept = sum(f.num_row_groups for f in fragments)
    assert 0 < kept == wanted_groups < groups, (kept, wanted_groups, groups)
    assert sum(f.to_table(columns=["split"]).num_rows for f in fragments if f.num_row_groups) == dataset.count_rows(
        filter=wanted
    )


def test_extraction_in_waves_writes_the_same_segments(extracted, corpus, tmp_path, monkeypatch, truth):
    """Chunks go to Ray Data in waves (the driver's memory stays flat at any corpus size): several
    waves write what one does."""
    from mgc import extract

    monkeypatch.setattr(extract, "WAVE", 1)  # waves of 8 chunks per CPU
    out = tmp_path / "waves"
    summary = run(
        fma.manifest(str(corpus), "fma_large", "large"), ExtractConfig(out=str(out), tracks_per_shard=2, progress=False)
    )
    assert summary["this_run"]["chunks_processed"] == 24 > 8 * summary["this_run"]["cluster_cpus"]
    ours, _ = assert_complete_and_unique(out, truth, segments_per_track=3)
    theirs, _ = read_output(extracted[0])
    key = ["track_id", "segment"]
    assert ours.sort_values(key)[key].to_numpy().tolist() == theirs.sort_values(key)[key].to_numpy().tolist()


def test_ray_data_reads_the_shards_as_tensors(extracted):
    import ray

    ds = ray.data.read_parquet(str(extracted[0] / "features"))
    batch = ds.take_batch(4)
    assert batch["logmel"].shape == (4, 128, 130) and batch["logmel"].dtype == np.float16


def test_rerun_skips_everything_and_rewrites_nothing(extracted, corpus):
    out, first = extracted
    before = {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()}
    summary = run(
        fma.manifest(str(corpus), "fma_large", "large"), ExtractConfig(out=str(out), tracks_per_shard=5, progress=False)
    )
    assert summary["this_run"]["tracks_processed"] == 0 and summary["this_run"]["chunks_skipped"] == 10
    assert {p: p.stat().st_mtime_ns for p in (out / "features").iterdir()} == before
    assert summary["tracks_ok"] == first["tracks_ok"]


def test_a_changed_feature_config_into_the_same_output_is_refused(extracted, corpus):
    out, _ = extracted
    with pytest.raises(MgcError, match=r"different FeatureConfig \(n_mels: 128 -> 64\)"):
        run(
            fma.manifest(str(corpus)),
            ExtractConfig(out=str(out), features=FeatureConfig(n_mels=64), tracks_per_shard=5),
        )
    more = FeatureConfig(inputs=("logmel", "mfcc", "waveform"))
    with pytest.raises(
        MgcError, match=r"different FeatureConfig \(inputs: \['logmel', 'mfcc'\] -> \['logmel', 'mfcc', 'waveform'\]\)"
    ):
        run(fma.manifest(str(corpus)), ExtractConfig(out=str(out), features=more, tracks_per_shard=5))
    with pytest.raises(MgcError, match="tracks-per-shard"):
        run(fma.manifest(str(corpus)), ExtractConfig(out=str(out), tracks_per_shard=6))
    with pytest.raises(MgcError, match="track list"):
        run(fma.manifest(str(corpus), subset="medium"), ExtractConfig(out=str(out), tracks_per_shard=5))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--fma-root", "{tmp}/nowhere", "--out", "{tmp}/o"], "nowhere: FMA root not found"),
        (["--fma-root", "{corpus}", "--out", "{tmp}/file.txt/o"], "file.txt/o: output is not writable"),
        (
            ["--fma-root", "{corpus}", "--audio-dir", "fma_small", "--out", "{tmp}/o"],
            "fma_small: audio folder not found",
        ),
        (["--manifest", "{tmp}/none.csv", "--out", "{tmp}/o"], "none.csv: manifest not found"),
    ],
)
def test_cli_fails_fast_with_one_line(tmp_path, corpus, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    code = main(["extract", *[a.format(tmp=tmp_path, corpus=corpus) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_subset_is_refused_by_the_cli(capsys, corpus):
    with pytest.raises(SystemExit) as e:
        main(["extract", "--fma-root", str(corpus), "--subset", "huge", "--out", "x"])
    assert e.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_csv_manifest_of_mixed_formats_and_rates(ray_connected, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, (ext, fmt, sr, ch) in enumerate(
        [("wav", "WAV", 16000, 1), ("flac", "FLAC", 48000, 2), ("ogg", "OGG", 32000, 2), ("mp3", "MP3", 44100, 1)] * 3
    ):
        x = 0.2 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(int(6.5 * sr)) / sr)
        x = x + 0.01 * rng.standard_normal(len(x))
        sf.write(tmp_path / f"t{i}.{ext}", np.stack([x] * ch, 1) if ch > 1 else x, sr, format=fmt)
        rows.append({"path": f"t{i}.{ext}", "label": ["low", "high"][i % 2]})
    rows.append({"path": "gone.wav", "label": "low"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out"
    summary = run(
        manifest.from_csv(str(tmp_path / "m.csv")), ExtractConfig(out=str(out), tracks_per_shard=4, progress=False)
    )
    assert summary["tracks_ok"] == 12 and summary["segments"] == 24
    assert summary["rejects_by_reason"] == {"missing_file": 1}
    feats, _ = read_output(out)
    config = json.loads((out / "_config.json").read_text())
    assert config["source"]["split"]["method"] == "stratified"  # the split made is recorded
    recorded = pd.read_parquet(out / "_manifest.parquet")
    assert len(recorded) == 13
    made = feats.drop_duplicates("track_id").set_index("track_id")["split"]
    assert recorded.set_index("track_id").loc[made.index, "split"].equals(made)
    assert os.path.exists(out / "_summary.json")
