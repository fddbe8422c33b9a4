"""Per-task metrics for binary risk predictions, with the uncertainty a reviewer asks for.

Point estimates come from scikit-learn, so they mean exactly what the literature means by them
(AUPRC is scikit-learn's average precision). The bootstrap recomputes AUROC, AUPRC and F1 on
many resamples at once with numpy (each resample is a vector of draw counts used as sample
weights, so the scores are sorted once) because a loop over sklearn calls costs seconds per
model and task; tests pin the weighted formulas to scikit-learn's ``sample_weight``.

The F1 threshold is chosen on the ``tuning`` split and applied unchanged to ``held_out``:
choosing it on the split it is reported on would flatter every model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

DEFAULT_THRESHOLD = 0.5
DEFAULT_AGE_BANDS: tuple[float, ...] = (0.0, 18.0, 40.0, 65.0)
# a resample matrix holds at most this many cells at once (memory stays ~100 MB in float64)
_MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval (NaN where not computable)."""

    estimate: float
    low: float
    high: float


def _arrays(y_true: Sequence | np.ndarray, y_score: Sequence | np.ndarray):
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-d of equal length")
    return y, s


def has_both_classes(y_true: Sequence | np.ndarray) -> bool:
    y = np.asarray(y_true).astype(bool)
    return bool(y.any() and (~y).any())


# ------------------------------------------------------------------------------------------------
# Point estimates
# ------------------------------------------------------------------------------------------------
def auroc(y_true, y_score) -> float:
    """scikit-learn's ROC AUC; NaN when only one class is present."""
    y, s = _arrays(y_true, y_score)
    return float(roc_auc_score(y, s)) if has_both_classes(y) else float("nan")


def auprc(y_true, y_score) -> float:
    """scikit-learn's average precision; NaN without positives (its value is undefined)."""
    y, s = _arrays(y_true, y_score)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def choose_f1_threshold(y_true, y_score) -> tuple[float, str]:
    """The score threshold that maximizes F1 on these (tuning) predictions.

    Predictions at or above the threshold are positive. Returns ``(threshold, source)``; the
    source says ``"tuning"``, or why the default 0.5 was used instead (no tuning rows or no
    tuning positives, where F1 is not defined).
    """
    y, s = _arrays(y_true, y_score)
    if len(y) == 0:
        return DEFAULT_THRESHOLD, "default 0.5 (no tuning predictions)"
    if not y.any():
        return DEFAULT_THRESHOLD, "default 0.5 (no positives in tuning)"
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))]), "tuning"


def f1_at(y_true, y_score, threshold: float) -> dict[str, float]:
    """F1, precision and recall of ``score >= threshold`` (0 where a ratio has no denominator)."""
    y, s = _arrays(y_true, y_score)
    pred = s >= threshold
    return {
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
    }


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------
def reliability_bins(y_true, y_score, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability-diagram data: per bin its edges, count, mean score and observed positive rate.

    ``strategy="uniform"`` uses equal-width bins on [0, 1] (empty bins are kept with count 0),
    ``"quantile"`` equal-mass bins from the score quantiles. A score equal to an inner edge falls
    in the bin above it; 1.0 falls in the last bin.
    """
    y, s = _arrays(y_true, y_score)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1)) if len(s) else np.zeros(2)
        edges = np.unique(edges)
        if len(edges) == 1:  # every score equal: one bin
            edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', not {strategy!r}")
    k = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, k - 1)
    count = np.bincount(idx, minlength=k)
    sum_score = np.bincount(idx, weights=s, minlength=k)
    sum_pos = np.bincount(idx, weights=y.astype(np.float64), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.where(count > 0, sum_score / count, np.nan)
        frac_pos = np.where(count > 0, sum_pos / count, np.nan)
    return pd.DataFrame(
        {
            "bin": np.arange(k),
            "low": edges[:-1],
            "high": edges[1:],
            "count": count,
            "mean_score": mean_score,
            "fraction_positive": frac_pos,
        }
    )


def expected_calibration_error(
    y_true, y_score, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """ECE: the count-weighted mean of |observed rate - mean score| over the bins."""
    bins = reliability_bins(y_true, y_score, n_bins, strategy)
    filled = bins[bins["count"] > 0]
    if filled.empty:
        return float("nan")
    gap = (filled["fraction_positive"] - filled["mean_score"]).abs()
    return float((gap * filled["count"]).sum() / filled["count"].sum())


# ------------------------------------------------------------------------------------------------
# Vectorized bootstrap
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sorted:
    """One evaluation set sorted by ascending score, with its runs of tied scores."""

    y: np.ndarray  # bool, sorted
    s: np.ndarray  # float, sorted
    order: np.ndarray  # sorted position -> original row
    first: np.ndarray  # first position of the run each position belongs to
    last: np.ndarray  # last position of that run

    @classmethod
    def of(cls, y: np.ndarray, s: np.ndarray) -> _Sorted:
        order = np.argsort(s, kind="stable")
        ss = s[order]
        n = len(ss)
        pos = np.arange(n)
        starts = np.ones(n, dtype=bool)
        starts[1:] = ss[1:] != ss[:-1]
        ends = np.ones(n, dtype=bool)
        ends[:-1] = starts[1:]
        first = np.maximum.accumulate(np.where(starts, pos, 0))
        last = np.minimum.accumulate(np.where(ends, pos, n - 1)[::-1])[::-1]
        return cls(y[order], ss, order, first, last)


def _weighted_auroc(srt: _Sorted, w: np.ndarray) -> np.ndarray:
    """AUROC for each row of sample weights ``w`` (B, n) in sorted order: the weighted
    Mann-Whitney statistic, a tied (positive, negative) pair counting one half."""
    wn = np.where(srt.y, 0.0, w)
    cum_neg = np.cumsum(wn, axis=1)
    pos = np.flatnonzero(srt.y)
    before = cum_neg[:, srt.first[pos]] - wn[:, srt.first[pos]]  # negatives below the run
    within = cum_neg[:, srt.last[pos]] - before  # negatives tied with it
    wp = w[:, pos]
    u = (wp * (before + 0.5 * within)).sum(axis=1)
    total = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, u / total, np.nan)


def _weighted_auprc(srt: _Sorted, w: np.ndarray) -> np.ndarray:
    """Average precision for each row of weights (B, n) in sorted order, as scikit-learn
    defines it: a run of tied scores is one step of the precision-recall curve."""
    wp = np.where(srt.y, w, 0.0)[:, ::-1]  # descending score from here on
    tp = np.cumsum(wp, axis=1)
    seen = np.cumsum(w[:, ::-1], axis=1)
    n = w.shape[1]
    run_end = (n - 1 - srt.first)[::-1]  # in descending order a run ends at its lowest index
    is_end = run_end == np.arange(n)
    tp_end = np.where(is_end, tp, 0.0)
    prev = np.zeros_like(tp_end)
    prev[:, 1:] = np.maximum.accumulate(tp_end, axis=1)[:, :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        ap = (np.where(is_end, tp - prev, 0.0) * precision).sum(axis=1) / tp[:, -1]
    return np.where(tp[:, -1] > 0, ap, np.nan)


def _weighted_f1(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    tp = (w * (y & pred)).sum(axis=1)
    denom = (w * y).sum(axis=1) + (w * pred).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, 0.0)


def _multinomial_counts(
    rng: np.random.Generator, n_resamples: int, members: np.ndarray, width: int
) -> np.ndarray:
    """(B, width) draw counts: ``len(members)`` draws with replacement among ``members``."""
    out = np.zeros((n_resamples, width))
    k = len(members)
    if k:
        draws = rng.integers(0, k, size=(n_resamples, k))
        flat = (draws + np.arange(n_resamples)[:, None] * k).ravel()  # one bincount for all rows
        out[:, members] = np.bincount(flat, minlength=n_resamples * k).reshape(n_resamples, k)
    return out


def bootstrap_weights(
    y_true,
    n_resamples: int,
    rng: np.random.Generator,
    *,
    groups: Sequence | np.ndarray | None = None,
    stratified: bool = True,
) -> np.ndarray:
    """A (n_resamples, n) matrix: how often each row is drawn in each resample.

    Without ``groups`` rows are drawn with replacement; with ``groups`` (e.g. subject ids)
    whole groups are drawn and each row counts as often as its group (a cluster bootstrap:
    a patient's many label rows are not independent evidence). Stratified: rows (or groups)
    with a positive are drawn apart from the rest, so every resample keeps positives and
    negatives and AUROC is defined on each.
    """
    y = np.asarray(y_true).astype(bool)
    if groups is None:
        unit_of_row = np.arange(len(y))
        unit_positive = y
    else:
        _, unit_of_row = np.unique(np.asarray(groups), return_inverse=True)
        unit_positive = np.zeros(unit_of_row.max() + 1 if len(y) else 0, dtype=bool)
        np.logical_or.at(unit_positive, unit_of_row, y)
    n_units = len(unit_positive)
    if stratified:
        counts = _multinomial_counts(
            rng, n_resamples, np.flatnonzero(unit_positive), n_units
        ) + _multinomial_counts(rng, n_resamples, np.flatnonzero(~unit_positive), n_units)
    else:
        counts = _multinomial_counts(rng, n_resamples, np.arange(n_units), n_units)
    return counts[:, unit_of_row]


def bootstrap_metrics(
    y_true,
    y_score,
    threshold: float,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> dict[str, Interval]:
    """AUROC, AUPRC and F1 (at ``threshold``) with percentile bootstrap intervals.

    Each resample is a vector of draw counts used as sample weights, so the data are sorted
    once and all resamples are scored together (chunked to bound memory). ``groups`` switches
    to a cluster bootstrap over them (see :func:`bootstrap_weights`). Seeded: the same inputs
    give the same intervals, and two models scored on the same rows get the same resamples.
    Resamples where a metric is undefined (one class drawn) are left out of its interval.
    """
    y, s = _arrays(y_true, y_score)
    point = {
        "auroc": auroc(y, s),
        "auprc": auprc(y, s),
        "f1": f1_at(y, s, threshold)["f1"],
    }
    nan = float("nan")
    if len(y) == 0 or n_resamples <= 0:
        return {k: Interval(v, nan, nan) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    weights = bootstrap_weights(y, n_resamples, rng, groups=groups, stratified=stratified)
    srt = _Sorted.of(y, s)
    pred = s >= threshold
    chunk = max(1, _MAX_CELLS // max(1, len(y)))
    draws: dict[str, list[np.ndarray]] = {"auroc": [], "auprc": [], "f1": []}
    for start in range(0, n_resamples, chunk):
        w = weights[start : start + chunk]
        draws["f1"].append(_weighted_f1(y, pred, w))
        w = w[:, srt.order]
        draws["auroc"].append(_weighted_auroc(srt, w))
        draws["auprc"].append(_weighted_auprc(srt, w))
    return {
        name: _percentile_interval(point[name], np.concatenate(parts), confidence)
        for name, parts in draws.items()
    }


def _percentile_interval(point: float, values: np.ndarray, confidence: float) -> Interval:
    """The point estimate with the percentile interval of its resampled values; resamples
    where the metric is undefined (NaN) are left out."""
    values = values[~np.isnan(values)]
    if np.isnan(point) or len(values) == 0:
        return Interval(point, float("nan"), float("nan"))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high))


def paired_auroc_difference(
    y_true,
    score_a,
    score_b,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> Interval:
    """AUROC of ``score_a`` minus AUROC of ``score_b`` on the same rows, with a paired interval.

    Two models scored on the same patients share those patients' sampling noise. Setting one
    model's point estimate against the other's own interval counts that noise once and
    ignores that it moves both models together; each resample here draws the rows (or, with
    ``groups``, the patients) once and scores both models on that draw, so the interval is that
    of the gap itself. Resamples where AUROC is undefined are left out.
    """
    return recipe_auroc_difference(
        y_true,
        [score_a],
        [score_b],
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        stratified=stratified,
    )


def recipe_auroc_difference(
    y_true,
    seeds_a: Sequence[Sequence | np.ndarray],
    seeds_b: Sequence[Sequence | np.ndarray],
    *,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> Interval:
    """Mean AUROC over the seeds of recipe A minus that of recipe B, with an interval that holds
    the training seed's noise as well as the patients'.

    A paired interval between two trained models answers "is this model below that one"; it
    says nothing of another seed of either, and two seeds of one recipe on the 6,000-patient
    cohort differed beyond it in two pairs of six (BENCHMARKS.md, judging recipes over seeds).
    "Is multitask finetuning below single-task finetuning" is a question about the recipes.
    Each resample draws the patients once for every model (as :func:`paired_auroc_difference`
    does) and each recipe's seeds with replacement, and takes the gap of the two seed means.
    With one seed on each side this is exactly the paired interval. Every array of scores is
    aligned with ``y_true``.
    """
    y = np.asarray(y_true).astype(bool)
    scores = [[_arrays(y, s)[1] for s in side] for side in (seeds_a, seeds_b)]
    if not scores[0] or not scores[1]:
        raise ValueError("each recipe needs the scores of at least one seed")
    nan = float("nan")
    point = float(np.mean([auroc(y, s) for s in scores[0]])) - float(
        np.mean([auroc(y, s) for s in scores[1]])
    )
    if np.isnan(point) or n_resamples <= 0:
        return Interval(point, nan, nan)
    rng = np.random.default_rng(seed)
    weights = bootstrap_weights(y, n_resamples, rng, groups=groups, stratified=stratified)
    means = []
    for side in scores:
        per_seed = np.stack([_resampled_auroc(y, s, weights) for s in side])  # (seeds, B)
        picks = rng.integers(0, len(side), size=per_seed.shape)
        means.append(np.take_along_axis(per_seed, picks, axis=0).mean(axis=0))
    return _percentile_interval(point, means[0] - means[1], confidence)


def _resampled_auroc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC on each resample (row of ``weights``), chunked to bound memory."""
    srt = _Sorted.of(y, s)
    chunk = max(1, _MAX_CELLS // max(1, len(y)))
    return np.concatenate(
        [
            _weighted_auroc(srt, weights[start : start + chunk][:, srt.order])
            for start in range(0, len(weights), chunk)
        ]
    )


# ------------------------------------------------------------------------------------------------
# Subgroups
# ------------------------------------------------------------------------------------------------
def age_band_labels(edges: Sequence[float] = DEFAULT_AGE_BANDS) -> list[str]:
    """Readable names for the bands ``[e0, e1), [e1, e2), ..., [e_last, inf)``: "18-39", "65+"."""
    labels = []
    for i, low in enumerate(edges):
        if i + 1 < len(edges):
            labels.append(f"{low:g}-{edges[i + 1] - 1:g}" if low > 0 else f"<{edges[i + 1]:g}")
        else:
            labels.append(f"{low:g}+")
    return labels


def age_bands(age_years: pd.Series, edges: Sequence[float] = DEFAULT_AGE_BANDS) -> pd.Series:
    """The band of each age (years, fractional); NaN ages stay NaN."""
    bins = [*edges, np.inf]
    return pd.cut(age_years, bins=bins, right=False, labels=age_band_labels(edges)).astype("object")


def subgroup_auroc(
    frame: pd.DataFrame, by: str, *, label: str = "label", score: str = "score"
) -> pd.DataFrame:
    """AUROC within each value of column ``by`` (NaN where a group has one class only)."""
    rows = []
    for group, part in frame.dropna(subset=[by]).groupby(by, sort=True):
        y = part[label].to_numpy(bool)
        rows.append(
            {
                "group": str(group),
                "n": len(part),
                "n_positive": int(y.sum()),
                "auroc": auroc(y, part[score].to_numpy(float)),
            }
        )
    return pd.DataFrame(rows, columns=["group", "n", "n_positive", "auroc"])
