"""Batch labelling of new uploads: top genres, probabilities and an embedding per file.

Input: a folder or URI prefix (searched recursively for audio files), or a CSV/Parquet manifest
with a `path` column (relative paths resolve against the manifest's folder; paths outside it are
error rows). The pipeline, in Ray Data:

    file list -> featurise (CPU tasks: read, content hash, the extraction's own decode and
    features, at most `max_seconds` of each file; a network input such as musicnn only
    prepared) -> classify (an actor pool: the model loaded once per actor, GPU actors with
    use_gpu; a network input finished here) -> the driver writes each batch as one atomic part

Output (<out>/):
    labels/part-<run>-NNNNNN.parquet   one row per input file (LABEL_COLUMNS); a multi-label
                                        model's rows add `tags`: the genres above their thresholds
                                        (and their ancestors), deepest first, with `tag_probs`
    summary.csv                         per top genre: files, share uncertain; per tag: files; per
                                        error reason: files
    _summary.json                       counts of this run: labelled, skipped, errors, wall time

A file is labelled once per content and model: a re-run skips every path whose latest row for the
model has the same content hash (or, for a file that could not be read, is still unreadable), so
re-running after a kill finishes the rest, without duplicates (a part is written whole or not at
all). A folder's file whose size and modification time are those of its latest row is skipped
without being read (as rsync's quick check): a re-run over a catalogue costs about a listing of
it; a manifest's files are hashed again. A changed file gets a new row; `current()` reads the
latest row of each path.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mgc import artifact, audio, inputs, metrics, musicnn, pipeline, session, storage, targets
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.inference import Predictor
from mgc.manifest import AUDIO_EXTENSIONS
from mgc.options import option, validate

# A row of the labels Parquet (output_schema): the file and its run, then what the model says of it.
RECORD = [
    ("path", pa.string()),
    ("content_hash", pa.string()),
    ("size_bytes", pa.int64()),
    ("modified_ns", pa.int64()),
    ("model_id", pa.string()),
    ("labelled_at", pa.timestamp("us", tz="UTC")),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("duration_s", pa.float32()),
    ("analysed_s", pa.float32()),
    ("n_segments", pa.int32()),
]
RECORD_COLUMNS = [name for name, _ in RECORD]  # dictionaries and statistics in the Parquet (storage.write_parquet)


def output_schema(n_classes: int, emb: int) -> pa.Schema:
    """The labels Parquet: RECORD, then the prediction (null in an error row)."""
    return pa.schema(
        RECORD
        + [
            ("top_genres", pa.list_(pa.string())),
            ("top_probs", pa.list_(pa.float32())),
            ("agreement", pa.float32()),
            ("uncertain", pa.bool_()),
            ("probabilities", pa.list_(pa.float32(), n_classes)),
            ("embedding", pa.list_(pa.float32(), emb)),
            ("tags", pa.list_(pa.string())),
            ("tag_probs", pa.list_(pa.float32())),
        ]
    )


LABEL_COLUMNS = output_schema(1, 1).names
PREDICTION_COLUMNS = LABEL_COLUMNS[len(RECORD) :]


@dataclass(frozen=True)
class LabelConfig:
    """One labelling run."""

    model: str = option(
        help="model artifact directory (run_dir/model, or a sweep's best/model), or musicnn: the pretrained "
        "tagger's 50 MSD tags, no training needed"
    )
    input: str = option(
        help="folder or URI prefix searched recursively for audio, or a CSV/Parquet manifest with a path column"
    )
    out: str = option(help="output folder or URI: labels/part-*.parquet, summary.csv")
    top_k: int = option(3, low=1, help="genres kept per file, with probabilities")
    uncertain_below: float = option(
        0.5, low=0, high=1, help="a file whose top probability is below this is flagged uncertain"
    )
    # Bounds memory for hour-long uploads (a decoded hour of 44.1 kHz stereo is 1.3 GB of float32).
    max_seconds: float | None = option(
        600.0, above=0, help="analyse at most this much of each file from its start, s (none: all of it)"
    )
    files_per_batch: int = option(16, low=1, help="files per Ray Data block (decoding task and inference batch)")
    actors: int = option(0, low=0, help="inference actors (0: one per CPU, or per GPU with --use-gpu)")
    use_gpu: bool = option(False, help="run the inference actors on GPUs, one each")
    follow_links: bool = option(
        False,
        help="follow symbolic links that stay inside the input folder (links leading out of it are never read)",
    )
    progress: bool = option(True, help="show progress bars")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Listing:
    """The files to label: rows {'path', 'error', 'size', 'mtime_ns'} (`error` names what is
    wrong with an entry: outside the input's root, links resolved; size and modification time
    from a folder's listing, -1 where unknown), and how many links inside it were skipped."""

    rows: list[dict[str, Any]]
    links_skipped: int = 0


UNKNOWN = (-1, -1)  # size and modification time of a file the listing did not give


def list_inputs(source: str, follow_links: bool = False) -> Listing:
    """The input folder's audio files, or a manifest's paths. Nothing whose real path lies outside
    the folder (the manifest's folder) is ever read: such entries are error rows."""
    lower = source.lower()
    if lower.endswith((".csv", ".parquet")):
        if not storage.exists(source):
            raise MgcError(f"{source}: manifest not found")
        try:
            if lower.endswith(".parquet"):
                table = storage.read_parquet(source).to_pandas()
            else:
                with storage.open_input(source) as f:
                    table = pd.read_csv(f, encoding="utf-8")
        except Exception as e:  # noqa: BLE001 - any parse failure is the same user error
            raise MgcError(f"{source}: cannot read the manifest: {e}") from None
        if "path" not in table.columns:
            raise MgcError(
                f"{source}: the manifest has no 'path' column (columns: {', '.join(map(str, table.columns))})"
            )
        root = source.rsplit("/", 1)[0] if storage.is_uri(source) else os.path.dirname(os.path.abspath(source))
        rows = [_resolve_entry(root, str(p)) for p in table["path"].dropna()]
        kept = (
            rows
            if follow_links
            else [r for r in rows if r["error"] or storage.is_uri(r["path"]) or not _through_link(r["path"], root)]
        )
        return Listing(kept, len(rows) - len(kept))
    if not storage.exists(source):
        raise MgcError(f"{source}: input folder not found")
    tree = storage.list_tree(source, AUDIO_EXTENSIONS, follow_links)
    stats = storage.file_stats(source, tree.files)
    rows = [
        {
            "path": storage.join(source, rel),
            "error": None,
            "size": stats.get(rel, UNKNOWN)[0],
            "mtime_ns": stats.get(rel, UNKNOWN)[1],
        }
        for rel in tree.files
    ]
    rows += [
        {
            "path": storage.join(source, rel),
            "error": f"{storage.join(source, rel)}: a link to {target}, outside the input folder: not read",
            "size": -1,
            "mtime_ns": -1,
        }
        for rel, target in tree.outside
    ]
    return Listing(rows, tree.skipped)


def _through_link(path: str, root: str) -> bool:
    """Whether a local path under `root` passes through a symbolic link (any part of it, below the root)."""
    return os.path.realpath(path) != os.path.join(os.path.realpath(root), os.path.relpath(path, root))


def _resolve_entry(root: str, path: str) -> dict[str, Any]:
    """A manifest path resolved against the manifest's folder; outside it (links resolved) is an error row."""
    if storage.is_uri(root):
        full = path if storage.is_uri(path) else posixpath.normpath(posixpath.join(root, path)).replace(":/", "://", 1)
        inside = full.startswith(root.rstrip("/") + "/")
    else:
        full = os.path.normpath(os.path.join(root, path))
        inside = storage.inside(full, root)
    error = None if inside else f"{path}: outside the manifest's folder {root} (links resolved): not read"
    return {"path": full, "error": error, "size": -1, "mtime_ns": -1}


def _content_hash(path: str) -> str:
    """sha256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    fs, inner = storage.resolve(path)
    with fs.open_input_stream(inner) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def featurise(
    row: dict[str, Any], fcfg: FeatureConfig, names: tuple[str, ...], done: dict[str, str | None]
) -> dict[str, Any]:
    """One file: its content hash, then, unless `done` (path -> content hash of its latest row,
    None if unreadable then) has that hash, the inputs `names` the model reads (a column each),
    with the extraction's decode and input code (mgc.pipeline.decode). An input computed by a
    network (musicnn) is only prepared here, packed (mgc.pipeline.pack), and finished where the
    model runs (Classifier: on its GPU with use_gpu). Never raises: failures are error rows."""
    path = row["path"]
    out = _blank_row(path, row["size"], row["mtime_ns"], fcfg, names)
    try:
        if row["error"]:
            out.update(reason="outside_root", detail=row["error"])
        else:
            out["content_hash"] = _content_hash(path)
    except FileNotFoundError:
        out.update(reason="missing_file", detail=f"{path}: no such file")
    except OSError as e:
        out.update(reason="unreadable", detail=f"{path}: {e}")
    if path in done and done[path] == (out["content_hash"] or None):
        out["status"] = "skipped"  # same content (or still unreadable) as its latest row
        return out
    if out["content_hash"]:
        _decode_into(out, path, fcfg, names)
    return out


def featurise_bytes(data: bytes, name: str, fcfg: FeatureConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """`featurise`'s row for a file held in memory (an upload to `mgc serve`, never written to
    disk), under `name`: the same decode and inputs, so the Classifier gives it the same row."""
    out = _blank_row(name, len(data), -1, fcfg, names)
    out["content_hash"] = hashlib.sha256(data).hexdigest()
    _decode_into(out, audio.Upload(data, name), fcfg, names)
    return out


def _blank_row(path: str, size: int, mtime_ns: int, fcfg: FeatureConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """A featurised row before anything is read: an error row with no reason yet, empty inputs."""
    network = [n for n in names if inputs.get(n).network]
    # Strings are "" rather than None: Ray Data would make an all-None block column float.
    return {
        "path": path,
        "content_hash": "",
        "size": size,
        "mtime_ns": mtime_ns,
        "status": "error",
        "reason": "",
        "detail": "",
        "duration_s": np.nan,
        "analysed_s": np.nan,
        **{n: b"" if n in network else np.zeros((0, *inputs.get(n).shape(fcfg)), np.float16) for n in names},
    }


def _decode_into(out: dict[str, Any], source: str | audio.Upload, fcfg: FeatureConfig, names: tuple[str, ...]) -> None:
    """Decode `source` (a path or an Upload) into the row `out`: its inputs, status ok and its
    durations, or the failure's reason and detail."""
    network = [n for n in names if inputs.get(n).network]
    try:
        seconds, parts = pipeline.decode(source, fcfg, names)
        out.update(inputs.finish({n: p for n, p in parts.items() if n not in network}))
        out.update({n: pipeline.pack(parts[n]) for n in network})
        out.update(status="ok", analysed_s=seconds, duration_s=_duration(source))
    except Exception as e:  # noqa: BLE001 - one odd file must not sink the batch
        out["reason"], out["detail"] = pipeline.failure(str(source), e)


def _duration(source: str | audio.Upload) -> float:
    """The whole file's duration from its header (the analysed part may be shorter)."""
    import soundfile as sf

    try:
        if isinstance(source, audio.Upload):
            info = sf.info(io.BytesIO(source.data))
        elif storage.is_uri(source):
            return np.nan
        else:
            info = sf.info(source)
        return info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - a header without a length is not an error
        return np.nan


class Classifier:
    """A Ray Data actor: loads the artifact once, then turns batches of featurised files into
    genre probabilities, segment agreement and embeddings."""

    def __init__(self, model_path: str, top_k: int, uncertain_below: float, use_gpu: bool):
        self.predict = Predictor.load(model_path, use_gpu)
        self.labels = self.predict.meta["labels"]
        self.temperature = self.predict.meta["temperature"]
        self.schema = pa.schema(
            [
                f
                for f in output_schema(len(self.labels), self.predict.embedding_size)
                if f.name not in ("model_id", "labelled_at")
            ]
        )
        self.top_k, self.uncertain_below = top_k, uncertain_below
        meta = self.predict.meta
        # A multi-label model trained here (the pretrained tagger has neither): predictions kept
        # consistent with its genre tree, top genres read from the tree's roots, tags above the
        # per-genre thresholds.
        self.parents = meta.get("parents")
        self.cut = np.asarray(meta["thresholds"]) if "thresholds" in meta else None
        self.candidates = metrics.top_candidates(len(self.labels), self.predict.multilabel, self.parents)
        if self.parents is not None:
            self.depth = np.asarray(targets.depth(self.parents))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch["path"])
        text = {k: [str(v) for v in batch[k]] for k in ("path", "content_hash", "status", "reason", "detail")}
        feats = self._inputs(batch, text)
        segments = [len(f) if text["status"][i] == "ok" else 0 for i, f in enumerate(feats[self.predict.inputs[0]])]
        ok = [i for i in range(n) if text["status"][i] == "ok" and segments[i]]
        cols: dict[str, list] = {k: [None] * n for k in PREDICTION_COLUMNS}
        cols["n_segments"] = segments
        if ok:
            lp, emb = self.predict({name: np.concatenate([f[i] for i in ok]) for name, f in feats.items()})
            start = 0
            for i in ok:
                k = segments[i]
                self._track(cols, i, lp[start : start + k], emb[start : start + k])
                start += k
        for k, v in text.items():
            cols[k] = [x or None for x in v]  # "" back to null
        cols["size_bytes"] = [int(v) if v >= 0 else None for v in batch["size"]]
        cols["modified_ns"] = [int(v) if v >= 0 else None for v in batch["mtime_ns"]]
        for k in ("duration_s", "analysed_s"):
            cols[k] = [None if np.isnan(v) else float(v) for v in batch[k]]
        return pa.Table.from_pydict(cols, schema=self.schema)

    def _inputs(self, batch: dict[str, np.ndarray], text: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
        """The model's inputs per file of the batch. A network input (packed by featurise) is
        finished here, on this actor's device; where that fails, the file becomes an error row."""
        n = len(text["path"])
        feats = {
            name: [np.asarray(f) for f in batch[name]] for name in self.predict.inputs if not inputs.get(name).network
        }
        for name in (m for m in self.predict.inputs if inputs.get(m).network):
            feats[name] = [np.zeros(0)] * n
            for i, blob in enumerate(batch[name]):
                if text["status"][i] != "ok":
                    continue
                try:
                    feats[name][i] = inputs.finish({name: pipeline.unpack(blob)}, str(self.predict.device))[name]
                except Exception as e:  # noqa: BLE001 - as in featurise: one file's failure is its error row
                    text["status"][i] = "error"
                    text["reason"][i], text["detail"][i] = pipeline.failure(text["path"][i], e)
                    # Without its hash the row is not in the next run's skip-set: the network may
                    # have failed for the device (out of memory), not for the file.
                    text["content_hash"][i] = ""
        return feats

    def _track(self, cols: dict[str, list], i: int, seg_lp: np.ndarray, seg_emb: np.ndarray) -> None:
        """Row `i`'s prediction columns from its segments' outputs: the track's prediction, as in
        training's metrics (mgc.metrics.track_probs)."""
        track = metrics.track_probs(seg_lp, self.temperature, self.predict.multilabel, self.parents, self.top_k)
        probs, order = track.probs, track.top
        if self.parents is not None:
            tags = targets.tags(probs, self.cut, self.parents, self.depth)
            cols["tags"][i] = [self.labels[j] for j in tags]
            cols["tag_probs"][i] = probs[tags].astype(np.float32).tolist()
        cols["top_genres"][i] = [self.labels[j] for j in order]
        cols["top_probs"][i] = probs[order].astype(np.float32).tolist()
        candidates = self.candidates
        cols["agreement"][i] = float((candidates[seg_lp[:, candidates].argmax(1)] == order[0]).mean())
        cols["uncertain"][i] = bool(probs[order[0]] < self.uncertain_below)
        cols["probabilities"][i] = probs.astype(np.float32).tolist()
        cols["embedding"][i] = seg_emb.mean(0).astype(np.float32).tolist()


def model_id(path: str) -> str:
    """What identifies a model for skipping: the hash of its weights and metadata (of the
    pretrained weights for the built-in tagger)."""
    digest = hashlib.sha256()
    if path == artifact.BUILTIN:
        digest.update(musicnn.WEIGHTS.read_bytes())
        return "musicnn-" + digest.hexdigest()[:8]
    for name in ("model.json", "weights.pt"):
        try:
            digest.update(storage.read_bytes(storage.join(path, name)))
        except FileNotFoundError:
            raise MgcError(f"{path}: not a model artifact ({name} is missing)") from None
    return digest.hexdigest()[:16]


def read_labels(out: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Every row labelled so far under `out` (empty frame if none), all columns or `columns`
    (null where a part of an earlier mgc lacks one)."""
    if not storage.list_files(storage.join(out, "labels"), ".parquet"):
        return pd.DataFrame(columns=columns or LABEL_COLUMNS)
    schema = None if columns is None else pa.schema([output_schema(1, 1).field(c) for c in columns])
    # Sizes and nanosecond times as exact nullable integers (float64 would round the times).
    return storage.read_parquet(storage.join(out, "labels"), columns=columns, schema=schema).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get
    )


def run(cfg: LabelConfig) -> dict[str, Any]:
    """Label every input file not yet labelled by this model into cfg.out; returns the summary.
    The artifact, the input and the output are checked before Ray is joined (if anything is left
    to label)."""
    started = time.time()
    model, meta = artifact.load(cfg.model)  # a clear error now, not in every actor
    mid = model_id(cfg.model)
    listed = list_inputs(cfg.input, cfg.follow_links)
    if not listed.rows:
        raise MgcError(
            f"{cfg.input}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found"
            + (f"; {listed.links_skipped} links skipped (--follow-links)" if listed.links_skipped else "")
        )
    if listed.links_skipped:
        session.note(
            f"label: {listed.links_skipped} symbolic link(s) in {cfg.input} skipped; --follow-links follows those "
            "that stay inside it"
        )
    storage.ensure_writable_dir(cfg.out)
    storage.remove_stale_temporaries(storage.join(cfg.out, "labels"))
    latest = current(cfg.out, mid, columns=["content_hash", "size_bytes", "modified_ns"])
    done = {
        p: (
            h if isinstance(h, str) else None,
            -2 if pd.isna(s) else int(s),
            -2 if pd.isna(m) else int(m),
        )  # unknown: never equal
        for p, h, s, m in zip(latest["path"], latest["content_hash"], latest["size_bytes"], latest["modified_ns"])
    }
    unique = list({r["path"]: r for r in listed.rows}.values())
    # The quick check, in the driver: a file whose size and modification time are those of its
    # latest row is not read again, nor sent to Ray.
    todo = [r for r in unique if not _unchanged(r, done.get(r["path"]))]
    counts = {"labelled": 0, "errors": 0, "skipped": len(unique) - len(todo)}
    if todo:
        _label(cfg, todo, {r["path"]: done[r["path"]][0] for r in todo if r["path"] in done}, model, meta, mid, counts)
    summary = {
        **counts,
        "links_skipped": listed.links_skipped,
        "inputs": len(unique),
        "model": cfg.model,
        "model_id": mid,
        "seconds": round(time.time() - started, 2),
    }
    labels = current(cfg.out, mid, columns=SUMMARY_COLUMNS)
    storage.write_bytes(storage.join(cfg.out, "summary.csv"), people_summary(labels).to_csv(index=False).encode())
    storage.write_json(storage.join(cfg.out, "_summary.json"), summary)
    return summary


def _unchanged(row: dict[str, Any], previous: tuple | None) -> bool:
    """Whether a listed file has the size and modification time of its latest row (which read it)."""
    return bool(previous and previous[0] and row["size"] >= 0 and previous[1:] == (row["size"], row["mtime_ns"]))


def _label(
    cfg: LabelConfig,
    todo: list[dict[str, Any]],
    done: dict[str, str | None],
    model,
    meta: dict,
    mid: str,
    counts: dict[str, int],
) -> None:
    """The Ray Data pipeline over `todo` (mgc.pipeline), each batch written as one part; adds to
    `counts`."""
    import ray

    fcfg = feature_config(meta, cfg.max_seconds)
    cpus = session.connect().get("CPU", 1)
    ds = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo), int(cpus) * 4)))
    # With use_gpu, decoding in CPU tasks and inference in one actor per GPU. On CPU, Ray Data
    # fuses both steps into one actor per core: every core decodes and infers, and no feature
    # tensors travel between processes.
    ds = pipeline.decode_stage(
        ds, featurise, {"fcfg": fcfg, "names": model.cfg.inputs, "done": done}, apart=cfg.use_gpu
    )
    actors = cfg.actors or max(1, int(ray.cluster_resources().get("GPU", 0) if cfg.use_gpu else cpus))
    classifier_args = {
        "model_path": cfg.model,
        "top_k": cfg.top_k,
        "uncertain_below": cfg.uncertain_below,
        "use_gpu": cfg.use_gpu,
    }
    ds = pipeline.network_stage(ds, Classifier, classifier_args, actors, cfg.use_gpu, batch_size=cfg.files_per_batch)
    schema = output_schema(len(meta["labels"]), model.head.embedding_size)
    _write_parts(ds, cfg, schema, mid, len(todo), counts)


def _write_parts(ds, cfg: LabelConfig, schema: pa.Schema, mid: str, files: int, counts: dict[str, int]) -> None:
    """Each batch of the labelled rows of `ds` (of `files` files) written as one part, less the
    skipped rows, stamped with the model and the time; adds to `counts`."""
    from tqdm.auto import tqdm

    run_id = time.strftime("%Y%m%dT%H%M%S") + uuid.uuid4().hex[:4]  # parts sort by run
    part = 0
    bar = tqdm(total=files, unit="file", desc="label", disable=not cfg.progress, mininterval=1.0)
    for batch in ds.iter_batches(batch_size=cfg.files_per_batch, batch_format="pyarrow"):
        bar.update(batch.num_rows)
        skipped = pc.equal(batch.column("status"), "skipped")
        counts["skipped"] += int(pc.sum(skipped).as_py() or 0)
        batch = batch.filter(pc.invert(skipped))
        if not batch.num_rows:
            continue
        ok = int(pc.sum(pc.equal(batch.column("status"), "ok")).as_py() or 0)
        counts["labelled"] += ok
        counts["errors"] += batch.num_rows - ok
        bar.set_postfix(errors=counts["errors"], skipped=counts["skipped"], refresh=False)
        stamp = pa.array([pd.Timestamp.now(tz="UTC").floor("ms")] * batch.num_rows, pa.timestamp("us", tz="UTC"))
        batch = batch.append_column("model_id", pa.array([mid] * batch.num_rows)).append_column("labelled_at", stamp)
        table = batch.select(schema.names).cast(schema)
        path = storage.join(cfg.out, "labels", f"part-{run_id}-{part:06d}.parquet")
        storage.write_parquet(table, path, scalar_columns=RECORD_COLUMNS)
        part += 1
    bar.close()


def current(out: str, mid: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """One row per path, its latest (of model `mid` if given); all columns or `columns` (the
    probabilities and embeddings are most of a row's memory in pandas: leave them out at scale)."""
    if columns is not None:
        columns = list(dict.fromkeys(["path", "model_id", "labelled_at", *columns]))
    rows = read_labels(out, columns)
    if mid is not None:
        rows = rows[rows["model_id"] == mid]
    rows = rows.sort_values("labelled_at", kind="stable")
    return rows.drop_duplicates("path", keep="last").sort_values("path").reset_index(drop=True)


SUMMARY_COLUMNS = ["status", "reason", "top_genres", "uncertain", "tags"]


def people_summary(labels: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: files per top genre with the uncertain share, files per tag (multi-label
    models), then files per error reason."""
    ok = labels[labels["status"] == "ok"]
    top = ok["top_genres"].map(lambda g: g[0])
    genres = pd.DataFrame({"genre": top, "uncertain": ok["uncertain"].astype(bool)}).groupby("genre")
    rows = [
        {"kind": "genre", "name": g, "files": int(len(d)), "uncertain_share": round(float(d["uncertain"].mean()), 3)}
        for g, d in genres
    ]
    if "tags" in ok.columns:
        tags = pd.Series([t for ts in ok["tags"] if ts is not None for t in ts], dtype=object).value_counts()
        rows += [{"kind": "tag", "name": t, "files": int(n), "uncertain_share": None} for t, n in sorted(tags.items())]
    errors = labels[labels["status"] == "error"].groupby("reason").size()
    rows += [{"kind": "error", "name": r, "files": int(n), "uncertain_share": None} for r, n in errors.items()]
    return pd.DataFrame(rows, columns=["kind", "name", "files", "uncertain_share"])


def accuracy_by_flag(labels: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Of the files labelled ok whose genre `truth` knows (columns `file`, a path relative to the
    labelled folder, and `genre`; an empty genre is unknown), those flagged uncertain and the rest:
    files, right (top genre = the truth) and accuracy. A file is matched by its path's ending, so a
    labelled folder that moved still matches."""
    known = {str(f).replace(os.sep, "/"): g for f, g in zip(truth["file"], truth["genre"]) if isinstance(g, str) and g}

    def genre_of(path: str) -> str | None:
        parts = path.replace(os.sep, "/").split("/")
        return next((known[k] for k in ("/".join(parts[-i:]) for i in range(1, len(parts) + 1)) if k in known), None)

    ok = labels[labels["status"] == "ok"]
    genre = ok["path"].map(genre_of)
    right = ok["top_genres"].map(lambda g: g[0]) == genre
    rows = []
    for name, flagged in (("flagged uncertain", True), ("not flagged", False)):
        chosen = genre.notna() & (ok["uncertain"].astype(bool) == flagged)
        n = int(chosen.sum())
        rows.append(
            {
                "files": name,
                "n": n,
                "right": int(right[chosen].sum()),
                "accuracy": round(float(right[chosen].mean()), 3) if n else None,
            }
        )
    return pd.DataFrame(rows)


def classify_rows(classifier: Classifier, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Featurised rows (`featurise`, `featurise_bytes`) through one call of `classifier`, their
    forward passes shared: each one's row of the output (less model_id and labelled_at), in order."""
    return classifier({k: [r[k] for r in rows] for k in rows[0]}).to_pylist()


def feature_config(meta: dict[str, Any], max_seconds: float | None) -> FeatureConfig:
    """The features a model was trained on (its artifact's `meta`), with at most `max_seconds` of
    each file analysed: what labelling an upload computes."""
    return FeatureConfig.from_dict({**meta["feature_config"], "max_seconds": max_seconds})


def label_file(path: str, model_path: str, max_seconds: float | None = 600.0, top_k: int = 3) -> dict[str, Any]:
    """Label one file in this process (no Ray): what a row of the output holds."""
    model, meta = artifact.load(model_path)
    fcfg = feature_config(meta, max_seconds)
    row = featurise({"path": path, "error": None, "size": -1, "mtime_ns": -1}, fcfg, model.cfg.inputs, {})
    if row["status"] != "ok":
        raise MgcError(row["detail"])
    return classify_rows(Classifier(model_path, top_k, 0.5, use_gpu=False), [row])[0]
