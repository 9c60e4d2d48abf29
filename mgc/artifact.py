"""The model artifact: everything needed to label audio without Ray or the training code's state.

model/model.json   format version, model config (architecture, inputs and their shapes,
                   sizes), feature config, label map, the temperature that calibrates
                   its track probabilities (fitted on validation; 1 where none was fitted);
                   a multi-label model's target, `multilabel`, genre tree (`parents`: each
                   genre's parent's index, -1 for none) and per-genre `thresholds`
model/weights.pt   the state dict (tensors only: loaded with weights_only=True, never pickle),
                   each input's normalisation among its buffers
"""

from __future__ import annotations

import io
from typing import Any

import torch

import mgc
from mgc import inputs, storage
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.models import GenreNet, Labeller, ModelConfig, build
from mgc.models import tagger as pretrained

FORMAT_VERSION = 2  # 2: models read several inputs (mgc.inputs), each normalised on its own


def save(
    path: str, model: GenreNet, features: FeatureConfig, labels: list[str], extra: dict[str, Any] | None = None
) -> None:
    """Write the artifact directory `path` (local or URI)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    storage.write_bytes(storage.join(path, "weights.pt"), buf.getvalue())
    meta = {
        "format_version": FORMAT_VERSION,
        "mgc_version": mgc.__version__,
        "model_config": model.cfg.to_dict(),
        "feature_config": features.to_dict(),
        "labels": labels,
        **(extra or {}),
    }
    storage.write_json(storage.join(path, "model.json"), meta)


BUILTIN = "musicnn"  # the pretrained tagger (mgc.models.tagger), usable wherever an artifact path is


def load(path: str, device: str = "cpu") -> tuple[Labeller, dict[str, Any]]:
    """The model (in eval mode) and its metadata; FeatureConfig as meta['features']. The artifact
    is checked whole, before anything is decoded: its parts must agree (label map, classes, the
    input's shape from the feature config, the weights' shapes), else MgcError naming the file.
    `path` BUILTIN is the pretrained tagger."""
    if path == BUILTIN:
        return pretrained.tagger(device)
    meta_path, weights_path = storage.join(path, "model.json"), storage.join(path, "weights.pt")
    try:
        meta = storage.read_json(meta_path)
        weights = storage.read_bytes(weights_path)
    except FileNotFoundError as e:
        raise MgcError(f"{path}: not a model artifact ({e} is missing)") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise MgcError(f"{path}: artifact format {version} is not {FORMAT_VERSION}, the one this mgc reads")
    try:
        model_cfg = ModelConfig.from_dict(meta["model_config"])
        meta["features"] = FeatureConfig.from_dict(meta["feature_config"])
        labels = list(meta["labels"])
    except KeyError as e:
        raise MgcError(f"{meta_path}: lacks {e}") from None
    except (MgcError, TypeError, ValueError) as e:
        raise MgcError(f"{meta_path}: {e}") from None
    fcfg: FeatureConfig = meta["features"]
    problems = []
    temperature = meta.setdefault("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        problems.append(f"its temperature {temperature!r} is not a positive number")
    if len(labels) != model_cfg.n_classes:
        problems.append(f"the label map has {len(labels)} genres, the network {model_cfg.n_classes} classes")
    if meta.get("multilabel"):
        for key in ("thresholds", "parents"):
            value = meta.get(key)
            if not isinstance(value, list) or len(value) != len(labels):
                problems.append(f"a multi-label model's {key} must be a list of one value per genre ({len(labels)})")
        if isinstance(meta.get("parents"), list) and not all(
            isinstance(p, int) and -1 <= p < len(labels) for p in meta["parents"]
        ):
            problems.append("its parents must be genre indices or -1")
    for name, shape in zip(model_cfg.inputs, model_cfg.shapes):
        if inputs.get(name).shape(fcfg) != shape:
            problems.append(
                f"the feature config gives {name} of shape {list(inputs.get(name).shape(fcfg))}, "
                f"the network takes {list(shape)}"
            )
    if problems:
        raise MgcError(f"{path}: the artifact's parts disagree: {'; '.join(problems)}")
    state = _state_dict(weights_path, weights, device)
    model = build(model_cfg)  # the weights hold the normalisation too
    try:
        model.load_state_dict(model.complete(state))
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise MgcError(f"{weights_path}: the weights do not fit the network in model.json ({detail[:300]})") from None
    return model.to(device).eval(), meta


def _state_dict(where: str, data: bytes, device: str) -> dict[str, torch.Tensor]:
    """The tensors of weights.pt, loaded without unpickling code; MgcError naming the file if it is
    empty, truncated, or holds anything but a plain state dict."""
    import pickle
    import zipfile

    if not data:
        raise MgcError(f"{where}: empty (0 bytes)")
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False: never, for a file from elsewhere.
        raise MgcError(f"{where}: not a plain state dict (it holds pickled objects): refused") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().split(". ")[0] or "no data"  # torch's further sentences are advice
        raise MgcError(f"{where}: truncated or corrupt ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise MgcError(f"{where}: not a plain state dict (names to tensors): refused")
    return state
