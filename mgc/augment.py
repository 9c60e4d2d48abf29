"""Training-time augmentation, run on the worker's device (GPU nodes spend no CPU on it).

Pure functions over a batch, plus `Augment`, the settings and random state the training loop
builds from its options and hands to the model (mgc.models.GenreNet applies each input kind's
augmentation after normalisation, so a mask is the training split's mean, not silence). This
module imports no other of mgc's: the input kinds build on it. Each kind chooses its own (`Input.augment`):
spectra get a random time shift and SpecAugment-style frequency and time masks, the waveform a
random shift and gain. Mixup mixes whole segments (every input and the targets alike) between
different tracks. Only training batches see any of it: validation, test, labelling and embedding
call the model without an Augment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def _per_example(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values [batch] viewed to broadcast over x [batch, ...]."""
    return values.view(-1, *(1,) * (x.dim() - 1))


def time_shift(x: torch.Tensor, most: float, gen: torch.Generator) -> torch.Tensor:
    """Each example rolled along its last (time) axis by up to `most` of its length, either way."""
    n = x.shape[-1]
    k = int(most * n)
    if k == 0:
        return x
    shifts = torch.randint(-k, k + 1, (x.shape[0],), device=x.device, generator=gen)
    # One roll (a copy) per example: a gather over the whole batch computes an index per sample,
    # far slower for a batch of waveforms on CPU (bench/README.md, "The training recipe"); same values.
    return torch.stack([torch.roll(e, s, dims=-1) for e, s in zip(x, shifts.tolist())])


def mask(x: torch.Tensor, most: float, dim: int, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment: one band of each example along `dim` (1: frequency, 2: time), of a random
    width up to `most` of that axis, set to 0 (the mean, on normalised input)."""
    size = x.shape[dim]
    w = int(most * size)
    if w == 0:
        return x
    b = x.shape[0]
    widths = torch.randint(0, w + 1, (b,), device=x.device, generator=gen)
    starts = (torch.rand(b, device=x.device, generator=gen) * (size - widths + 1)).long()
    pos = torch.arange(size, device=x.device)[None, :]
    hit = (pos >= starts[:, None]) & (pos < (starts + widths)[:, None])
    shape = [b] + [1] * (x.dim() - 1)
    shape[dim] = size
    return x.masked_fill(hit.view(shape), 0.0)


def gain(x: torch.Tensor, most_db: float, gen: torch.Generator) -> torch.Tensor:
    """Each example scaled by a random gain within ±`most_db` dB."""
    if most_db <= 0:
        return x
    db = (torch.rand(x.shape[0], device=x.device, generator=gen) * 2 - 1) * most_db
    return x * _per_example(10 ** (db / 20), x)


def mixup(
    x: dict[str, torch.Tensor],
    targets: torch.Tensor,
    track_ids: torch.Tensor,
    alpha: float,
    gen: torch.Generator,
    rng: np.random.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Mixup (Zhang et al. 2018): each segment mixed with another of the batch in proportion
    lambda ~ Beta(alpha, alpha), every input and the target distributions [batch, classes] alike.
    Pairs from one track are left unmixed; each row of the targets still sums to 1."""
    if alpha <= 0:
        return x, targets
    b = targets.shape[0]
    perm = torch.randperm(b, device=targets.device, generator=gen)
    lam = torch.as_tensor(rng.beta(alpha, alpha, size=b), dtype=torch.float32, device=targets.device)
    lam = torch.where(track_ids == track_ids[perm], torch.ones_like(lam), lam)
    mixed = {n: _per_example(lam, v) * v.float() + _per_example(1 - lam, v) * v[perm].float() for n, v in x.items()}
    return mixed, lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]


@dataclass(frozen=True)
class Augment:
    """The training loop's augmentation settings and random state; the model calls each input
    kind's `augment(x, this, this.gen)` on its normalised input (the kind decides what applies)."""

    shift: float = 0.0  # largest time shift, as a share of a segment
    mask: float = 0.0  # largest SpecAugment mask, as a share of the axis
    gain_db: float = 0.0  # largest gain on the waveform, dB
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0: off
    seed: int = 0
    device: str = "cpu"
    gen: torch.Generator = field(init=False, repr=False)  # drawn on the device, from the seed
    rng: np.random.Generator = field(init=False, repr=False)  # mixup's Beta draws

    def __post_init__(self) -> None:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed)
        object.__setattr__(self, "gen", gen)
        object.__setattr__(self, "rng", np.random.default_rng(self.seed))

    def mix(self, x: dict[str, torch.Tensor], targets: torch.Tensor, track_ids: torch.Tensor):
        """Mixup of a batch (a no-op with mixup 0): (inputs, target distributions)."""
        return mixup(x, targets, track_ids, self.mixup, self.gen, self.rng)
