"""The classical baseline, as the FMA paper's: summary statistics of the spectra, standardised,
then multinomial logistic regression (scikit-learn); one-vs-rest logistic regressions for a
multi-label target.

Each segment's statistics are the mean and standard deviation over time of every log-mel band
and every MFCC; a track's prediction pools its segments' log-probabilities as every model's does
(mgc.metrics.pool), so it labels, embeds and compares like the networks. The regression is fitted
in closed form on the driver (`fit`) from statistics computed by Ray Data, never by gradient
descent; its scaler and coefficients become the tensors of a GenreNet (a standardising buffer and
the head's linear layer), so the artifact holds arrays, never a pickle. Its embedding is the
standardised statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mgc.models.base import Architecture, register
from mgc.models.blocks import Normalise

C = 1.0  # inverse regularisation strength of the logistic regression (scikit-learn's default)


def summary_size(shapes: tuple[tuple[int, ...], ...]) -> int:
    """The length of `summary` for inputs of these shapes."""
    return sum(s[0] if len(s) == 1 else 2 * s[0] for s in shapes)


def summary(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """{input: [batch, bands, frames] or [batch, d]} -> [batch, summary_size]: each spectrum's per
    band mean and standard deviation over time; a vector input (a pretrained embedding) as it is."""
    return torch.cat([s for v in x.values() for s in ((v,) if v.dim() == 2 else (v.mean(-1), v.std(-1)))], 1)


class Statistics(nn.Module):
    """The inputs' `summary`, standardised with the training split's statistics."""

    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.size = summary_size(cfg.shapes)
        self.scale = Normalise(self.size)

    raw = staticmethod(summary)  # the statistics before standardisation

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.scale(self.raw(x))


def fit_linear(net, train: Any, multilabel: bool, linear: nn.Linear) -> dict[str, float]:
    """Fit the logistic regression from the standardised statistics of `net`'s inputs to the
    logits into `linear`, and the standardisation into `net.encoder.scale` (an encoder that is
    `Statistics`), on the training split: a Ray Dataset of the inputs and targets. Statistics per
    segment by Ray Data, then the scaler and the regression here (multi-label: one logistic
    regression per genre, one-vs-rest). Returns {'train_loss': log loss on the training split
    (binary, averaged over genres, multi-label)}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    # Here, like scikit-learn: mgc.metrics imports pandas, which the networks import without
    # (bench/gpu.py on a bare GPU machine).
    from mgc.metrics import binary_log_loss

    names = net.cfg.inputs

    def statistics(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            x = {n: net.norm[n](torch.from_numpy(batch[n].astype(np.float32))) for n in names}
            return {"x": Statistics.raw(x).numpy(), "target": batch["target"]}

    parts = train.map_batches(statistics, batch_format="numpy", batch_size=256).take_all()
    # float64, so that the regression's probabilities sum to 1 as closely as its log loss checks
    x, y = np.stack([p["x"] for p in parts]).astype(np.float64), np.array([p["target"] for p in parts])
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    n = net.cfg.n_classes
    weight, bias = np.zeros((n, z.shape[1])), np.full(n, -30.0)  # a genre training lacks is never predicted
    if multilabel:
        y = y.astype(int)
        seen = np.flatnonzero(y.any(0) & ~y.all(0))  # a genre on every segment or none has no regression
        model = OneVsRestClassifier(LogisticRegression(C=C, max_iter=2000)).fit(z, y[:, seen])
        weight[seen] = np.vstack([e.coef_ for e in model.estimators_])
        bias[seen] = np.concatenate([e.intercept_ for e in model.estimators_])
        bias[y.all(0)] = 30.0
    else:
        model = LogisticRegression(C=C, max_iter=2000).fit(z, y)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: the same softmax, split
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        weight[model.classes_], bias[model.classes_] = coef, intercept
    with torch.no_grad():
        net.encoder.scale.mean.copy_(torch.as_tensor(scaler.mean_))
        net.encoder.scale.std.copy_(torch.as_tensor(np.maximum(scaler.scale_, 1e-8)))
        linear.weight.copy_(torch.as_tensor(weight))
        linear.bias.copy_(torch.as_tensor(bias))
    if multilabel:
        return {"train_loss": binary_log_loss(y, 1 / (1 + np.exp(-(z @ weight.T + bias))))}
    probs = np.zeros((len(y), n))
    probs[:, model.classes_] = model.predict_proba(z)
    return {"train_loss": float(log_loss(y, probs, labels=list(range(n))))}


def fit(net, train: Any, multilabel: bool = False) -> dict[str, float]:
    """The baseline: the logistic regression (`fit_linear`) is the network's output layer."""
    return fit_linear(net, train, multilabel, net.head.out)


register(
    Architecture(
        "baseline",
        "mean and standard deviation of each log-mel band and MFCC (and the musicnn vector where read), standardised, "
        "multinomial logistic regression (no training loop)",
        (("logmel", "mfcc"), ("logmel",), ("mfcc",), ("musicnn",), ("musicnn", "logmel", "mfcc")),
        Statistics,
        {"dense": ()},
        fit=fit,
    )
)
