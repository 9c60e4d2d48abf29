"""The training recipe (augmentation, schedule, early stopping) and calibration."""

import json

import numpy as np
import pytest
import torch

from mgc import augment, inputs, metrics
from mgc.models import ModelConfig, build
from mgc.train import PLAIN, TrainConfig, epochs_since_best, lr_factor


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_spectrum_masks_zero_one_band_within_their_width():
    x = torch.ones(64, 20, 40)
    out = augment.mask(x, 0.25, 1, _gen())
    zeroed = (out == 0).all(dim=2)  # [batch, bands]: whole bands set to 0
    assert ((out == 0) == zeroed[:, :, None]).all(), "a frequency mask covers every frame of its bands"
    widths = zeroed.sum(1)
    assert widths.max() <= 5 and widths.max() > 0
    for row in zeroed:  # one contiguous band
        idx = torch.nonzero(row).flatten()
        assert len(idx) == 0 or (idx.diff() == 1).all()
    out = augment.mask(x, 0.25, 2, _gen())
    assert ((out == 0).all(dim=1).sum(1) <= 10).all() and (out == 0).any()
    assert augment.mask(x, 0.0, 1, _gen()) is x


def test_time_shift_rolls_each_example_and_gain_stays_in_range():
    x = torch.arange(10.0).repeat(8, 3, 1)  # [8, 3, 10]
    out = augment.time_shift(x, 0.3, _gen())
    for row in out:
        k = int(row[0, 0])  # the roll that example got
        assert torch.equal(row, torch.roll(x[0], -k, dims=-1)) and min(k, 10 - k) <= 3
    assert not all(torch.equal(out[0], r) for r in out[1:]), "each example draws its own shift"
    wave = torch.ones(500, 100)
    g = augment.gain(wave, 6.0, _gen())[:, 0]
    assert 10 ** (-6 / 20) - 1e-6 <= g.min() < 0.7 and 1.4 < g.max() <= 10 ** (6 / 20) + 1e-6


def test_mixup_targets_sum_to_one_and_one_tracks_segments_stay_apart():
    rng = np.random.default_rng(0)
    y = torch.arange(16) % 4
    targets = torch.nn.functional.one_hot(y, 4).float()
    tracks = torch.arange(16) // 2  # two segments per track
    x = {"logmel": torch.randn(16, 5, 7)}
    _, t = augment.mixup(x, targets, tracks, 0.4, _gen(), rng)
    assert torch.allclose(t.sum(1), torch.ones(16))
    assert (t.max(1).values < 1).sum() >= 8, "most segments are mixed"
    one_track, t1 = augment.mixup(x, targets, torch.zeros(16, dtype=torch.long), 0.4, _gen(), rng)
    assert torch.equal(t1, targets) and torch.equal(one_track["logmel"], x["logmel"]), (
        "segments of one track are never mixed"
    )
    assert augment.mixup(x, targets, tracks, 0.0, _gen(), rng)[1] is targets


@pytest.mark.parametrize("name", ["cnn", "cnn1d", "mm_crnn"])
def test_augmentation_reaches_the_model_only_when_the_training_loop_passes_it(name):
    """The model applies each input kind's augmentation to what it is given; without an Augment
    (validation, test, labelling, embedding) its output is the plain forward pass."""
    cfg = ModelConfig(name=name, channels=(4, 8, 8, 8), dense=(16,), lstm_units=(8,))
    net = build(cfg).eval()
    x = {n: torch.randn(4, *s) for n, s in zip(cfg.inputs, cfg.shapes)}
    aug = TrainConfig(features="f", spec_mask=0.5, time_shift=0.5, gain_db=12).augment(0, "cpu")
    with torch.no_grad():
        plain, again, augmented = net(x), net(x), net(x, augment=aug)
    assert torch.equal(plain, again)
    assert not torch.allclose(plain, augmented)
    off = TrainConfig(features="f", **PLAIN).augment(0, "cpu")
    assert all(torch.equal(inputs.get(n).augment(v, off, off.gen), v) for n, v in x.items()), (
        "the plain recipe changes nothing"
    )


def test_the_schedule_warms_up_then_decays_to_zero():
    f = lr_factor(TrainConfig(features="f", epochs=10, warmup_epochs=2), steps_per_epoch=5)
    rates = [f(k) for k in range(50)]
    assert rates[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 0.01
    flat = lr_factor(TrainConfig(features="f", epochs=10, **PLAIN), steps_per_epoch=5)
    assert {flat(k) for k in range(50)} == {1.0}


def test_epochs_since_best_counts_ties_as_no_improvement():
    history = [{"s": 0.2}, {"s": 0.5}, {"s": 0.5}, {"s": 0.4}]
    assert epochs_since_best(history, "s", "max") == 2
    assert epochs_since_best(history, "s", "min") == 3


def test_temperature_scaling_lowers_the_calibration_error():
    """An over-confident classifier (right 70 % of the time, sure every time) is fixed by one
    temperature, fitted on one half and checked on the other; rankings never change."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 2000)
    pred = np.where(rng.random(2000) < 0.7, y, rng.integers(0, 5, 2000))
    logits = np.full((2000, 5), -4.0)
    logits[np.arange(2000), pred] = 4.0
    lp = metrics.calibrate(logits + rng.normal(0, 0.5, logits.shape), 1.0)
    fit = metrics.fit_temperature(y[:1000], lp[:1000])
    t = fit["temperature"]
    after = metrics.calibrate(lp[1000:], t)
    assert t > 1 and not fit["floored"]  # 1,000 tracks with errors: the log loss decides
    assert metrics.ece(y[1000:], after) < 0.05 < metrics.ece(y[1000:], lp[1000:])
    assert (after.argmax(1) == lp[1000:].argmax(1)).all()
    r = metrics.reliability(y, lp)
    assert r["count"].sum() == 2000 and len(r["count"]) == metrics.ECE_BINS


def _predictions(n: int, accuracy: float, margin: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n tracks of 5 genres: log-probabilities with the true genre `margin` ahead in the logits,
    and targets of which a share 1 - accuracy are another genre."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), y] += margin
    return np.where(rng.random(n) > accuracy, (y + 1) % 5, y), metrics.calibrate(logits, 1.0)


@pytest.mark.parametrize("n", [3, 10, 24])
@pytest.mark.parametrize("margin", [3.0, 6.0])
def test_a_validation_split_all_right_cannot_collapse_the_temperature(n, margin):
    """Every validation track right: the log loss alone falls as T -> 0 (it took the bound, 0.05,
    in 15 of 30 runs on a real 100-clip collection, and a wrong test answer then costs ~7 nats).
    Under the prior and the confidence floor, T stays where a test split of the same model with a
    fifth of its answers wrong has a log loss below 2 (below 2 as well at T = 1), for every seed."""
    for seed in range(5):
        _, lp = _predictions(n, 1.0, margin, seed)
        fit = metrics.fit_temperature(lp.argmax(1), lp)
        assert fit["right"] == fit["n"] == n and fit["temperature"] >= fit["floor"] > 0.1, fit
        confidence = np.exp(metrics.calibrate(lp, fit["temperature"]).max(1)).mean()
        assert confidence <= (n + 1) / (n + 2) + 1e-6
        ty, tlp = _predictions(1000, 0.8, margin, 100 + seed)
        loss = {
            t: metrics.scores(ty, metrics.calibrate(tlp, t), 5)["log_loss"]
            for t in (fit["temperature"], 1.0, np.exp(-3))
        }
        assert loss[fit["temperature"]] < 2 and loss[1.0] < 2 < loss[np.exp(-3)], loss


def test_the_temperature_is_the_validation_fit_where_the_split_is_informative():
    """300 validation tracks, a fifth wrong, an over-confident model: the log loss decides (the
    prior moves T by under 5 %, the floor does not bind), and the test ECE falls."""
    y, lp = _predictions(300, 0.8, 6.0, 0)
    from scipy.optimize import minimize_scalar
    from sklearn.metrics import log_loss

    fit = metrics.fit_temperature(y, lp)
    plain = minimize_scalar(
        lambda s: log_loss(y, np.exp(metrics.calibrate(lp, np.exp(s))), labels=range(5)),
        bounds=(-3, 3),
        method="bounded",
    )
    assert (
        not fit["floored"]
        and fit["temperature"] > 1.5
        and fit["temperature"] == pytest.approx(np.exp(plain.x), rel=0.05)
    )
    ty, tlp = _predictions(2000, 0.8, 6.0, 1)
    assert metrics.ece(ty, metrics.calibrate(tlp, fit["temperature"])) < metrics.ece(ty, tlp) - 0.05


def test_the_multilabel_temperature_cannot_collapse_either():
    """A multi-label validation split whose every track-genre pair is right: T stays well above
    the bound; with a fifth of the pairs' targets wrong, the fit softens the model (T > 1)."""
    rng = np.random.default_rng(0)
    tracks, genres = 12, 6
    ids = np.repeat(np.arange(tracks), 3)
    y = (rng.random((tracks, genres)) < 0.3).astype(float)
    z = np.where(y, 3.0, -3.0)[ids] + rng.normal(0, 1, (len(ids), genres))
    ls = -np.logaddexp(0, -z)  # log-sigmoid
    fit = metrics.fit_temperature_multilabel(ids, y[ids], ls)
    assert fit["n"] == tracks * genres and fit["right"] == fit["n"] and fit["temperature"] > 0.3, fit
    noisy = np.where(rng.random(y.shape) < 0.2, 1 - y, y)
    assert metrics.fit_temperature_multilabel(ids, noisy[ids], ls)["temperature"] > 1


def test_recipe_options_are_checked():
    from mgc.errors import MgcError

    for bad in ({"schedule": "step"}, {"mixup": -1}, {"label_smoothing": 1.0}, {"spec_mask": 1.5}):
        with pytest.raises(MgcError):
            TrainConfig(features="f", **bad)


def test_validation_never_sees_the_augmentation(features, tmp_path):
    """Trained with the strongest augmentation (shifts, masks and mixup at their limits), the
    validation scores a run reports are those of its artifact on the untouched validation
    shards, and its test predictions are the artifact's: only training batches were augmented."""
    import pyarrow.parquet as pq

    from mgc.inference import Predictor
    from mgc.train import check, dataset
    from mgc.train import run as train

    cfg = TrainConfig(
        features=str(features), model="cnn", epochs=2, channels=(4, 8, 8, 8), dense=(32,), batch_size=32, num_workers=1,
        time_shift=1.0, spec_mask=1.0, mixup=1.0, storage_path=str(tmp_path), progress=False,
    )  # fmt: skip
    out = train(cfg)
    prep = check(cfg)
    predictor = Predictor.load(str(tmp_path / "cnn" / "model"))

    def scored(split):
        rows = dataset(str(features), split, prep.target, ["logmel"]).to_pandas()
        lp, _ = predictor({"logmel": np.stack(rows["logmel"].to_numpy())})
        return rows["track_id"].to_numpy(), rows["target"].to_numpy(), lp

    ids, ys, lp = scored("validation")
    again = metrics.flat(metrics.evaluate(ids, ys, lp, len(out["labels"])), "val")
    for k in ("val_segment_accuracy", "val_segment_log_loss", "val_track_log_loss", "val_track_f1_macro"):
        assert again[k] == pytest.approx(out["validation"][k], abs=1e-5), k
    saved = pq.read_table(tmp_path / "cnn" / "test_predictions.parquet")
    ours = metrics.track_level(
        saved["track_id"].to_numpy(), saved["label"].to_numpy(), saved["logprobs"].combine_chunks().to_numpy_ndarray()
    )
    theirs = metrics.track_level(*scored("test"))
    assert np.array_equal(ours[0], theirs[0]) and np.allclose(ours[2], theirs[2], atol=1e-4)


def test_the_baseline_labels_embeds_and_compares_like_a_network(compared_all, all_inputs, inbox, tmp_path):
    """`--model baseline` end to end: fitted by `mgc compare` (compared_all: its row is in the
    table), then `mgc label` on a folder of uploads and `mgc embed` (its standardised statistics
    are the embedding), with a calibrated artifact that holds no pickle."""
    import pandas as pd

    from mgc import label
    from mgc.cli import main

    table = pd.read_csv(compared_all / "comparison.csv").set_index("model")
    m = json.loads((compared_all / "baseline" / "metrics.json").read_text())
    assert table.loc["baseline", "track_accuracy"] == pytest.approx(m["test"]["track"]["accuracy"], abs=1e-4)
    assert m["test"]["track"]["accuracy"] >= 0.9
    assert m["epochs_run"] == 1 and m["model"]["inputs"] == ["logmel", "mfcc"] and m["calibration"]["temperature"] > 0
    model = str(compared_all / "baseline" / "model")
    folder, truth = inbox
    assert (
        main(["label", "--model", model, "--input", str(folder), "--out", str(tmp_path / "labels"), "--no-progress"])
        == 0
    )
    rows = label.read_labels(str(tmp_path / "labels"))
    ok = (
        rows[rows["status"] == "ok"]
        .assign(file=lambda r: [p.removeprefix(f"{folder}/") for p in r["path"]])
        .set_index("file")
    )
    good = truth[truth["status"] == "ok"].set_index("file")
    assert set(ok.index) == set(good.index)
    accuracy = float((ok.loc[good.index, "top_genres"].map(lambda g: g[0]) == good["genre"]).mean())
    assert accuracy >= 0.75, accuracy
    size = 2 * (64 + 20)  # mean and std of 64 mel bands and 20 MFCCs
    assert all(len(e) == size for e in ok["embedding"])
    assert (
        main(
            [
                "embed",
                "--features",
                str(all_inputs),
                "--model",
                model,
                "--out",
                str(tmp_path / "catalogue"),
                "--no-progress",
            ]
        )
        == 0
    )
    precision = pd.read_csv(tmp_path / "catalogue" / "precision_at_k.csv").set_index("genre")
    assert precision.loc["all", "precision@5"] >= 0.8


# Issue 15's setting: a fifth of the training genres flipped, and validation and test (a fifth of
# the tracks each) by artists never in training, recorded with background noise 10-30 dB below the
# music, as new uploads are. On the catalogue's own conditions every recipe solves the corpus
# (bench/README.md, "The training recipe"); here the recipe has work to do. The mid-size cnn at
# 12 epochs is bench/recipe.py's setting, where the default recipe led on 11 of 12 measured pairs
# (3 corpora x 2 seeds x 2 held-out shares); this corpus seed and training seed are one of them.
UPLOADS = dict(
    tracks=240, seconds=9.0, label_noise=0.2, upload_conditions=("noise",), held_out=0.2, broken_share=0.0, seed=7
)
MID = dict(model="cnn", epochs=12, channels=(16, 32, 64, 64), dense=(256, 64, 32), batch_size=32, lr=1e-3)


@pytest.mark.slow
def test_on_one_configuration_the_default_recipe_stays_ahead_of_the_plain_one_and_calibrates(ray_connected, tmp_path):
    """A regression guard on one configuration, not evidence that the recipe wins in general
    (bench/recipe.py's paired runs over several corpora and seeds are: bench/README.md): on this
    corpus and seed, cnn trained by the default recipe (AdamW, warm-up and cosine, shifts, masks,
    mixup) gets more validation tracks right than by the plain one (Adam at a constant rate,
    nothing else) in the same 12 epochs, and no fewer test tracks, on held-out artists recorded
    unlike the catalogue, from labels a fifth wrong. The schedule, the temperature fitted on
    validation (it lowers the validation and test ECE) and the reliability diagram are checked
    as any run's."""
    import pandas as pd
    from conftest import _extract, mgc_beside
    from helpers import cli_flags

    from mgc.synth import SynthConfig, generate

    corpus = generate(SynthConfig(out=str(tmp_path / "corpus"), **UPLOADS), progress=False)
    features = _extract(tmp_path / "corpus", tmp_path / "features")
    runs = tmp_path / "runs"
    base = cli_flags(dict(features=str(features), storage_path=str(runs), num_workers=1, cpus_per_worker=0.5,
                          cache_data=True, seed=0, **MID))  # fmt: skip
    recipes = {"plain": PLAIN, "default": {"patience": 0}}
    mgc_beside(
        ray_connected, *(["train", *base, f"--name={r}", *cli_flags(o), "--no-progress"] for r, o in recipes.items())
    )
    out = {r: json.loads((runs / r / "metrics.json").read_text()) for r in recipes}
    truth = pd.read_csv(f"{corpus}/fma_metadata/synth_truth.csv")
    assert truth["upload"].sum() == (truth["split"] != "training").sum()
    tracks = int((truth["split"] == "validation").sum())
    right = {
        k: round(o["validation"]["val_track_accuracy"] * tracks) for k, o in out.items()
    }  # validation tracks the exported models get right
    assert right["default"] > right["plain"] and right["default"] >= 0.7 * tracks, (right, tracks)
    assert out["default"]["test"]["track"]["accuracy"] >= out["plain"]["test"]["track"]["accuracy"]
    # The rate at each epoch's end: the peak after the one-epoch warm-up (test_the_schedule_warms_up_then_decays_to_zero
    # checks the warm-up itself), then falling to zero.
    rates = [h["lr"] for h in json.loads((runs / "default" / "history.json").read_text())]
    assert (
        rates[0] == pytest.approx(MID["lr"])
        and all(a > b for a, b in zip(rates, rates[1:]))
        and rates[-1] < MID["lr"] / 1000
    ), rates
    c = out["default"]["calibration"]
    assert json.loads((runs / "default" / "model" / "model.json").read_text())["temperature"] == c["temperature"] > 0
    assert (
        c["validation"]["ece_after"] < c["validation"]["ece_before"]
        and c["test"]["ece_after"] < c["test"]["ece_before"]
    ), c
    assert out["default"]["test"]["track"]["ece"] == pytest.approx(c["test"]["ece_after"])
    assert (runs / "default" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
