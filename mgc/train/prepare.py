"""The driver's work before training, without Ray (`check`: shards, labels, options) and with it
(`prepare`: normalisation statistics, a closed-form start), and the guard on resumed runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mgc import inputs, session, storage, targets
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.manifest import SPLITS
from mgc.models import ModelConfig, build, reads
from mgc.train.config import Prepared, TrainConfig
from mgc.train.data import dataset


def _shards(cfg: TrainConfig) -> str:
    return storage.join(cfg.features, "features")


def _check_shards(cfg: TrainConfig, fcfg: FeatureConfig) -> None:
    """Every shard must hold the inputs, of the shapes, that _config.json promises."""
    fs, root = storage.resolve(_shards(cfg))
    want = {n: list(inputs.get(n).shape(fcfg)) for n in fcfg.inputs}
    for name in storage.list_files(_shards(cfg), ".parquet"):
        schema = pq.read_schema(fs.open_input_file(f"{root}/{name}"))
        for column, shape in want.items():
            typ = schema.field(column).type if column in schema.names else None
            if not isinstance(typ, pa.FixedShapeTensorType) or list(typ.shape) != shape:
                raise MgcError(
                    f"{storage.join(_shards(cfg), name)}: {column} is {typ}, but {cfg.features}/_config.json says "
                    f"{shape}: shards from a different FeatureConfig are mixed in; re-extract into a clean folder"
                )


def model_config(cfg: TrainConfig, fcfg: FeatureConfig, n_classes: int, where: str) -> ModelConfig:
    """The network cfg asks for, reading inputs that the features at `where` hold."""
    names = reads(cfg.model, cfg.input)
    missing = [n for n in names if n not in fcfg.inputs]
    if missing:
        raise MgcError(
            f"{cfg.model} reads {'+'.join(names)}, but {where} holds {', '.join(fcfg.inputs)}: "
            f"extract with --inputs {','.join(fcfg.inputs + tuple(missing))} (into a new --out)"
        )
    return ModelConfig(
        name=cfg.model,
        n_classes=n_classes,
        inputs=names,
        shapes=tuple(inputs.get(n).shape(fcfg) for n in names),
        channels=cfg.channels,
        kernel=cfg.kernel,
        dense=cfg.dense,
        lstm_units=cfg.lstm_units,
        dropout=cfg.dropout,
    )


def check(cfg: TrainConfig) -> Prepared:
    """Validate the features, the labels and the options, without Ray: what training needs, less
    the normalisation statistics (`prepare` adds them). Raises MgcError: missing folder, mixed
    FeatureConfigs, an input the shards lack, empty or leaking splits, labels in validation that
    training lacks, unknown model or target."""
    if not storage.exists(cfg.features):
        raise MgcError(f"{cfg.features}: feature directory not found")
    config_path = storage.join(cfg.features, "_config.json")
    if not storage.exists(config_path) or not storage.list_files(_shards(cfg), ".parquet"):
        raise MgcError(f"{cfg.features}: no _config.json or no shards in features/: not the output of mgc extract")
    config = storage.read_json(config_path)
    fcfg = FeatureConfig.from_dict(config["feature_config"])
    model_cfg = model_config(cfg, fcfg, 2, cfg.features)  # the model and its inputs checked before the shards are read
    _check_shards(cfg, fcfg)

    index = storage.read_parquet(_shards(cfg), columns=["track_id", "split"]).to_pandas()
    leaks = index.groupby("track_id")["split"].nunique()
    if (leaks > 1).any():
        raise MgcError(f"{cfg.features}: track {int(leaks.idxmax())} has segments in more than one split")
    labels = targets.load_manifest(cfg.manifest, cfg.features)
    target = targets.build(labels, cfg.target, index.drop_duplicates("track_id"), cfg.min_genre_tracks)
    labelled = target.labelled(index["track_id"].to_numpy())  # per segment: multi-hot rows would not fit at scale
    split = index["split"].to_numpy()
    segments = {s: int((labelled & (split == s)).sum()) for s in SPLITS}
    tracks = {s: int(index.loc[labelled & (split == s), "track_id"].nunique()) for s in SPLITS} | {
        "in_shards": int(index["track_id"].nunique())
    }
    for s, n in segments.items():
        if n == 0:
            listed = labels.tracks["track_id"].to_numpy()
            matched = int(np.isin(listed, index["track_id"].to_numpy()).sum())
            raise MgcError(
                f"{cfg.features}: the {s} split has no segments labelled for --target {cfg.target}; {matched} of the "
                f"{len(listed)} tracks in {cfg.manifest or 'its _manifest.parquet'} are among the shards' "
                f"{tracks['in_shards']}"
            )
    training = labelled & (split == "training")
    if target.multilabel:
        weights = target.pos_weight(index.loc[training, "track_id"].drop_duplicates().to_numpy())
    else:
        y = target.lookup(index["track_id"].to_numpy())[1]
        seen = set(y[training])
        for s in ("validation", "test"):
            missing = sorted(set(y[labelled & (split == s)]) - seen)
            if missing:
                raise MgcError(
                    f"{cfg.features}: genre(s) {[target.classes[i] for i in missing]} appear in {s} but not in training"
                )
        weights = None
        if cfg.class_weights:
            counts = np.bincount(y[training], minlength=len(target.classes))
            weights = (counts.sum() / (len(target.classes) * np.maximum(counts, 1))).tolist()
    return Prepared(
        fcfg, target, dataclasses.replace(model_cfg, n_classes=len(target.classes)), {}, weights, segments, tracks
    )


def prepare(cfg: TrainConfig, checked: Prepared | None = None) -> Prepared:
    """`check` (unless done: `checked`), then each input's normalisation statistics over the
    training split (per band, or one for the input: mgc.inputs), in one Ray Data pass, and an
    architecture's closed-form start (Architecture.start), in another."""
    prep = checked or check(cfg)
    session.connect()
    names = prep.model.inputs

    def partial(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for n in names:
            x = batch[n].astype(np.float64)
            axes = inputs.get(n).stats_axes(x.ndim)
            s = np.atleast_1d(x.sum(axis=axes))
            out |= {
                f"{n}:n": np.array([x.size / s.size]),
                f"{n}:s": s[None],
                f"{n}:ss": np.atleast_1d((x**2).sum(axis=axes))[None],
            }
        return out

    parts = (
        dataset(cfg.features, "training", prep.target, list(names))
        .map_batches(partial, batch_format="numpy", batch_size=256)
        .take_all()
    )
    norm = {}
    for n in names:  # take_all() gives one row per batch
        count = sum(float(p[f"{n}:n"]) for p in parts)
        mean = np.sum([p[f"{n}:s"] for p in parts], axis=0) / count
        var = np.sum([p[f"{n}:ss"] for p in parts], axis=0) / count - mean**2
        norm[n] = (mean.tolist(), np.sqrt(np.maximum(var, 1e-8)).tolist())
    start = None
    if prep.model.architecture.start:
        net = build(prep.model, norm)
        fitted = prep.model.architecture.start(
            net, dataset(cfg.features, "training", prep.target, list(names)), prep.target.multilabel
        )
        session.note(f"train {cfg.run_name}: starts from a closed-form fit (training loss {fitted['train_loss']:.3f})")
        start = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith(("norm.", "head."))}
    return dataclasses.replace(prep, norm=norm, start=start)


def check_run_dir(cfg: TrainConfig, fcfg: FeatureConfig, model_cfg: ModelConfig) -> None:
    """A run resumed by name must be the same run: same features, labels and model."""
    path = storage.join(cfg.run_dir, "run_config.json")
    state = json.loads(
        json.dumps(
            {
                "feature_config": fcfg.to_dict(),
                "model_config": model_cfg.to_dict(),
                "features": cfg.features,
                "target": cfg.target,
                "manifest": cfg.manifest,
            }
        )
    )
    if not storage.exists(path):
        storage.write_json(path, state)
        return
    old = {
        "target": "genre_top",
        "manifest": "",
        **storage.read_json(path),
    }  # runs from before targets: the extraction's genre_top
    for key in state:
        if old.get(key) != state[key]:
            raise MgcError(f"{cfg.run_dir} holds a run with a different {key.replace('_', ' ')}; choose another --name")
