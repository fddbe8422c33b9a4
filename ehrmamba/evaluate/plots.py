"""ROC curves and reliability diagrams per task, every model overlaid on one figure.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting from a Dagster
worker or a test never needs a display and never touches global backend state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve


def plot_name(kind: str, task: str) -> str:
    """The file name of a task's plot (``kind``: ``roc`` or ``reliability``)."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', task)}.png"


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(5.0, 5.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_roc(
    task: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path
) -> Path | None:
    """ROC curves of ``{model: (labels, scores)}`` on one task; None when no model has both
    classes (no curve to draw)."""
    fig, ax = _figure()
    drawn = 0
    for model, (y, s) in curves.items():
        y = np.asarray(y, dtype=bool)
        if not (y.any() and (~y).any()):
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{model} (AUROC {roc_auc_score(y, s):.3f})", linewidth=1.5)
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(f"ROC: {task} (held_out)")
    ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_reliability(task: str, bins: Mapping[str, pd.DataFrame], path: Path) -> Path | None:
    """Observed positive rate against mean predicted risk per bin, for each model; None when
    no model has a filled bin."""
    fig, ax = _figure()
    drawn = 0
    for model, frame in bins.items():
        filled = frame[frame["count"] > 0]
        if filled.empty:
            continue
        ax.plot(filled["mean_score"], filled["fraction_positive"], marker="o", label=model, lw=1.5)
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Mean predicted risk", ylabel="Observed rate")
    ax.set_title(f"Reliability: {task} (held_out)")
    ax.legend(loc="upper left", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
