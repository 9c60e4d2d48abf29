"""The pretrained MSD musicnn tagger (Pons and Serra 2019; pip `musicnn` 0.1.0, ISC licence),
ported to PyTorch: its front end (16 kHz, 96-band mel, log10(10000 x + 1), 187-frame patches) and
its network (musically motivated front end, dense mid end, temporal pooling back end), in
inference mode. The weights are the package's `MSD_musicnn` checkpoint converted with no
TensorFlow by tools/convert_musicnn.py (provenance in mgc/pretrained/README.md).

Per 3 s patch it gives the 50 MSD tag probabilities (TAGS), a 200-d embedding (the batch-normed
penultimate layer) and the 753 mean- and max-pooled mid-end features. One difference from the
package as shipped: the log is taken in float32 (the package takes it in float16, which overflows
to inf on loud music and makes its tags nearly constant).

It imports no mgc module: the `musicnn` input (mgc.inputs) runs it, and the model that labels with
its tags (mgc.models.tagger) reads that input.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SR, N_FFT, HOP, N_MELS, FRAMES = 16000, 512, 256, 96, 187
EPS = 1e-3  # the graph's batch-norm epsilon
WEIGHTS = Path(__file__).parent / "pretrained" / "musicnn_msd.npz"
TAGS = (
    "rock",             "pop",             "alternative",    "indie",            "electronic",
    "female vocalists", "dance",           "00s",            "alternative rock", "jazz",
    "beautiful",        "metal",           "chillout",       "male vocalists",   "classic rock",
    "soul",             "indie rock",      "Mellow",         "electronica",      "80s",
    "folk",             "90s",             "chill",          "instrumental",     "punk",
    "oldies",           "blues",           "hard rock",      "ambient",          "acoustic",
    "experimental",     "female vocalist", "guitar",         "Hip-Hop",          "70s",
    "party",            "country",         "easy listening", "sexy",             "catchy",
    "funk",             "electro",         "heavy metal",    "Progressive rock", "60s",
    "rnb",              "indie pop",       "sad",            "House",            "happy",
)  # fmt: skip
EMBEDDING = 200


def logmel(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """The network's input [..., frames, 96] for audio [..., samples] at `sr` (resampled to 16 kHz):
    the package's mel spectrogram, rounded to float16 as it does, then its log in float32 (values
    beyond float16's range are clipped, not made infinite)."""
    import librosa  # here, not at the top: the networks import without it (bench/gpu.py on a bare GPU machine)

    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR, axis=-1)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS)
    mel = np.minimum(mel, np.finfo(np.float16).max).astype(np.float16).astype(np.float32)
    return np.swapaxes(np.log10(10000 * mel + 1), -1, -2)


def patches(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """Consecutive non-overlapping 187-frame patches [n, 187, 96] of a clip, the last partial one
    dropped (the package's batching with no overlap)."""
    x = logmel(y, sr)
    n = len(x) // FRAMES
    return x[: n * FRAMES].reshape(n, FRAMES, N_MELS)


class _ConvBN(nn.Module):
    """Convolution, ReLU, then batch norm (the graph's order), max-pooled over frequency."""

    def __init__(self, kernel: tuple[int, int], channels: int, pad: tuple[int, int]):
        super().__init__()
        self.conv, self.bn, self.pad = nn.Conv2d(1, channels, kernel), nn.BatchNorm2d(channels, eps=EPS), pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, T, F] -> [B, channels, T]
        return self.bn(F.relu(self.conv(F.pad(x, (0, 0, *self.pad))))).amax(-1)


class Musicnn(nn.Module):
    """MSD musicnn on patches [B, 187, 96]: returns {'tags': [B, 50] probabilities, 'embedding':
    [B, 200], 'mean_pool', 'max_pool': [B, 753]}."""

    def __init__(self):
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=EPS)
        # Timbral filters span 40 % and 70 % of the bands and 7 frames; temporal ones 128, 64 and
        # 32 frames of one band, padded as TensorFlow's "same" pads an even kernel (less before).
        self.front = nn.ModuleList(
            [_ConvBN((7, int(f * N_MELS)), 204, (3, 3)) for f in (0.4, 0.7)]
            + [_ConvBN((k, 1), 51, ((k - 1) // 2, k // 2)) for k in (128, 64, 32)]
        )
        self.mid = nn.ModuleList(
            [nn.Conv1d(561, 64, 7, padding=3), nn.Conv1d(64, 64, 7, padding=3), nn.Conv1d(64, 64, 7, padding=3)]
        )
        self.mid_bn = nn.ModuleList([nn.BatchNorm1d(64, eps=EPS) for _ in range(3)])
        self.pool_bn = nn.BatchNorm1d(1506, eps=EPS)
        self.dense = nn.Linear(1506, EMBEDDING)
        self.dense_bn = nn.BatchNorm1d(EMBEDDING, eps=EPS)
        self.out = nn.Linear(EMBEDDING, len(TAGS))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input_bn(x.unsqueeze(1))
        h = torch.cat([f(x) for f in self.front], 1)  # [B, 561, T]
        layers = [h]
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn)):
            z = bn(F.relu(conv(layers[-1])))
            layers.append(z if i == 0 else z + layers[-1])  # residual after the first
        feats = torch.cat(layers, 1)  # [B, 753, T]
        max_pool, mean_pool = feats.amax(-1), feats.mean(-1)
        pooled = torch.stack([max_pool, mean_pool], -1).flatten(1)  # the graph interleaves them
        emb = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return {"tags": torch.sigmoid(self.out(emb)), "embedding": emb, "mean_pool": mean_pool, "max_pool": max_pool}

    def load_checkpoint(self, w: dict[str, np.ndarray]) -> "Musicnn":
        """Set the weights from the converted checkpoint's tensors (TensorFlow names and layouts)."""

        def bn(mod: nn.Module, i: int) -> None:
            name = "batch_normalization" + (f"_{i}" if i else "")
            for ours, theirs in (
                ("weight", "gamma"),
                ("bias", "beta"),
                ("running_mean", "moving_mean"),
                ("running_var", "moving_variance"),
            ):
                getattr(mod, ours).data = torch.from_numpy(np.array(w[f"{name}/{theirs}"]))

        def conv(mod: nn.Module, i: int) -> None:
            name = "conv2d" + (f"_{i}" if i else "")
            k = torch.from_numpy(np.array(w[f"{name}/kernel"])).permute(
                3, 2, 0, 1
            )  # [h, w, in, out] -> [out, in, h, w]
            if isinstance(mod, nn.Conv1d):  # a mid-end kernel spans every feature: [out, 1, 7, F] -> [out, F, 7]
                k = k[:, 0].transpose(1, 2)
            mod.weight.data, mod.bias.data = k.contiguous(), torch.from_numpy(np.array(w[f"{name}/bias"]))

        bn(self.input_bn, 0)
        for i, block in enumerate(self.front):
            conv(block.conv, i)
            bn(block.bn, i + 1)
        for i, (c, b) in enumerate(zip(self.mid, self.mid_bn)):
            conv(c, i + 5)
            bn(b, i + 6)
        bn(self.pool_bn, 9)
        bn(self.dense_bn, 10)
        for lin, name in ((self.dense, "dense"), (self.out, "dense_1")):
            lin.weight.data = torch.from_numpy(np.array(w[f"{name}/kernel"])).T.contiguous()
            lin.bias.data = torch.from_numpy(np.array(w[f"{name}/bias"]))
        return self.eval()


@functools.lru_cache(maxsize=4)
def load(device: str = "cpu") -> Musicnn:
    """The pretrained network on `device`, in inference mode; loaded once per process and device."""
    with np.load(WEIGHTS, allow_pickle=False) as w:
        return Musicnn().load_checkpoint(dict(w)).to(device)


# Patches per forward pass. On CPU, small batches: a patch's timbral feature maps (204 x 187 x 59
# floats each) fit the caches, and 2 patches a pass cost a third of what 20 a pass do, per patch
# (bench/README.md); a GPU wants many.
BATCH = {"cpu": 2, "cuda": 256}


@torch.no_grad()
def run(x: np.ndarray, device: str = "cpu", batch: int = 0, bf16: bool = False) -> dict[str, np.ndarray]:
    """The network's outputs, float32 numpy, for patches [n, 187, 96], `batch` a pass (0: the
    device's BATCH); `bf16` computes under bfloat16 autocast (bench/musicnn.py measures it)."""
    net, outs = load(device), []
    batch = batch or BATCH.get(torch.device(device).type, 64)
    for i in range(0, len(x), batch):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(net(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).to(device)))
    return {k: torch.cat([o[k] for o in outs]).float().cpu().numpy() for k in outs[0]} if outs else {}
