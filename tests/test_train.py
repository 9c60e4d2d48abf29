"""Ray Train on CPU: DDP, learning, honest metrics, failures, resume, the artifact, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO
from helpers import shuffled_manifest

from mgc import fma, manifest, storage
from mgc.errors import MgcError
from mgc.extract import ExtractConfig
from mgc.extract import run as extract
from mgc.features import FeatureConfig
from mgc.models import ARCHITECTURES, MODELS, reads
from mgc.train import TrainConfig, check, check_resources, prepare
from mgc.train import run as train

# Small networks and 0.5 CPU per worker: 2 DDP workers and Ray Data's reads share 2 CPUs.
SMALL = dict(
    channels=(8, 16, 32, 32),
    dense=(64, 32),
    lstm_units=(32, 32),
    batch_size=32,
    lr=2e-3,
    dropout=0.2,
    num_workers=2,
    cpus_per_worker=0.5,
    progress=False,
)


@pytest.mark.parametrize("model", ["cnn", "cnn_lstm"])
def test_models_learn_the_genres(compared, model):
    m = json.loads((compared / model / "metrics.json").read_text())
    assert m["validation"]["val_track_accuracy"] >= 0.9, m["validation"]
    assert m["test"]["track"]["accuracy"] >= 0.8, m["test"]["track"]
    for level in ("segment", "track"):
        assert set(m["test"][level]) >= {
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "log_loss",
            "confusion",
        }
    cm = np.array(m["test"]["track"]["confusion"])
    assert cm.shape == (8, 8) and cm.sum() == m["test"]["track"]["n"]
    history = json.loads((compared / model / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for h in history:  # time waiting for batches is part of the epoch's time, the first batch's part of it
        assert 0 < h["train_first_batch_s"] <= h["train_data_wait_s"] < h["train_s"], h
    for png in ("confusion_matrix.png", "learning_curves.png"):
        assert (compared / model / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(compared / "comparison.csv")
    assert list(table["model"]) == ["cnn", "cnn_lstm"]
    row = table.set_index("model").loc[model]
    assert row["track_accuracy"] == pytest.approx(m["test"]["track"]["accuracy"], abs=1e-4)
    assert "| cnn_lstm" in (compared / "comparison.md").read_text()


@pytest.mark.parametrize("model", MODELS)
def test_every_model_learns_the_genres(request, model):
    """All ten models of the registry, trained through mgc's loop (the baseline fitted in closed
    form), learn the genres of test tracks: cnn and cnn_lstm on the log-mel shards, head on the
    musicnn input (tagged), the others on the shards with every input (compared_all)."""
    runs = request.getfixturevalue(
        {"cnn": "compared", "cnn_lstm": "compared", "head": "musicnn_runs"}.get(model, "compared_all")
    )
    m = json.loads((runs / model / "metrics.json").read_text())
    # On the test split, never seen in choosing the epoch; chance is 0.125, the runs reach 0.89-1.0.
    assert m["test"]["track"]["accuracy"] >= 0.8, (model, m["test"]["track"])
    assert m["model"]["inputs"] == list(reads(model, "mfcc" if model == "crnn" else "")) and m["test"]["track"]["n"] > 0
    history = json.loads((runs / model / "history.json").read_text())
    if ARCHITECTURES[model].fit:
        assert len(history) == 1 and history[0]["train_loss"] < np.log(len(m["labels"])), "one fit, better than chance"
    else:
        assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_artifact_predicts_the_same_in_a_plain_process(compared, features):
    """No Ray in the process: the artifact alone reproduces the test predictions of training."""
    script = f"""
import sys, numpy as np, pyarrow.parquet as pq, pyarrow.compute as pc, torch
from mgc import artifact
model, meta = artifact.load({str(compared / "cnn" / "model")!r})
import pandas as pd
t = pq.read_table({str(features / "features")!r}, columns=['track_id', 'split', *model.cfg.inputs])
top = pd.read_parquet({str(features / "_manifest.parquet")!r}).set_index('track_id')['genre_top']
t = t.filter(pc.equal(t['split'], 'test'))
t = t.filter(top.reindex(t['track_id'].to_numpy()).notna().to_numpy())  # the labelled test tracks, as training scored them
x = {{n: torch.from_numpy(t[n].combine_chunks().to_numpy_ndarray().astype(np.float32)) for n in model.cfg.inputs}}
with torch.no_grad():
    lp = torch.log_softmax(model(x), 1).numpy()
saved = pq.read_table({str(compared / "cnn" / "test_predictions.parquet")!r})
order = np.argsort(t['track_id'].to_numpy(), kind='stable')
ref_order = np.argsort(saved['track_id'].to_numpy(), kind='stable')
ref = saved['logprobs'].combine_chunks().to_numpy_ndarray()
assert np.allclose(lp[order], ref[ref_order], atol=1e-4), np.abs(lp[order] - ref[ref_order]).max()
assert 'ray' not in sys.modules
print(len(lp))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) > 0


def test_shuffled_labels_do_not_reach_high_accuracy_and_stop_early(all_inputs, tmp_path):
    """The negative control, on the waveform: cnn1d at the settings that learn the genres
    (compared_all) stays near chance when the training labels are permuted across tracks; its
    validation score cannot improve for long, so --patience stops it before its last epoch, and
    the artifact is still its best checkpoint."""
    import torch

    from mgc.train import SCORE, checkpoint_state

    shuffled = shuffled_manifest(all_inputs, tmp_path / "shuffled.parquet")
    sizes = dict(
        channels=(4, 8, 16, 16), dense=(64, 32), batch_size=16, lr=3e-3, dropout=0.2, num_workers=1, progress=False
    )
    cfg = TrainConfig(
        features=str(all_inputs),
        manifest=shuffled,
        model="cnn1d",
        epochs=16,
        patience=3,
        storage_path=str(tmp_path / "runs"),
        cache_data=True,
        **sizes,
    )
    out = train(cfg)
    assert out["validation"]["val_track_accuracy"] < 0.5, out["validation"]
    history = json.loads((tmp_path / "runs" / "cnn1d" / "history.json").read_text())
    scores = [h[SCORE] for h in history]
    assert out["stopped_early"] and out["epochs_run"] == len(history) < cfg.epochs
    assert history[-1]["early_stop"] and len(scores) - 1 - int(np.argmax(scores)) == cfg.patience
    assert out["validation"][SCORE] == max(scores)
    best = checkpoint_state(cfg.run_dir, out["best_epoch"])["model"]
    exported = torch.load(tmp_path / "runs" / "cnn1d" / "model" / "weights.pt", weights_only=True)
    assert exported.keys() == best.keys() and all(torch.equal(exported[k], best[k]) for k in best)


def test_training_polls_its_workers_often_unless_told_otherwise(features, monkeypatch):
    """Ray Train's controller takes each epoch's report when it polls the workers (every 2 s by
    default; bench/poll.py measures what that cost): the trainer has fit() pass the controller
    mgc's interval, or the one set in the environment."""
    from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR, get_env_vars_to_propagate

    from mgc.train import POLL_INTERVAL_S, trainer

    cfg = TrainConfig(
        features=str(features), model="cnn", channels=(4, 8, 16, 16), dense=(32,), num_workers=1, progress=False
    )
    prep = check(cfg)
    monkeypatch.delenv(HEALTH_CHECK_INTERVAL_S_ENV_VAR, raising=False)
    trainer(cfg, prep)
    assert float(get_env_vars_to_propagate()[HEALTH_CHECK_INTERVAL_S_ENV_VAR]) == POLL_INTERVAL_S < 2.0
    monkeypatch.setenv(HEALTH_CHECK_INTERVAL_S_ENV_VAR, "1.5")
    trainer(cfg, prep)
    assert get_env_vars_to_propagate()[HEALTH_CHECK_INTERVAL_S_ENV_VAR] == "1.5"


def test_ray_trains_controller_opens_nothing_of_mgc(features):
    """Ray Train's controller unpickles the run's context as it starts: in a fresh process, the
    context of an mgc run (its worker config sealed: mgc.sealed) unpickles without importing any
    mgc module but the seal's, and Ray's record of the run shows the config's size, not its bytes;
    opened, it is the worker config the driver made."""
    import ray
    from ray.train.v2._internal.state.schema import _to_json_serializable_value

    from mgc.train import WorkerConfig, prepare, trainer

    cfg = TrainConfig(
        features=str(features), model="cnn", channels=(4, 8, 16, 16), dense=(32,), num_workers=1, progress=False
    )
    context = trainer(cfg, prepare(cfg)).train_run_context
    script = (
        "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'mgc')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], input=ray.cloudpickle.dumps(context), capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout.decode().split() == ["mgc", "mgc.sealed"]
    shown = _to_json_serializable_value(context.train_loop_config)["worker"]
    assert re.fullmatch(r"Sealed\(\d+ bytes\)", shown), shown[:200]
    opened = context.train_loop_config["worker"].open()
    assert isinstance(opened, WorkerConfig) and opened.train == cfg and opened.model.name == "cnn"


def test_a_seed_gives_the_same_model_on_every_run(features, tmp_path):
    """One worker and one seed, streamed from the shards and cached in the object store: the same
    batches in the same order (the blocks in their seeded order, whatever order their reads
    finish in), so the same loss and weights. Fails when blocks come as their reads finish."""
    import torch

    sizes = dict(channels=(4, 8, 16, 16), dense=(32,), batch_size=16, lr=3e-3, num_workers=1, epochs=1, progress=False)

    def weights(name: str, cache: bool) -> tuple[list, dict]:
        train(
            TrainConfig(
                features=str(features),
                model="cnn",
                name=name,
                seed=3,
                cache_data=cache,
                storage_path=str(tmp_path / "runs"),
                **sizes,
            )
        )
        history = json.loads((tmp_path / "runs" / name / "history.json").read_text())
        return [h["train_loss"] for h in history], torch.load(
            tmp_path / "runs" / name / "model" / "weights.pt", weights_only=True
        )

    (l1, w1), (l2, w2) = weights("streamed", False), weights("cached", True)
    assert l1 == l2 and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_ddp_ranks_stay_in_step_in_mgcs_own_loop(compared, features):
    """`mgc compare` trained with two workers, each on its own share of the data: every epoch,
    both ranks' weights hash the same (DDP averaged the gradients), and training moved them. Each
    rank read as many rows as the other, and together they read the training split's rows once
    (rows and their row_digest add up: equal batches on both ranks would count them twice), but
    for the one row Ray's equal split leaves out to keep the ranks in step, a row of the split,
    and not the same one every epoch."""
    from mgc.train import row_digest

    prep = check(TrainConfig(features=str(features)))
    index = pq.read_table(features / "features", columns=["track_id", "split"]).to_pandas()
    ids = index.loc[index["split"] == "training", "track_id"].to_numpy(np.int64)
    ids = ids[prep.target.labelled(ids)]
    assert len(ids) == prep.segments["training"]
    one_row = {int(row_digest(np.array([t], np.int64))): t for t in set(ids.tolist())}
    for model in ("cnn", "cnn_lstm"):
        history = json.loads((compared / model / "history.json").read_text())
        digests = [h["weights_sha256"] for h in history]
        assert all(len(d) == 2 and d[0] == d[1] for d in digests), digests
        assert len({d[0] for d in digests}) == len(digests)  # a new state every epoch
        left_out = []
        for h in history:
            shares = np.array(h["train_share_by_rank"], dtype=np.int64)
            assert shares.shape == (2, 2) and shares[0, 0] == shares[1, 0] > 0, shares
            assert h["train_segments"] == shares[:, 0].sum() and len(ids) - shares[:, 0].sum() in (0, 1), (
                h["epoch"],
                shares,
            )
            rest = int((np.array([row_digest(ids)]) - shares[:, 1:].sum(0))[0])  # int64, wrapping as the digest does
            if len(ids) > shares[:, 0].sum():
                assert rest in one_row, (h["epoch"], shares)
                left_out.append(one_row[rest])
            else:
                assert rest == 0, (h["epoch"], shares)
        assert len(set(left_out)) > 1 or not left_out, left_out


def test_validation_shared_by_two_ranks_scores_as_one_rank_does(compared, features):
    """With two workers each rank scores its own share of the validation tracks and rank 0 scores
    the gathered predictions: the best epoch's validation metrics (history.json) equal those of its
    exported weights scored on the driver alone, over the whole split."""
    from mgc import artifact, metrics
    from mgc.train import evaluate, split_predictions

    for model in ("cnn", "cnn_lstm"):
        history = json.loads((compared / model / "history.json").read_text())
        best = json.loads((compared / model / "metrics.json").read_text())["best_epoch"]
        assert len(history[0]["weights_sha256"]) == 2  # two ranks
        prep = check(TrainConfig(features=str(features), model=model))
        net, _ = artifact.load(str(compared / model / "model"))
        scored = evaluate(prep.target, *split_predictions(TrainConfig(features=str(features)), prep, net, "validation"))
        assert scored["track"]["n"] == prep.tracks["validation"]
        alone = metrics.flat(scored, "val")
        assert history[best - 1]["val_segments"] == prep.segments["validation"]  # each segment scored once
        shared = {k: v for k, v in history[best - 1].items() if k in alone}
        assert shared.keys() == alone.keys(), (shared.keys(), alone)
        assert shared == pytest.approx(alone, rel=1e-5, abs=1e-6), model


def test_a_run_name_is_not_reused_for_another_configuration(compared, features):
    other = dict(SMALL, channels=(4, 8, 16, 16))
    with pytest.raises(MgcError, match="holds a run with a different model config; choose another --name"):
        train(
            TrainConfig(features=str(features), model="cnn", storage_path=str(compared), name="cnn", epochs=10, **other)
        )


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_checkpoint(ray_cluster, features, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--features", str(features), "--storage-path", str(runs), "--name", "killed",
           "--epochs", "3", "--channels", "8,16,32,32", "--dense", "64,32", "--cpus-per-worker", "0.5", "--batch-size", "32", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ray_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 400
    while not (runs / "killed" / "epoch-0002").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    workers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if " ".join(p.info["cmdline"] or []).startswith("ray::RayTrainWorker")
    ]
    assert workers and proc.poll() is None, "training ended before a worker could be killed"
    workers[-1].kill()
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    m = json.loads((runs / "killed" / "metrics.json").read_text())
    # Resumed from a checkpoint (epoch 1 if the kill came while epoch 2's was being reported), not from scratch.
    assert m["resumed_at"] and 1 <= m["resumed_at"][0] < 3, m["resumed_at"]
    assert m["epochs_run"] == 3
    assert [h["epoch"] for h in json.loads((runs / "killed" / "history.json").read_text())] == [1, 2, 3]

    # Re-running the same run name resumes it: one more epoch from the last checkpoint, not from scratch.
    same = dict(
        channels=(8, 16, 32, 32), dense=(64, 32), cpus_per_worker=0.5, batch_size=32, progress=False
    )  # as on the command line
    again = train(
        TrainConfig(features=str(features), model="cnn", storage_path=str(runs), name="killed", epochs=4, **same)
    )
    assert again["resumed_at"][-1] == 3 and again["epochs_run"] == 4


@pytest.mark.slow
def test_the_readme_train_command_runs_with_its_defaults(extracted, tmp_path, capsys):
    """The README's `mgc train --features F --model cnn_lstm --epochs 30 --storage-path runs/`, for one
    epoch on the 48-track corpus (the default sizes are slow on 2 CPUs): with the default sizes and
    workers it runs on the suite's 2-CPU cluster (workers: every CPU but the one Ray Data's reads
    keep), and says what it chose."""
    from mgc.cli import main

    runs = tmp_path / "runs"
    assert (
        main(
            [
                "train",
                "--features",
                str(extracted[0]),
                "--model",
                "cnn_lstm",
                "--epochs",
                "1",
                "--storage-path",
                str(runs),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "mgc: train cnn_lstm: 1 worker(s) x 1 CPU" in capsys.readouterr().err
    m = json.loads((runs / "cnn_lstm" / "metrics.json").read_text())
    assert m["train"]["num_workers"] == 1 and m["model"]["channels"] == [64, 128, 256, 512] and m["epochs_run"] == 1


def test_a_model_is_refused_an_input_before_any_worker_starts(features, tmp_path, capsys):
    """Shards without the waveform cannot train a waveform model, and --input must name an
    input the model reads: one line each, from the checks that run before Ray."""
    from mgc.cli import main

    with pytest.raises(
        MgcError, match=r"cnn1d reads waveform, but .* holds logmel, mfcc: extract with --inputs logmel,mfcc,waveform"
    ):
        check(TrainConfig(features=str(features), model="cnn1d"))
    with pytest.raises(MgcError, match=r"mm_crnn reads waveform\+logmel"):
        check(TrainConfig(features=str(features), model="mm_crnn"))
    assert (
        main(
            [
                "train",
                "--features",
                str(features),
                "--model",
                "cnn1d",
                "--input",
                "mfcc",
                "--storage-path",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "cnn1d cannot read mfcc; it reads waveform" in capsys.readouterr().err
    prep = check(TrainConfig(features=str(features), model="cnn", input="mfcc", channels=(4, 8, 8, 8), dense=(16,)))
    assert prep.model.inputs == ("mfcc",) and prep.model.shapes == ((20, 130),)
    assert not list(tmp_path.iterdir()), "a refused run left a run directory"


def _extract_variant(src_features, dest, **feature_kwargs):
    config = json.loads((src_features / "_config.json").read_text())
    root = config["source"]["root"]
    extract(
        fma.manifest(root),
        ExtractConfig(out=str(dest), tracks_per_shard=16, features=FeatureConfig(**feature_kwargs), progress=False),
    )
    return dest


def test_bad_inputs_fail_before_any_worker_starts(features, tmp_path):
    def cfg(path, **kw):
        return TrainConfig(features=str(path), storage_path=str(tmp_path / "runs"), **{**SMALL, **kw})

    with pytest.raises(MgcError, match="feature directory not found"):
        prepare(cfg(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MgcError, match="not the output of mgc extract"):
        prepare(cfg(tmp_path / "empty"))
    with pytest.raises(MgcError, match="unknown model 'resnet'"):
        prepare(cfg(features, model="resnet"))
    # Shards of another FeatureConfig mixed in: the error names the shard.
    mixed = tmp_path / "mixed"
    shutil.copytree(features, mixed)
    other = _extract_variant(features, tmp_path / "other", n_mels=64)
    shutil.copy(other / "features" / "part-000000.parquet", mixed / "features" / "part-999999.parquet")
    with pytest.raises(MgcError, match=r"part-999999.parquet: logmel .* different FeatureConfig"):
        prepare(cfg(mixed))
    # An empty split (the shards' splits), a genre in validation that training lacks (the
    # manifest's labels), a multi-label target without a genre common enough.
    novalid = tmp_path / "novalid"
    shutil.copytree(features, novalid)
    for f in (novalid / "features").glob("part-*.parquet"):
        table = pq.read_table(f)
        split = pa.array(table["split"].to_pandas().replace("validation", "training"), pa.string())
        pq.write_table(table.set_column(table.schema.get_field_index("split"), "split", split), f)
    with pytest.raises(MgcError, match="validation split has no segments labelled"):
        prepare(cfg(novalid))
    m = manifest.read(str(features / "_manifest.parquet"))
    rock = (m.tracks["split"] == "training") & (
        m.tracks["genre_top"] == "Rock"
    )  # every Rock track of training unlabelled
    m.tracks.loc[rock, ["genre_top", "label"]] = [None, -1]
    manifest.write(m, str(tmp_path / "norock.parquet"))
    with pytest.raises(MgcError, match="appear in validation but not in training"):
        prepare(cfg(features, manifest=str(tmp_path / "norock.parquet")))
    with pytest.raises(MgcError, match="no genre of --target genres_all is carried by 10000 training tracks"):
        prepare(cfg(features, target="genres_all", min_genre_tracks=10_000))
    with pytest.raises(MgcError, match="leave 0 of the cluster's 2 CPUs"):
        check_resources(cfg(features, cpus_per_worker=1.0), {"CPU": 2.0})
    with pytest.raises(MgcError, match="2 workers x 1 GPU need 2 GPUs; the cluster has 0"):
        check_resources(cfg(features, use_gpu=True), {"CPU": 8.0})
    assert not list((tmp_path / "runs").glob("*/run_config.json")), "a refused run left a run directory"


def test_real_fma_splits_are_by_track_and_artist(fma_sample, tmp_path):
    """The FMA's own split, kept by mgc, never puts a track (or an artist) in two splits."""
    (tmp_path / "fma_metadata").mkdir()
    for name in ("tracks.csv", "genres.csv"):
        shutil.copy(fma_sample / name, tmp_path / "fma_metadata" / name)
    (tmp_path / "fma_large").mkdir()
    m = fma.manifest(str(tmp_path), subset="large")
    assert m.tracks["track_id"].is_unique
    tracks = fma.read_tracks(str(tmp_path / "fma_metadata" / "tracks.csv"), columns=[("artist", "id")])
    artist = tracks[("artist", "id")].reindex(m.tracks["track_id"]).to_numpy()
    by_split = {s: set(artist[m.tracks["split"].to_numpy() == s]) for s in ("training", "validation", "test")}
    assert not by_split["training"] & by_split["test"] and not by_split["training"] & by_split["validation"]
    assert storage.exists(str(tmp_path / "fma_large"))


def test_a_manifest_of_other_tracks_is_refused_naming_it_and_how_many_matched(features, tmp_path):
    """`mgc train --manifest relabel.csv` whose track ids are none of the shards': the message
    names the manifest and how many of its tracks the shards hold, before any Ray work."""
    relabel = tmp_path / "relabel.csv"
    pd.DataFrame({"path": ["a.mp3", "b.mp3"], "label": ["Rock", "Pop"], "track_id": [10**9, 10**9 + 1]}).to_csv(
        relabel, index=False
    )
    with pytest.raises(MgcError, match="has no segments labelled") as e:
        check(TrainConfig(features=str(features), manifest=str(relabel)))
    assert f"0 of the 2 tracks in {relabel} are among the shards'" in str(e.value)
