"""The model artifact: everything needed to label audio without Ray or the training code's state.

    model/model.json   format version, model config, feature config, label map, normalisation
    model/weights.pt   the state dict (tensors only: loaded with weights_only=True, never pickle)
"""

from __future__ import annotations

import io
from typing import Any

import torch

import mgc
from mgc import storage
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.models import GenreNet, ModelConfig, build

FORMAT_VERSION = 1


def save(path: str, model: GenreNet, features: FeatureConfig, labels: list[str], extra: dict[str, Any] | None = None) -> None:
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
        "input": model.cfg.input,
        "norm_mean": model.norm_mean.cpu().tolist(),
        "norm_std": model.norm_std.cpu().tolist(),
        **(extra or {}),
    }
    storage.write_json(storage.join(path, "model.json"), meta)


def load(path: str, device: str = "cpu") -> tuple[GenreNet, dict[str, Any]]:
    """The model (in eval mode) and its metadata; FeatureConfig as meta['features']."""
    try:
        meta = storage.read_json(storage.join(path, "model.json"))
        weights = storage.read_bytes(storage.join(path, "weights.pt"))
    except FileNotFoundError as e:
        raise MgcError(f"{path}: not a model artifact ({e} is missing)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise MgcError(f"{path}: artifact format {meta.get('format_version')} is not {FORMAT_VERSION}, the one this mgc reads")
    model = build(ModelConfig.from_dict(meta["model_config"]))
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location=device, weights_only=True))
    meta["features"] = FeatureConfig.from_dict(meta["feature_config"])
    return model.to(device).eval(), meta
