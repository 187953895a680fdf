"""How good a probability of purchase is: ranking (ROC AUC, average precision, lift in
the top decile) and calibration (expected calibration error over ten equal-size bins,
and the Brier score)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.scores.ledger import Floats


@dataclass(frozen=True)
class Metrics:
    auc: float
    average_precision: float
    lift: float  # the top decile's purchase rate over everyone's
    ece: float
    brier: float


def auc(labels: npt.NDArray[np.bool_], scores: Floats) -> float:
    """ROC AUC; NaN when the labels hold one class only (it is undefined there)."""
    from sklearn.metrics import roc_auc_score

    y = labels.astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, scores))


def auc_difference(
    labels: npt.NDArray[np.bool_], first: Floats, second: Floats
) -> tuple[float, float]:
    """``first``'s ROC AUC minus ``second``'s on the same customers, and the standard
    error of that difference by DeLong's paired variance (DeLong, DeLong and
    Clarke-Pearson 1988; midranks as Sun and Xu 2014): no resampling, three sorts a
    score. (NaN, NaN) when the labels hold one class only."""
    from scipy.stats import rankdata

    y = labels.astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan"), float("nan")
    above: list[Floats] = []  # per positive: the share of negatives it outranks
    below: list[Floats] = []  # per negative: the share of positives that outrank it
    for scores in (first, second):
        ranks = rankdata(np.concatenate([scores[y], scores[~y]]))
        above.append((ranks[:positives] - rankdata(scores[y])) / negatives)
        below.append(1 - (ranks[positives:] - rankdata(scores[~y])) / positives)
    difference = float(above[0].mean() - above[1].mean())
    variance = float(np.var(above[0] - above[1], ddof=1) / positives) if positives > 1 else 0.0
    if negatives > 1:
        variance += float(np.var(below[0] - below[1], ddof=1) / negatives)
    return difference, float(np.sqrt(max(variance, 0.0)))


def measure(labels: npt.NDArray[np.bool_], scores: Floats, *, probability: bool = True) -> Metrics:
    """``scores`` against ``labels``; calibration only when ``scores`` are probabilities
    (NaN otherwise: an expected number of purchases is not one)."""
    from sklearn.metrics import average_precision_score, brier_score_loss

    y = labels.astype(bool)
    if y.all() or not y.any():
        nan = float("nan")
        return Metrics(nan, nan, nan, nan, nan)
    return Metrics(
        auc=auc(y, scores),
        average_precision=float(average_precision_score(y, scores)),
        lift=top_decile_lift(y, scores),
        ece=expected_calibration_error(y, scores) if probability else float("nan"),
        brier=float(brier_score_loss(y, np.clip(scores, 0, 1))) if probability else float("nan"),
    )


def top_decile_lift(labels: npt.NDArray[np.bool_], scores: Floats) -> float:
    top = np.argsort(-scores, kind="stable")[: max(1, len(scores) // 10)]
    return float(labels[top].mean() / labels.mean())


def expected_calibration_error(labels: npt.NDArray[np.bool_], scores: Floats) -> float:
    """Mean |predicted - observed| over ten bins of equal size, weighted by bin size."""
    order = np.argsort(scores, kind="stable")
    error = 0.0
    for part in np.array_split(order, 10):
        if len(part):
            error += len(part) * abs(float(scores[part].mean()) - float(labels[part].mean()))
    return error / len(scores)


def auc_by_group(
    labels: npt.NDArray[np.bool_], scores: Floats, groups: list[str], *, minimum: int = 30
) -> dict[str, tuple[int, float]]:
    """ROC AUC within each group (size, AUC); NaN where a group has one class only or
    fewer than ``minimum`` members."""
    names = np.asarray(groups)
    found: dict[str, tuple[int, float]] = {}
    for group in sorted(set(groups)):
        inside = names == group
        y = labels[inside]
        size = int(inside.sum())
        found[group] = (size, auc(y, scores[inside]) if size >= minimum else float("nan"))
    return found
