"""What one replica of `mgc serve` holds, with no web framework: the model (labelling uploads
with `mgc label`'s own code, mgc.label.featurise_bytes and Classifier) and the catalogue of
similar tracks (mgc.recommend's exact cosine search, a 2-D map of it, each track's audio file)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from mgc import label, recommend, storage
from mgc.errors import MgcError
from mgc.serve.config import ServeConfig


@dataclass
class Catalogue:
    """The catalogue's items (ids, genres, unit-length embeddings), the map's coordinates and a
    projection that places a new embedding on it, and the audio file of each item that has one."""

    ids: np.ndarray
    genres: np.ndarray
    embeddings: np.ndarray
    xy: np.ndarray
    projection: Any
    files: dict[str, str]

    @classmethod
    def load(cls, where: str, embedding_size: int) -> "Catalogue":
        """The catalogue at `where`: an `mgc embed` folder or its catalogue.parquet, or a labelling
        output folder; refused unless its embeddings have the model's size."""
        inside = storage.join(where, "catalogue.parquet")
        frame = recommend.load_catalogue(inside if storage.exists(inside) else where)
        emb = recommend.normalise(np.stack(frame["embedding"].to_numpy()))
        if emb.shape[1] != embedding_size:
            raise MgcError(
                f"{where}: the catalogue's embeddings have {emb.shape[1]} values, the model's {embedding_size}: "
                "embed it with the same model (mgc embed --model)"
            )
        ids = frame["id"].astype(str).to_numpy()
        paths = frame["path"] if "path" in frame.columns else pd.Series([None] * len(frame))
        # The only files /audio ever serves: those the catalogue lists (and that are there), looked up by exact id.
        files = {
            i: p for i, p in zip(ids, paths) if isinstance(p, str) and p and (storage.is_uri(p) or os.path.isfile(p))
        }
        genres = frame["genre"].astype(object).where(frame["genre"].notna(), None).to_numpy()
        xy, projection = _map(emb)
        return cls(ids, genres, emb, xy, projection, files)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, track_id: str) -> int | None:
        """The row of `track_id`, None if the catalogue has no such item."""
        hit = np.flatnonzero(self.ids == track_id)
        return int(hit[0]) if len(hit) else None

    def nearest(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[dict[str, Any]]:
        """The k items most like `query` (an embedding), best first: id, genre, score, map point."""
        idx, score = recommend.nearest(
            query[None, :].astype(np.float32), self.embeddings, k, None if exclude is None else np.array([exclude])
        )
        return [self.item(int(i), float(s)) for i, s in zip(idx[0], score[0])]

    def item(self, i: int, score: float | None = None) -> dict[str, Any]:
        """Item `i` as answered: id, genre, map point, whether it has audio (and its score)."""
        out = {
            "id": str(self.ids[i]),
            "genre": self.genres[i],
            "x": round(float(self.xy[i, 0]), 5),
            "y": round(float(self.xy[i, 1]), 5),
            "audio": str(self.ids[i]) in self.files,
        }
        return out if score is None else {**out, "score": round(score, 4)}

    def place(self, embedding: np.ndarray) -> list[float]:
        """Where an embedding falls on the map."""
        if self.projection is None:
            return [0.0, 0.0]
        x = self.projection.transform(recommend.normalise(embedding[None, :]))[0]
        return [round(float(x[0]), 5), round(float(x[1]), 5)]

    def audio_file(self, track_id: str) -> str | None:
        """The audio file of a catalogue item, None for an id the catalogue does not list (nothing of
        the request is ever used as a path) or whose file is gone (since the replica started)."""
        path = self.files.get(track_id)
        return path if path is not None and (storage.is_uri(path) or os.path.isfile(path)) else None


def _map(emb: np.ndarray) -> tuple[np.ndarray, Any]:
    """The catalogue's 2-D map: PCA of its unit-length embeddings (a linear projection, so a new
    upload is placed by the same transform), and that PCA (None under 2 items)."""
    if len(emb) < 2:
        return np.zeros((len(emb), 2), np.float32), None
    pca = PCA(n_components=min(2, emb.shape[1]), random_state=0).fit(emb)
    xy = pca.transform(emb)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy.astype(np.float32), pca


class Service:
    """A replica's model and catalogue. `label` labels uploads held in memory, several at a time
    with their forward passes shared, exactly as `mgc label` labels files."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.classifier = label.Classifier(cfg.model, cfg.top_k, cfg.uncertain_below, cfg.use_gpu)
        meta = self.classifier.predict.meta
        self.fcfg = label.feature_config(meta, cfg.max_seconds)
        self.inputs = tuple(self.classifier.predict.inputs)
        self.model_id = label.model_id(cfg.model)
        self.catalogue = (
            Catalogue.load(cfg.catalogue, self.classifier.predict.embedding_size) if cfg.catalogue else None
        )

    def label(self, uploads: list[tuple[bytes, str]]) -> list[dict[str, Any]]:
        """Rows of `mgc label`'s output for uploads (bytes, the name messages give it), one
        Classifier call for all; an upload that cannot be used is an error row with its reason."""
        rows = [label.featurise_bytes(data, name, self.fcfg, self.inputs) for data, name in uploads]
        stamp = pd.Timestamp.now(tz="UTC").isoformat()
        return [
            {**row, "model_id": self.model_id, "labelled_at": stamp}
            for row in label.classify_rows(self.classifier, rows)
        ]

    def describe(self) -> dict[str, Any]:
        """GET /model: what the model reads and answers."""
        return {
            "model": self.cfg.model,
            "model_id": self.model_id,
            "inputs": list(self.inputs),
            "classes": list(self.classifier.labels),
            "temperature": float(self.classifier.temperature),
            "multilabel": bool(self.classifier.predict.multilabel),
            "embedding_size": int(self.classifier.predict.embedding_size),
            "max_seconds": self.cfg.max_seconds,
            "sample_rate": self.fcfg.sample_rate,
            "catalogue_tracks": 0 if self.catalogue is None else len(self.catalogue),
        }
