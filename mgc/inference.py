"""The forward pass over feature segments shared by validation (`mgc.train`), labelling
(`mgc.label`) and embedding (`mgc.recommend`): a model in its inference form, run a few segments
at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mgc import artifact
from mgc.models import Labeller, for_inference

# Segments per forward pass. On CPU a few at a time keep the conv layers' activations in the
# core's cache, much faster per segment than 256 at a time (bench/README.md, "Labelling").
CPU_SEGMENTS_PER_STEP = 4
GPU_SEGMENTS_PER_STEP = 256


class Predictor:
    """A network's inference form on `device`; `meta` holds the artifact's metadata when loaded."""

    def __init__(self, model: Labeller, device: torch.device, meta: dict[str, Any] | None = None):
        self.device, self.meta = device, meta or {}
        self.multilabel = bool(self.meta.get("multilabel"))  # a sigmoid per class, not one softmax
        self.model = for_inference(model).to(device)
        self.inputs: tuple[str, ...] = model.cfg.inputs
        self.embedding_size: int = model.head.embedding_size
        self.step = GPU_SEGMENTS_PER_STEP if device.type == "cuda" else CPU_SEGMENTS_PER_STEP

    @classmethod
    def load(cls, model_path: str, use_gpu: bool = False) -> "Predictor":
        """The artifact at `model_path`, on the GPU with use_gpu where there is one."""
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        model, meta = artifact.load(model_path, device=str(device))
        return cls(model, device, meta)

    def __call__(self, x: dict[str, np.ndarray | torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(log-probabilities [n, classes], embeddings [n, embedding_size]), float32, of n
        segments' inputs {name: [n, *shape]} (float16 as stored, or float32)."""
        # Ray Data hands out read-only arrays; torch wants to own writable memory.
        x = {
            n: torch.from_numpy(np.require(x[n], requirements=["C", "W"])) if isinstance(x[n], np.ndarray) else x[n]
            for n in self.inputs
        }
        lps, embs = [], []
        with torch.inference_mode():
            for s in range(0, len(x[self.inputs[0]]), self.step):
                xb = {n: v[s : s + self.step].to(self.device) for n, v in x.items()}
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                    logits, h = self.model.outputs(xb)
                lps.append(
                    (F.logsigmoid(logits.float()) if self.multilabel else torch.log_softmax(logits.float(), 1))
                    .cpu()
                    .numpy()
                )
                embs.append(h.float().cpu().numpy())
        return np.concatenate(lps), np.concatenate(embs)
