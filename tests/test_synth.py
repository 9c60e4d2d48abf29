import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from mgc import fma, inputs, synth
from mgc.errors import MgcError
from mgc.features import FeatureConfig


def test_plan_is_deterministic_artist_filtered_and_covers_every_genre_in_every_split():
    cfg = synth.SynthConfig(out="unused", tracks=160, broken_share=0.1, seed=1)
    a, b = synth.plan(cfg), synth.plan(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("artist_id")["split"].nunique().max() == 1
    assert (a.groupby("genre")["split"].nunique() == 3).all()
    assert set(a["genre"]) == set(synth.GENRES) and len(synth.GENRES) >= 8
    assert a["kind"].value_counts().drop("ok").to_dict() == {
        k: 16 // 6 + (i < 16 % 6) for i, k in enumerate(synth.BROKEN_EXPECTED)
    }
    assert not synth.plan(synth.SynthConfig(out="unused", tracks=160, seed=2)).equals(a)


def test_held_out_sets_the_validation_and_test_shares_by_artist():
    """--held-out 0.2 puts about a fifth of the tracks in each of validation and test, artist by
    artist; the default (0.1, the FMA's) is the plan as it was, stamp included."""
    default = synth.SynthConfig(out="unused", tracks=400, seed=3)
    wide = dataclasses.replace(default, held_out=0.2)
    a, b = synth.plan(default), synth.plan(wide)
    assert b.groupby("artist_id")["split"].nunique().max() == 1
    for df, share in ((a, 0.1), (b, 0.2)):
        shares = df["split"].value_counts(normalize=True)
        assert abs(shares["validation"] - share) < 0.03 and abs(shares["test"] - share) < 0.03, shares
    pd.testing.assert_frame_equal(a.drop(columns="split"), b.drop(columns="split"))  # only the splits move
    assert "held_out" not in synth.stamp_of(default) and synth.stamp_of(wide)["held_out"] == 0.2
    for bad in (0.0, 0.5):
        with pytest.raises(MgcError, match="--held-out"):
            dataclasses.replace(default, held_out=bad)


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
    within = np.mean(
        [
            np.linalg.norm(feats[i] - feats[j])
            for i in range(len(feats))
            for j in range(len(feats))
            if i != j and labels[i] == labels[j]
        ]
    )
    assert within > 0.5  # tracks of one genre are not copies of each other


def test_label_noise_flips_training_genres_in_the_metadata_only(tmp_path):
    """--label-noise gives that share of the training tracks another genre in tracks.csv; the
    audio, validation and test are as in the clean corpus, and synth_truth.csv has both."""
    clean = synth.generate(
        synth.SynthConfig(out=str(tmp_path / "clean"), tracks=60, seconds=3.0, broken_share=0.0, seed=4), progress=False
    )
    noisy = synth.generate(
        synth.SynthConfig(
            out=str(tmp_path / "noisy"), tracks=60, seconds=3.0, broken_share=0.0, label_noise=0.3, seed=4
        ),
        progress=False,
    )
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
    args = [
        "synth",
        "--out",
        str(out),
        "--tracks",
        "2000",
        "--seconds",
        "3",
        "--link-pool",
        "16",
        "--fma-proportions",
        "--no-progress",
    ]
    assert main(args) == 0
    ours = fma.read_tracks(str(out / "fma_metadata" / "tracks.csv"), columns=None)
    real = fma.read_tracks(str(fma_sample / "tracks.csv"), columns=None)
    assert list(ours.columns) == list(real.columns)
    pd.testing.assert_series_equal(ours.dtypes, real.dtypes)
    assert ours.index.dtype == real.index.dtype and len(ours) == 2000
    assert set(ours[("set", "subset")]) == set(real[("set", "subset")]) and set(ours[("set", "split")]) == set(
        real[("set", "split")]
    )
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
        assert source.startswith(row.genre.replace(" ", "_") + "-" if row.kind == "ok" else row.kind + "-"), (
            row,
            source,
        )


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
        assert (
            len(x) == n
            and (np.diff(x[:, 0]) == 1).all()
            and 0 <= x[0, 0] <= synth.UPLOAD_OFFSET_S * sr
            and level == 0.5
        )
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
    assert (
        all(10 ** (-30 / 20) <= v <= 10 ** (-1 / 20) for v in levels) and min(levels) < 0.1
    )  # the catalogue's lowest: 0.3
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


# ---------------------------------------------------------------------------------------------
# --multi-genre and --subgenres: genre lists that the audio bears out

SR = 16000  # the audibility tests' renders: 3 s, one segment as the models see it


def _logmel(x: np.ndarray, sr: int = SR) -> np.ndarray:
    import librosa

    return np.log(librosa.feature.melspectrogram(y=x.mean(axis=1), sr=sr, n_mels=32, n_fft=1024, hop_length=512) + 1e-6)


def _stats(x: np.ndarray, sr: int = SR) -> np.ndarray:
    """Per-track log-mel statistics: each band's mean, spread and mean change frame to frame
    (how busy it is: a 16th-note figure, a tremolo, a drum pattern)."""
    m = _logmel(x, sr)
    return np.concatenate([m.mean(axis=1), m.std(axis=1), np.abs(np.diff(m, axis=1)).mean(axis=1)])


def _closure(ids: list[int], parent: dict[int, int]) -> list[int]:
    out = set()
    for i in ids:
        while i:
            out.add(i)
            i = parent[i]
    return sorted(out)


def test_new_options_leave_the_default_corpus_and_its_stamp_alone(tmp_path):
    """Off (the default), --multi-genre and --subgenres change nothing: the stamp has no new keys
    (a corpus written before they existed is reused), and turning them on changes only the genre
    columns of the blends, never a track's artist, split, subset or kind."""
    old_keys = {
        "tracks",
        "seconds",
        "sample_rate",
        "seed",
        "broken_share",
        "unlabelled_share",
        "label_noise",
        "audio_dir",
        "link_pool",
        "fma_proportions",
    }
    default = synth.SynthConfig(out=str(tmp_path / "d"), tracks=120, seed=5)
    assert set(synth.stamp_of(default)) == old_keys
    on = synth.SynthConfig(
        out=str(tmp_path / "o"), tracks=120, seed=5, multi_genre=0.3, subgenres=True, label_noise=0.3
    )
    assert synth.stamp_of(on)["multi_genre"] == 0.3 and synth.stamp_of(on)["subgenres"] is True
    a, b = synth.plan(dataclasses.replace(default, label_noise=0.3)), synth.plan(on)
    blend = b["blend"] != ""
    same = [
        "track_id",
        "artist_id",
        "genre",
        "split",
        "subset",
        "kind",
        "expected",
        "artist_seed",
        "track_seed",
        "upload",
    ]
    pd.testing.assert_frame_equal(a[same], b[same])
    pd.testing.assert_frame_equal(
        a.loc[~blend, ["labelled", "listed_genre"]], b.loc[~blend, ["labelled", "listed_genre"]]
    )
    assert (b.loc[blend, "kind"] == "ok").all() and abs(blend.sum() - 0.3 * (b["kind"] == "ok").sum()) <= 1
    assert (b["blend"] != b["genre"]).all() and b.loc[
        blend, "blend"
    ].nunique() >= 4  # another genre, not always the same
    # Label noise: single-genre training tracks only, and a flipped track names a sub-genre of the genre it is listed as.
    flipped = b["listed_genre"] != b["genre"]
    assert flipped.any() and not (flipped & blend).any() and set(b.loc[flipped, "split"]) == {"training"}
    assert all(synth.SUBGENRE_PARENT[s] == g for s, g in zip(b["listed_subgenre"], b["listed_genre"]))
    assert b.groupby("artist_id")["subgenre"].nunique().max() == 1  # an artist plays one sub-genre
    for bad in ({"multi_genre": 1.5}, {"multi_genre": 0.2, "link_pool": 8}):
        with pytest.raises(MgcError):
            synth.SynthConfig(out="unused", **bad)


def test_multi_genre_and_subgenres_corpus_lists_what_it_plays(tmp_path):
    """`mgc synth --multi-genre 0.3 --subgenres`: blends have no genre_top and two roots, every
    genres_all is genres with their ancestors (genres.csv's parents), a track without genre_top
    that is no blend lists nothing, synth_truth.csv agrees with tracks.csv, and a blend's audio is
    the blend (it is nearer a render with its second genre than one without)."""
    from mgc.cli import main

    out = tmp_path / "mg"
    args = [
        "synth",
        "--out",
        str(out),
        "--tracks",
        "48",
        "--seconds",
        "3",
        "--multi-genre",
        "0.3",
        "--subgenres",
        "--seed",
        "5",
        "--workers",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    meta = out / "fma_metadata"
    tracks = fma.read_tracks(str(meta / "tracks.csv"), columns=[("track", "genres"), ("track", "genres_all")])
    genres = fma.read_genres(str(meta / "genres.csv"))
    parent = genres["parent"].astype(int).to_dict()
    title = genres["title"].to_dict()
    truth = pd.read_csv(meta / "synth_truth.csv", keep_default_na=False).set_index("track_id")
    listed = {t: [int(i) for i in re.findall(r"\d+", s)] for t, s in tracks[("track", "genres")].items()}
    listed_all = {t: [int(i) for i in re.findall(r"\d+", s)] for t, s in tracks[("track", "genres_all")].items()}
    blends = truth.index[truth["genres"].str.contains("|", regex=False)]
    assert 0.3 * 48 * 0.8 < len(blends) <= 0.3 * 48 + 1
    for t, row in truth.iterrows():
        assert listed_all[t] == _closure(listed[t], parent), t
        roots = [title[i] for i in listed_all[t] if parent[i] == 0]
        top = tracks.loc[t, ("track", "genre_top")]
        if t in blends:
            assert pd.isna(top) and sorted(roots) == sorted(row["genres"].split("|")) and len(listed_all[t]) == 4
        elif row["labelled"]:
            assert top == row["genre"] == roots[0] and len(roots) == 1
        else:
            assert pd.isna(top) and listed[t] == [] and listed_all[t] == []
        if listed[t]:  # every listed genre is a sub-genre, the one synth_truth.csv says is heard
            assert sorted(title[i] for i in listed[t]) == sorted(row["subgenres"].split("|"))
    counts = genres["#tracks"].to_dict()
    assert all(counts[g] == sum(g in ids for ids in listed_all.values()) for g in counts)
    # The audio of a blend is the blend, as tracks.csv lists it (the MP3 decodes with encoder padding:
    # compare log-mel profiles, not samples).
    import soundfile as sf

    plan = synth.plan(
        synth.SynthConfig(out=str(out), tracks=48, seconds=3, seed=5, multi_genre=0.3, subgenres=True)
    ).set_index("track_id")
    r = plan.loc[blends[0]]
    x, sr = sf.read(out / fma.audio_path("fma_large", int(blends[0])))
    heard = _logmel(x, sr).mean(axis=1)
    as_listed = synth.render(
        r.genre,
        r.artist_seed,
        r.track_seed,
        3.0,
        sr,
        subgenre=r.subgenre,
        blend=r.blend,
        blend_subgenre=r.blend_subgenre,
    )
    alone = synth.render(r.genre, r.artist_seed, r.track_seed, 3.0, sr, subgenre=r.subgenre)
    assert (
        np.abs(heard - _logmel(as_listed, sr).mean(axis=1)).mean()
        < 0.2
        < np.abs(heard - _logmel(alone, sr).mean(axis=1)).mean()
    )


@pytest.fixture(scope="module")
def voiced():
    """8 genres x 8 artists, 3 s each, the artists of a genre alternating between its two
    sub-genres: genre, sub-genre (0 or 1) and per-track log-mel statistics with the sub-genres'
    voices and (the same seeds) without."""
    rows = []
    for gi, genre in enumerate(synth.GENRES):
        for a in range(8):
            seeds = (2000 + 10 * gi + a, 31 + a)
            voice = _stats(synth.render(genre, *seeds, 3.0, SR, subgenre=synth.SUBGENRES[genre][a % 2][0]))
            rows.append((gi, a % 2, voice, _stats(synth.render(genre, *seeds, 3.0, SR))))
    return tuple(np.array(c) for c in zip(*rows))


def test_subgenres_are_audible_variants_of_their_parent(voiced):
    """Within each parent, a logistic regression on per-track log-mel statistics tells its two
    sub-genres apart (leave one track out: other artists, other tracks) well above chance, and far
    better than it tells the same labels on the same tracks rendered without the sub-genres'
    voices. And the parent genre is as recognisable with the voices as without."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.multiclass import OneVsRestClassifier

    genre, sub, with_voice, without = voiced

    def within_parent(feats):
        scores = []
        for g in range(len(synth.GENRES)):
            f = feats[genre == g]
            f = (f - f.mean(0)) / (f.std(0) + 1e-6)
            scores.append(
                cross_val_score(
                    LogisticRegression(C=0.1, max_iter=2000, solver="liblinear"), f, sub[genre == g], cv=LeaveOneOut()
                ).mean()
            )
        return np.array(scores)

    heard, control = within_parent(with_voice), within_parent(without)
    assert heard.mean() >= 0.85 and heard.min() >= 0.625, heard
    # Without the voices the labels are an artist's coin toss: what is left above chance is
    # chance itself (8 tracks a parent) or an artist's own style, never the sub-genre.
    assert heard.mean() - control.mean() >= 0.2, (heard, control)

    def genre_accuracy(feats):
        f = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
        return cross_val_score(
            OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=2000, solver="liblinear")), f, genre, cv=4
        ).mean()

    assert genre_accuracy(with_voice) >= max(0.8, genre_accuracy(without) - 0.05)


def test_blends_are_heard_as_both_genres(voiced):
    """A multi-label model (a logistic regression per genre on per-track log-mel statistics)
    trained on single-genre tracks and blends hears both genres of held-out blends (other artists,
    other pairs), sub-genre voices and all. Paired: each blend against its first genre's track
    alone (the same render without the second genre), so that what the second genre adds is
    measured: its rank among the 8 genres climbs from where chance leaves it to near the top,
    while the first genre stays near the top."""
    from sklearn.linear_model import LogisticRegression

    genre, _, with_voice, _ = voiced
    rng = np.random.default_rng(0)

    def blends(n, base, with_alone):
        mixed, alone, pairs = [], [], []
        for k in range(n):
            a, b = (int(i) for i in rng.choice(len(synth.GENRES), 2, replace=False))
            ga, gb = synth.GENRES[a], synth.GENRES[b]
            sa, sb = synth.SUBGENRES[ga][k % 2][0], synth.SUBGENRES[gb][(k // 2) % 2][0]
            mixed.append(synth.render(ga, base + k, base + k, 3.0, SR, subgenre=sa, blend=gb, blend_subgenre=sb))
            alone.append(synth.render(ga, base + k, base + k, 3.0, SR, subgenre=sa) if with_alone else None)
            pairs.append((a, b))
        return mixed, alone, pairs

    train, _, train_pairs = blends(40, 7000, False)
    test, test_alone, test_pairs = blends(24, 8000, True)
    x = np.concatenate([with_voice, [_stats(c) for c in train]])
    labels = [{int(g)} for g in genre] + [set(p) for p in train_pairs]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    models = [
        LogisticRegression(C=0.1, max_iter=3000, solver="liblinear").fit((x - mu) / sd, [g in s for s in labels])
        for g in range(len(synth.GENRES))
    ]

    def ranks(clip):  # of each genre by the model's score, 1: the top
        scores = np.array([m.decision_function(((_stats(clip) - mu) / sd)[None])[0] for m in models])
        return np.argsort(np.argsort(-scores)) + 1

    mixed = np.array([ranks(c) for c in test])
    alone = np.array([ranks(c) for c in test_alone])
    first, second = (np.array([r[p[i]] for r, p in zip(mixed, test_pairs)]) for i in (0, 1))
    first_alone, second_alone = (np.array([r[p[i]] for r, p in zip(alone, test_pairs)]) for i in (0, 1))
    # Alone, one genre is heard: the first near the top, the second where chance leaves it (~5 of 8).
    assert first_alone.mean() <= 2.0 and second_alone.mean() >= 4.0, (first_alone, second_alone)
    # Blended, the second genre climbs near the top, and the first stays there: both in the top
    # three for most blends (a model that heard one genre would manage ~2/7).
    assert second.mean() <= 3.0 and (second < second_alone).mean() >= 0.75, (second, second_alone)
    assert first.mean() <= 3.25 and (np.maximum(first, second) <= 3).mean() >= 0.5, (first, second)


def test_crossover_mixes_each_artists_second_genre_under_its_own(tmp_path):
    """--crossover: each artist has one second genre (never its own), mixed under every track at
    a level drawn per track in [0.2, 1] x the share, that share of the track's RMS; everything
    else of the corpus is as without it, and the stamp holds the key only when it is on."""
    default = synth.SynthConfig(out=str(tmp_path / "d"), tracks=120, seed=5)
    on = dataclasses.replace(default, crossover=0.8)
    assert "crossover" not in synth.stamp_of(default) and synth.stamp_of(on)["crossover"] == 0.8
    a, b = synth.plan(default), synth.plan(on)
    same = [
        "track_id",
        "artist_id",
        "genre",
        "listed_genre",
        "split",
        "subset",
        "labelled",
        "kind",
        "artist_seed",
        "track_seed",
        "upload",
    ]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert (a["crossover"] == "").all() and (b["crossover"] != b["genre"]).all() and b["crossover"].nunique() >= 4
    assert b.groupby("artist_id")["crossover"].nunique().max() == 1
    assert b["crossover_level"].between(0.16, 0.8).all() and b["crossover_level"].std() > 0.1
    alone = synth.render("Folk", 1, 2, 4.0, 22050)
    for level in (0.2, 0.8):
        mixed = synth.render("Folk", 1, 2, 4.0, 22050, crossover="Electronic", crossover_level=level)
        # What is left of the mix once the clip alone is projected out is the second genre, at
        # `level` of the clip's RMS (the two are uncorrelated): its energy share is level².
        along = (mixed * alone).sum() / (alone * alone).sum() * alone
        assert ((mixed - along) ** 2).sum() / (along**2).sum() == pytest.approx(level**2, rel=0.1), level
    for bad in ({"crossover": 1.5}, {"crossover": 0.5, "link_pool": 8}):
        with pytest.raises(MgcError):
            synth.SynthConfig(out="unused", **bad)


def test_a_notes_partials_are_those_of_numpys_float_mod_to_the_bit():
    """_partials wraps phases as x - floor(x), not x % 1.0 (ten times dearer): for x >= 0 both are
    exact, so every corpus the thresholds were measured on is unchanged, byte for byte."""
    from mgc.synth import sound

    for freq, n, timbre, decay in (
        (55.0, 22050, "saw", 0.5),
        (440.0 * 2 ** (7 / 12), 5513, "bell", 0.3),
        (3520.0, 700, "pluck", 2.0),
    ):
        rows = [(freq * r, a, d) for r, a, d in sound.TIMBRES[timbre]]
        rows = rows[: next((i for i, (f, _, _) in enumerate(rows) if f >= 22050 / 2 * 0.95), len(rows))]
        f, amp, dmul = (np.array(c)[:, None] for c in zip(*rows))
        t = np.arange(n) / 22050
        w = (2 * np.pi * ((f * t) % 1.0)).astype(np.float32)
        env = (amp * np.exp(-t / (decay * dmul))).astype(np.float32)
        sines, cosines = sound._partials.__wrapped__(freq, n, 22050, timbre, decay)
        assert np.array_equal(sines, np.sin(w) * env) and np.array_equal(cosines, np.cos(w) * env), (freq, timbre)
