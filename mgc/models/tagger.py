"""The pretrained MSD musicnn tagger (mgc.musicnn) as a model that labels and embeds with no
training: the model path `musicnn` (mgc.artifact.BUILTIN). It is not in the registry (nothing
trains it); it meets the `Labeller` interface that labelling and embedding use, as a trained
GenreNet does. Here, not in mgc.musicnn, so that the network stays below the inputs: the `musicnn`
input runs the network, and this model reads that input with its FeatureConfig.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mgc import musicnn
from mgc.features import FeatureConfig


class Tagger(nn.Module):
    """The pretrained tags as a labelling model (`mgc label --model musicnn`): it reads the stored
    `musicnn` input (embedding then tags) and, like a trained network, gives the embedding and,
    from it, the tag logits through the network's own output layer. Multi-label: each tag's
    probability is its own sigmoid."""

    @dataclass(frozen=True)
    class Config:
        inputs: tuple[str, ...] = ("musicnn",)

    def __init__(self, out: nn.Linear):
        super().__init__()
        self.cfg = self.Config()
        self.head = nn.Module()
        self.head.out, self.head.embedding_size = out, musicnn.EMBEDDING

    def embed(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stored 200-d embedding of each segment, float32."""
        return x["musicnn"][:, : musicnn.EMBEDDING].float()

    def outputs(self, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tag logits, embedding), as GenreNet.outputs."""
        h = self.embed(x)
        return self.head.out(h), h

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tag logits."""
        return self.outputs(x)[0]


def tagger(device: str = "cpu") -> tuple[Tagger, dict[str, Any]]:
    """The built-in model `musicnn` and its metadata, as mgc.artifact.load gives a trained one's."""
    features = FeatureConfig(inputs=("musicnn",))
    meta = {
        "labels": list(musicnn.TAGS),
        "temperature": 1.0,
        "multilabel": True,
        "features": features,
        "feature_config": features.to_dict(),
    }
    return Tagger(copy.deepcopy(musicnn.load("cpu").out)).to(device).eval(), meta
