import numpy as np
import pandas as pd

from mgc import fma, inputs, synth
from mgc.features import FeatureConfig


def test_plan_is_deterministic_artist_filtered_and_covers_every_genre_in_every_split():
    cfg = synth.SynthConfig(out="unused", tracks=160, broken_share=0.1, seed=1)
    a, b = synth.plan(cfg), synth.plan(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("artist_id")["split"].nunique().max() == 1
    assert (a.groupby("genre")["split"].nunique() == 3).all()
    assert set(a["genre"]) == set(synth.GENRES) and len(synth.GENRES) >= 8
    assert a["kind"].value_counts().drop("ok").to_dict() == {k: 16 // 6 + (i < 16 % 6) for i, k in enumerate(synth.BROKEN_EXPECTED)}
    assert not synth.plan(synth.SynthConfig(out="unused", tracks=160, seed=2)).equals(a)


def test_corpus_metadata_is_in_the_real_fma_format(corpus, truth, fma_sample):
    ours = (corpus / "fma_metadata" / "tracks.csv").read_text().splitlines()[:3]
    real = (fma_sample / "tracks.csv").read_text().splitlines()[:3]
    assert [line.split(",") for line in ours] == [line.split(",") for line in real]
    ours_g = (corpus / "fma_metadata" / "genres.csv").read_text().splitlines()[0]
    assert ours_g == (fma_sample / "genres.csv").read_text().splitlines()[0]


def test_corpus_reads_as_fma_with_broken_files_as_planned(corpus, truth):
    m = fma.manifest(str(corpus), "fma_large", "large")
    assert len(m) == 48 and m.labels == sorted(synth.GENRES)
    tracks = fma.read_tracks(str(corpus / "fma_metadata" / "tracks.csv"), columns=[("track", "genres")])
    assert tracks[("track", "genres")].str.match(r"^\[\d+(, \d+)*\]$").all()
    for row in truth.itertuples():
        p = fma.audio_path(str(corpus / "fma_large"), row.track_id)
        if row.kind == "missing":
            assert not (corpus / p).exists()
        elif row.kind == "empty":
            assert (corpus / p).stat().st_size == 0
    assert set(truth["kind"]) == {"ok", *synth.BROKEN_EXPECTED}


def test_same_seed_same_audio_and_tracks_of_a_genre_vary():
    a = synth.render("Rock", 1, 2, 4.0, 22050)
    np.testing.assert_array_equal(a, synth.render("Rock", 1, 2, 4.0, 22050))
    assert a.shape == (4 * 22050, 2)
    assert not np.allclose(a, synth.render("Rock", 1, 3, 4.0, 22050))


def test_genres_are_separable_but_not_trivially(tmp_path):
    """Nearest-centroid on per-track mean log-mel, leave-one-artist-out: the genres carry signal
    (well above chance) that a real model must learn from varied tracks."""
    cfg = FeatureConfig()
    feats, labels = [], []
    for gi, genre in enumerate(synth.GENRES):
        for artist in range(4):
            x = synth.render(genre, 100 * gi + artist, artist, 6.0, 22050).mean(axis=1)
            logmel = inputs.compute(x, cfg, ("logmel",))["logmel"]
            feats.append(logmel.astype(np.float32).mean(axis=(0, 2)))
            labels.append(gi)
    feats, labels = np.array(feats), np.array(labels)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    correct = 0
    for i in range(len(feats)):
        others = np.arange(len(feats)) != i
        centroids = np.array([feats[others & (labels == g)].mean(0) for g in range(len(synth.GENRES))])
        correct += int(np.argmin(((centroids - feats[i]) ** 2).sum(1)) == labels[i])
    accuracy = correct / len(feats)
    assert accuracy > 3 / len(synth.GENRES), accuracy
    within = np.mean([np.linalg.norm(feats[i] - feats[j]) for i in range(len(feats)) for j in range(len(feats)) if i != j and labels[i] == labels[j]])
    assert within > 0.5  # tracks of one genre are not copies of each other


def test_label_noise_flips_training_genres_in_the_metadata_only(tmp_path):
    """--label-noise gives that share of the training tracks another genre in tracks.csv; the
    audio, validation and test are as in the clean corpus, and synth_truth.csv has both."""
    clean = synth.generate(synth.SynthConfig(out=str(tmp_path / "clean"), tracks=60, seconds=3.0, broken_share=0.0, seed=4), progress=False)
    noisy = synth.generate(synth.SynthConfig(out=str(tmp_path / "noisy"), tracks=60, seconds=3.0, broken_share=0.0, label_noise=0.3, seed=4), progress=False)
    truth = pd.read_csv(f"{noisy}/fma_metadata/synth_truth.csv")
    meta = fma.read_tracks(f"{noisy}/fma_metadata/tracks.csv")[("track", "genre_top")]
    labelled = truth[truth["labelled"]]
    assert (meta.loc[labelled["track_id"]].to_numpy() == labelled["listed_genre"].to_numpy()).all()
    flipped = truth["listed_genre"] != truth["genre"]
    assert set(truth.loc[flipped, "split"]) == {"training"}
    share = flipped[truth["split"] == "training"].mean()
    assert 0.15 < share < 0.45, share
    clean_truth = pd.read_csv(f"{clean}/fma_metadata/synth_truth.csv")
    assert (clean_truth["listed_genre"] == clean_truth["genre"]).all()
    for track_id in truth["track_id"]:
        path = fma.audio_path("fma_large", track_id)
        assert (tmp_path / "noisy" / path).read_bytes() == (tmp_path / "clean" / path).read_bytes()


def test_linked_corpus_at_fma_proportions_loads_like_the_real_tracks_csv(tmp_path, fma_sample):
    """The scale benchmark's corpus builder (`--link-pool`, `--fma-proportions`) at 2,000 tracks:
    its tracks.csv reads through mgc.fma with the real file's columns and dtypes, FMA large's
    subset, split and genre_top shares, and every track is a hard link to a pool clip of its genre."""
    from mgc.cli import main

    out = tmp_path / "linked"
    args = ["synth", "--out", str(out), "--tracks", "2000", "--seconds", "3", "--link-pool", "16", "--fma-proportions", "--no-progress"]
    assert main(args) == 0
    ours = fma.read_tracks(str(out / "fma_metadata" / "tracks.csv"), columns=None)
    real = fma.read_tracks(str(fma_sample / "tracks.csv"), columns=None)
    assert list(ours.columns) == list(real.columns)
    pd.testing.assert_series_equal(ours.dtypes, real.dtypes)
    assert ours.index.dtype == real.index.dtype and len(ours) == 2000
    assert set(ours[("set", "subset")]) == set(real[("set", "subset")]) and set(ours[("set", "split")]) == set(real[("set", "split")])
    subsets = ours[("set", "subset")].value_counts(normalize=True)
    for subset, share in synth.FMA_SUBSET_SHARES.items():
        assert abs(subsets[subset] - share) < 0.03, (subset, subsets[subset])
    splits = ours[("set", "split")].value_counts(normalize=True)
    assert abs(splits["training"] - 0.8) < 0.03 and abs(splits["test"] - 0.1) < 0.03
    labelled = ours[("track", "genre_top")].notna()
    assert labelled[ours[("set", "subset")] != "large"].all()  # small and medium: all labelled, as in the FMA
    assert abs(labelled.mean() - 49_598 / 106_574) < 0.04
    assert [len(fma.manifest(str(out), "fma_large", s)) for s in ("small", "medium", "large")] == sorted(
        [int((ours[("set", "subset")].isin(fma.SUBSETS[: i + 1])).sum()) for i in range(3)]
    )
    # 16 clips shared by 8 genres (2 each) plus one file per broken kind; every other track links to one.
    truth = pd.read_csv(out / "fma_metadata" / "synth_truth.csv")
    pool = {p.stat().st_ino: p.name for p in (out / "_link_pool").iterdir()}
    assert len(pool) == 16 + len(synth.BROKEN_EXPECTED) - 1
    for row in truth.itertuples():
        path = out / fma.audio_path("fma_large", row.track_id)
        if row.kind == "missing":
            assert not path.exists()
            continue
        source = pool[path.stat().st_ino]
        assert source.startswith(row.genre.replace(" ", "_") + "-" if row.kind == "ok" else row.kind + "-"), (row, source)


def test_upload_conditions_record_only_the_held_out_tracks_as_uploads(tmp_path):
    """--upload-conditions records validation and test (never training) as new uploads are:
    each condition does what it says to a known signal, and the catalogue's audio is unchanged."""
    import pytest

    from mgc.cli import main
    from mgc.errors import MgcError

    sr, n = 44100, 44100
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.arange(n + int(synth.UPLOAD_OFFSET_S * sr), dtype=float)[:, None], 2, axis=1)
    for seed in range(5):  # offset: a slice of the first UPLOAD_OFFSET_S and one clip long, at another start each time
        x, level = synth.record_upload(ramp, sr, n, ("offset",), 0.5, np.random.default_rng(seed))
        assert len(x) == n and (np.diff(x[:, 0]) == 1).all() and 0 <= x[0, 0] <= synth.UPLOAD_OFFSET_S * sr and level == 0.5
    white = rng.standard_normal((n, 2))
    x, _ = synth.record_upload(white, sr, n, ("band",), 0.5, rng)  # band: high pass <= 300 Hz, low pass <= 10 kHz
    power = np.abs(np.fft.rfft(x[:, 0])) ** 2
    f = np.fft.rfftfreq(n, 1 / sr)
    mid = power[(f > 700) & (f < 1400)].mean()
    assert power[(f > 13000)].mean() < mid / 10 and power[(f > 5) & (f < 25)].mean() < mid / 10
    tone = np.repeat(np.sin(2 * np.pi * 440 * np.arange(n) / sr)[:, None], 2, axis=1)
    for seed in range(5):  # noise: 10-30 dB below the music
        x, _ = synth.record_upload(tone, sr, n, ("noise",), 0.5, np.random.default_rng(seed))
        snr = 10 * np.log10(np.mean(tone**2) / np.mean((x - tone) ** 2))
        assert 10 - 1e-6 <= snr <= 30 + 1e-6, snr
    levels = [synth.record_upload(tone, sr, n, ("level",), 0.5, np.random.default_rng(s))[1] for s in range(20)]
    assert all(10 ** (-30 / 20) <= v <= 10 ** (-1 / 20) for v in levels) and min(levels) < 0.1  # the catalogue's lowest: 0.3
    peaks = [np.abs(synth.render("Folk", 1, s, 3.0, 22050, upload=("level",))).max() for s in range(4)]
    assert all(10 ** (-30 / 20) - 1e-6 <= p <= 10 ** (-1 / 20) + 1e-6 for p in peaks), peaks  # render applies the level

    conditions = ",".join(synth.UPLOAD_CONDITIONS)
    base = ["synth", "--tracks", "60", "--seconds", "3", "--broken-share", "0", "--seed", "4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "clean")]) == 0
    assert main([*base, "--out", str(tmp_path / "uploads"), "--upload-conditions", conditions]) == 0
    truth = pd.read_csv(tmp_path / "uploads" / "fma_metadata" / "synth_truth.csv")
    assert (truth["upload"] == (truth["split"] != "training")).all() and truth["upload"].any()
    for row in truth.itertuples():
        path = fma.audio_path("fma_large", row.track_id)
        same = (tmp_path / "uploads" / path).read_bytes() == (tmp_path / "clean" / path).read_bytes()
        assert same != row.upload, row
    for bad in (("echo",), ("noise", "noise")):
        with pytest.raises(MgcError, match="upload-conditions"):
            synth.SynthConfig(out="unused", upload_conditions=bad)
    assert main([*base, "--out", str(tmp_path / "bad"), "--upload-conditions", "noise,echo"]) == 2
