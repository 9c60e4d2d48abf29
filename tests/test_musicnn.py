"""The pretrained MSD musicnn tagger: the port against the original TensorFlow graph's outputs,
the `musicnn` input, the head trained on it, and labelling and embedding with no training."""

from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile
from conftest import MUSICNN_HEAD
from helpers import shuffled_manifest

from mgc import label, musicnn
from mgc.cli import main
from mgc.train import TrainConfig

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference"  # a copy of ../shared/musicnn_reference
# Max |port - reference|: 4x what the reference's README gives for a NumPy port. Evaluating the
# same weights in float64 already differs from the reference by up to 2.1x those (the reference's
# own float32 rounding), and a float32 port's summation order moves it further; relative to the
# values (max_pool's reach ~110) these are still 5e-6 or less.
TOLERANCE = {
    "tags": ("taggram", 1.6e-6),
    "embedding": ("penultimate", 2e-5),
    "mean_pool": ("mean_pool", 5.2e-5),
    "max_pool": ("max_pool", 5.2e-4),
}


@pytest.mark.parametrize("clip", ["loud", "quiet"])
def test_the_port_reproduces_the_original_tensorflow_graph(clip):
    """From the WAV file through the front end to the tags, embedding and pooled features."""
    ref = np.load(REFERENCE / "reference.npz")
    y, sr = soundfile.read(REFERENCE / f"{clip}.wav", dtype="float32")
    assert sr == musicnn.SR
    x = musicnn.patches(y)
    assert x.shape == ref[f"logmel_{clip}"].shape == (2, 187, 96)
    np.testing.assert_allclose(x, ref[f"logmel_{clip}"], rtol=0, atol=1e-5)
    out = musicnn.run(x)
    for ours, (theirs, tol) in TOLERANCE.items():
        assert np.abs(out[ours] - ref[f"{theirs}_{clip}"]).max() <= tol, ours
    assert musicnn.TAGS == tuple(
        (REFERENCE / "tags.txt").read_text().split("\n")[:50]
    )  # the order of the graph's outputs
    assert (np.argsort(-out["tags"].mean(0))[:5] == np.argsort(-ref[f"taggram_{clip}"].mean(0))[:5]).all()


def test_the_stored_input_is_the_packages_front_end_for_music_above_16_khz(tmp_path):
    """mgc decodes at its feature rate (22,050 Hz) and resamples each segment to 16 kHz; the
    package loads at 16 kHz directly. For a 44.1 kHz file, the two give the same tags."""
    from mgc import audio, inputs
    from mgc.features import FeatureConfig

    y16, _ = soundfile.read(REFERENCE / "loud.wav", dtype="float32")
    soundfile.write(tmp_path / "loud44.wav", librosa.resample(y16, orig_sr=16000, target_sr=44100), 44100)
    cfg = FeatureConfig(inputs=("musicnn",))
    stored = inputs.compute(audio.load(str(tmp_path / "loud44.wav"), cfg), cfg, ("musicnn",))["musicnn"].astype(
        np.float32
    )
    package = musicnn.run(musicnn.patches(librosa.load(tmp_path / "loud44.wav", sr=musicnn.SR)[0]))
    assert len(stored) == len(package["tags"]) == 2
    # Patch 0 starts at 0 s in both (the package's patch 1 at 2.992 s, the second segment at 3 s).
    assert np.abs(stored[0, musicnn.EMBEDDING :] - package["tags"][0]).max() < 2e-3  # float16 storage


def test_loud_audio_gives_finite_tags():
    """A full-scale clipped signal: the package's float16 log would overflow to inf (mel values
    above 6.55); the port's input and outputs stay finite."""
    rng = np.random.default_rng(0)
    t = np.arange(4 * musicnn.SR) / musicnn.SR
    y = np.clip(8 * (np.sign(np.sin(2 * np.pi * 55 * t)) + rng.normal(0, 1, len(t))), -1, 1).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=y, sr=musicnn.SR, hop_length=musicnn.HOP, n_fft=musicnn.N_FFT, n_mels=musicnn.N_MELS
    )
    assert (10000 * mel.astype(np.float16).astype(np.float32) > np.finfo(np.float16).max).mean() > 0.1, (
        "not loud enough to show the defect"
    )
    x = musicnn.patches(y)
    out = musicnn.run(x)
    assert np.isfinite(x).all() and all(np.isfinite(v).all() for v in out.values())


def _segments(features: Path) -> pd.DataFrame:
    from mgc import storage

    rows = storage.read_parquet(str(features / "features"), columns=["track_id", "musicnn"]).to_pandas()
    return rows.assign(
        genre_top=pd.read_parquet(features / "_manifest.parquet")
        .set_index("track_id")["genre_top"]
        .reindex(rows["track_id"])
        .to_numpy()
    )


def test_synthetic_genres_get_different_tags(tagged):
    """Each stored segment holds the embedding then the 50 tag probabilities; the genres'
    mean tag profiles differ (no constant output), and a genre's tracks agree more with each
    other than with other genres'."""
    rows = _segments(tagged)
    x = np.stack(rows["musicnn"].to_numpy()).astype(np.float32)
    assert x.shape[1] == musicnn.EMBEDDING + len(musicnn.TAGS) and np.isfinite(x).all()
    tags = x[:, musicnn.EMBEDDING :]
    assert ((tags > 0) & (tags < 1)).all()
    profiles = pd.DataFrame(tags).groupby(rows["genre_top"].to_numpy()).mean()
    tops = {g: tuple(np.argsort(-p.to_numpy())[:3]) for g, p in profiles.iterrows()}
    assert len(set(tops.values())) >= 0.75 * len(tops), tops
    unit = tags / np.linalg.norm(tags, axis=1, keepdims=True)
    sim = unit @ unit.T
    same = rows["genre_top"].to_numpy()[:, None] == rows["genre_top"].to_numpy()[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.1


def test_the_head_learns_the_genres_from_the_embedding_and_not_shuffled_labels(musicnn_runs, tagged, tmp_path):
    """`--model head` over musicnn learns the genres (test_train's test of every model), in `mgc
    compare` beside the baseline; with the training labels permuted across tracks it stays low;
    `--model baseline --input musicnn` works too."""
    from mgc.train import run as train

    assert json.loads((musicnn_runs / "head" / "metrics.json").read_text())["validation"]["val_track_accuracy"] >= 0.9
    assert list(pd.read_csv(musicnn_runs / "comparison.csv")["model"]) == [
        "baseline",
        "head",
    ]  # `mgc compare` shows them side by side
    shuffled = shuffled_manifest(tagged, tmp_path / "shuffled.parquet")
    control = train(
        TrainConfig(
            features=str(tagged),
            manifest=shuffled,
            model="head",
            storage_path=str(tmp_path / "control"),
            **MUSICNN_HEAD,
        )
    )
    assert control["validation"]["val_track_accuracy"] < 0.5, control["validation"]
    base = train(
        TrainConfig(
            features=str(tagged), model="baseline", input="musicnn", storage_path=str(tmp_path / "runs"), **MUSICNN_HEAD
        )
    )
    assert base["validation"]["val_track_accuracy"] >= 0.9, base["validation"]


def test_compare_exports_the_model_best_on_validation(musicnn_runs):
    """`mgc compare --export-best`: best/model is the artifact of the run whose validation score is
    the highest, byte for byte, and best.json says which and by what."""
    best = json.loads((musicnn_runs / "best" / "best.json").read_text())
    scores = {
        run: json.loads((musicnn_runs / run / "metrics.json").read_text())["validation"]["val_track_f1_macro"]
        for run in ("baseline", "head")
    }
    assert best["metric"] == "val_track_f1_macro" and best["candidates"] == scores
    assert best["run"] == max(scores, key=scores.get) and best["score"] == max(scores.values())
    for f in ("model.json", "weights.pt"):
        assert (musicnn_runs / "best" / "model" / f).read_bytes() == (
            musicnn_runs / best["run"] / "model" / f
        ).read_bytes()


def test_the_head_reads_the_embedding_beside_the_statistics():
    import torch

    from mgc.models import ModelConfig, build, reads

    cfg = ModelConfig(name="head", inputs=reads("head", "musicnn+logmel+mfcc"))
    net = build(cfg)
    x = {n: torch.randn(4, *s) for n, s in zip(cfg.inputs, cfg.shapes)}
    assert net.encoder.size == 250 + 2 * (128 + 20) and net(x).shape == (4, cfg.n_classes)


def test_label_and_embed_with_the_pretrained_tagger_and_no_training(ray_connected, tagged, inbox, tmp_path):
    """`mgc label --model musicnn`: tags for every readable file, errors for the rest, a re-run
    labels nothing; `mgc embed --model musicnn` makes a catalogue of the embedding."""
    folder, truth = inbox
    out = tmp_path / "labels"
    args = [
        "label",
        "--model",
        "musicnn",
        "--input",
        str(folder),
        "--out",
        str(out),
        "--max-seconds",
        "30",
        "--top-k",
        "5",
        "--no-progress",
    ]
    assert main(args) == 0
    rows = (
        label.read_labels(str(out))
        .assign(file=lambda d: [str(Path(p).relative_to(folder)) for p in d["path"]])
        .set_index("file")
    )
    assert len(rows) == len(truth)
    good = truth[truth["status"] == "ok"]["file"]
    ok = rows.loc[good]
    assert (ok["status"] == "ok").all() and (rows.drop(index=good)["status"] == "error").all()
    assert all(
        set(g) <= set(musicnn.TAGS) and len(g) == 5 and np.all(np.diff(p) <= 0)
        for g, p in zip(ok["top_genres"], ok["top_probs"])
    )
    probs = np.stack(ok["probabilities"].to_numpy())
    assert (
        probs.shape[1] == 50 and ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(1), 1.0)
    )  # a sigmoid per tag
    assert all(len(e) == musicnn.EMBEDDING for e in ok["embedding"])
    assert set(ok["model_id"]) == {label.model_id("musicnn")}
    assert main(args) == 0
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["labelled"] == 0 and summary["skipped"] == len(truth)

    assert (
        main(
            [
                "embed",
                "--features",
                str(tagged),
                "--model",
                "musicnn",
                "--out",
                str(tmp_path / "catalogue"),
                "--no-progress",
            ]
        )
        == 0
    )
    catalogue = pd.read_parquet(tmp_path / "catalogue" / "catalogue.parquet")
    assert len(catalogue) == _segments(tagged)["track_id"].nunique()
    assert len(catalogue["embedding"].iloc[0]) == musicnn.EMBEDDING


def test_a_head_artifact_labels_from_the_musicnn_input_alone(musicnn_runs, inbox):
    """Labelling with a head trained on musicnn computes that input only."""
    from mgc import artifact
    from mgc.features import FeatureConfig
    from mgc.label import featurise

    path = musicnn_runs / "head" / "model"
    model, meta = artifact.load(str(path))
    folder, truth = inbox
    audio = str(folder / truth[truth["status"] == "ok"]["file"].iloc[0])
    row = featurise(
        {"path": audio, "error": None, "size": -1, "mtime_ns": -1},
        FeatureConfig.from_dict(meta["feature_config"]),
        model.cfg.inputs,
        {},
    )
    assert row["status"] == "ok" and "musicnn" in row and "logmel" not in row and "mfcc" not in row
    got = label.label_file(audio, str(path))
    assert got["status"] == "ok" and got["top_genres"][0] in meta["labels"]


def test_musicnn_patches_runs_the_network_on_k_segments_and_copies_the_nearest():
    from mgc import inputs
    from mgc.errors import MgcError
    from mgc.features import FeatureConfig
    from mgc.synth import render

    y = render("Rock", 1, 2, 30.0, 22050).mean(1)
    every = inputs.compute(y, FeatureConfig(inputs=("musicnn",)), ("musicnn",))["musicnn"]
    three = inputs.compute(y, FeatureConfig(inputs=("musicnn",), musicnn_patches=3), ("musicnn",))["musicnn"]
    assert every.shape == three.shape == (10, 250)
    assert len(np.unique(every, axis=0)) == 10 and len(np.unique(three, axis=0)) == 3
    for seg, ran in enumerate([1, 1, 1, 1, 5, 5, 5, 8, 8, 8]):  # the centres of three spans of 10/3: segments 1, 5, 8
        np.testing.assert_allclose(three[seg], every[ran], rtol=0, atol=2e-3)  # float16; batch sizes may round apart
    with pytest.raises(MgcError, match="--musicnn-patches -1 is out of range"):
        FeatureConfig(musicnn_patches=-1)
    with pytest.raises(MgcError, match="musicnn input needs segments of at least 3 s"):
        FeatureConfig(inputs=("musicnn",), segment_seconds=2.0)
