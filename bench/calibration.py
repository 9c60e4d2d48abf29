"""How the temperature is chosen: mgc's rule against the alternatives, on simulated predictions.

    .venv/bin/python bench/calibration.py [--seeds 20]

A model's validation and test predictions are simulated (5 genres, log-probabilities with the
true genre `margin` ahead in the logits; a share of targets moved to another genre where the
accuracy is below 1), for validation splits from 3 to 1,000 tracks, all right or not. For each
rule the temperature is fitted on validation and applied to 2,000 test tracks: the mean and worst
test log loss over the seeds, and the mean test ECE. Printed; bench/README.md ("Calibration")
quotes it. No real collection is involved: this shows what each rule does where the validation
split is small or separable, which a real run cannot tell apart from luck.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import beta
from sklearn.metrics import log_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc import metrics  # noqa: E402

CASES = [  # validation tracks, validation accuracy, test accuracy, margin
    (3, 1.0, 0.8, 3.0), (10, 1.0, 0.8, 3.0), (10, 1.0, 0.8, 6.0), (24, 1.0, 0.9, 3.0), (30, 0.9, 0.9, 1.5),
    (50, 0.8, 0.8, 2.0), (100, 0.7, 0.7, 3.0), (100, 0.9, 0.9, 6.0), (1000, 0.7, 0.7, 3.0),
]  # fmt: skip


def predictions(n: int, accuracy: float, margin: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), y] += margin
    lp = metrics.calibrate(logits, 1.0)
    if accuracy == 1.0:
        return lp.argmax(1), lp  # a split the model gets all right
    return np.where(rng.random(n) > accuracy, (y + 1) % 5, y), lp


def nll(y: np.ndarray, lp: np.ndarray, t: float) -> float:
    return log_loss(y, np.exp(metrics.calibrate(lp, t)), labels=list(range(5)))


def plain(y, lp) -> float:
    """The log loss's minimum alone (mgc before: it collapses to the bound on separable splits)."""
    return float(
        np.exp(minimize_scalar(lambda s: nll(y, lp, np.exp(s)), bounds=metrics.LOG_T_BOUNDS, method="bounded").x)
    )


def floored(y, lp, quantile: float | None) -> float:
    """The plain fit, no lower than keeps mean confidence at Laplace's (quantile None) or a Beta
    posterior quantile of the accuracy."""
    n, k = len(y), int((lp.argmax(1) == y).sum())
    target = (k + 1) / (n + 2) if quantile is None else beta.ppf(quantile, k + 1, n - k + 1)

    def gap(s: float) -> float:
        return np.exp(metrics.calibrate(lp, np.exp(s)).max(1)).mean() - target

    lo, hi = metrics.LOG_T_BOUNDS
    floor = np.exp(lo) if gap(lo) <= 0 else np.exp(hi) if gap(hi) > 0 else np.exp(brentq(gap, lo, hi))
    return max(plain(y, lp), float(floor))


def prior_only(y, lp) -> float:
    """The MAP under mgc's prior, with no floor."""
    objective = lambda s: len(y) * nll(y, lp, np.exp(s)) + s * s / (2 * metrics.LOG_T_PRIOR_SD**2)  # noqa: E731
    return float(np.exp(minimize_scalar(objective, bounds=metrics.LOG_T_BOUNDS, method="bounded").x))


RULES = {
    "plain": plain,
    "Laplace floor": lambda y, lp: floored(y, lp, None),
    "16th-pct floor": lambda y, lp: floored(y, lp, 0.16),
    "prior": prior_only,
    "mgc (prior + Laplace floor)": lambda y, lp: metrics.fit_temperature(y, lp)["temperature"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    args = p.parse_args()
    print("| validation tracks, accuracy -> test accuracy, margin | " + " | ".join(RULES) + " |")
    print("| --- |" + " --- |" * len(RULES))
    for n, val_acc, test_acc, margin in CASES:
        cells = []
        for rule in RULES.values():
            losses, eces, ts = [], [], []
            for seed in range(args.seeds):
                t = rule(*predictions(n, val_acc, margin, seed))
                ty, tlp = predictions(2000, test_acc, margin, 100 + seed)
                calibrated = metrics.calibrate(tlp, t)
                losses.append(nll(ty, tlp, t))
                eces.append(metrics.ece(ty, calibrated))
                ts.append(t)
            cells.append(
                f"T {np.median(ts):.2f}, log loss {np.mean(losses):.2f} (worst {max(losses):.2f}), ECE {np.mean(eces):.3f}"
            )
        print(f"| {n}, {val_acc:.0%} -> {test_acc:.0%}, {margin:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
