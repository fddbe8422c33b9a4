"""Which weights a finetuning run keeps: the best on the tuning split.

A fixed epoch count is right for some task mixes and wrong for others: on the 6,000-patient
cohort one epoch left MTF under-trained on hypertension, while two of six single-task models (one
task's 2,000 labels or fewer) were best after their first epoch (BENCHMARKS.md). Scoring
``tuning`` at the end of every epoch and keeping the best weights lets one setting serve both,
and leaves ``held_out`` untouched for the report. The same rule picks among whole runs started
from different seeds (``FinetuneConfig.restarts``), since one MTF seed can land far below
another; the tuning split often shows it, though not always (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch

from ehrmamba.evaluate.metrics import auroc


def task_aurocs(
    tasks: Sequence[str], labels: Sequence[float], scores: np.ndarray
) -> dict[str, float]:
    """Each task's AUROC, for the tasks that hold both classes (the others cannot rank)."""
    tasks_arr, labels_arr = np.asarray(tasks), np.asarray(labels)
    out: dict[str, float] = {}
    for task in np.unique(tasks_arr):
        rows = tasks_arr == task
        if math.isfinite(value := auroc(labels_arr[rows], scores[rows])):
            out[str(task)] = value
    return out


def mean_of(aurocs: dict[str, float]) -> float:
    """The mean of per-task AUROCs; NaN when no task could be ranked, so that selection falls
    back to the last candidate."""
    return float(np.mean(list(aurocs.values()))) if aurocs else math.nan


def describe_tasks(aurocs: dict[str, float]) -> str:
    """`` (task a 0.912, task b 0.850)`` for a progress line; empty for one task."""
    if len(aurocs) < 2:
        return ""
    return " (" + ", ".join(f"{t} {v:.3f}" for t, v in sorted(aurocs.items())) + ")"


def mean_task_auroc(tasks: Sequence[str], labels: Sequence[float], scores: np.ndarray) -> float:
    """The mean over tasks of each task's AUROC; tasks with one class only are left out."""
    return mean_of(task_aurocs(tasks, labels, scores))


class BestWeights:
    """Remembers the weights (and any payload, such as the tuning scores) of the best of a
    series of candidates: the epochs of one run, or the runs of several seeds.

    Ties keep the earlier candidate (fewer passes, or the first seed, at the same tuning score);
    a NaN score means the split cannot rank them, and then the latest one is kept.
    """

    def __init__(self) -> None:
        self.history: list[tuple[int, float]] = []
        self.index: int | None = None
        self.score = -math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.payload: object = None

    def offer(
        self, index: int, score: float, model: torch.nn.Module, payload: object = None
    ) -> bool:
        """Keep a copy of ``model``'s weights if ``score`` beats the best so far."""
        self.history.append((index, score))
        if self.state is not None and math.isfinite(score) and score <= self.score:
            return False
        self.index, self.score, self.payload = index, score, payload
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is None:
            raise RuntimeError("no weights have been offered; nothing to restore")
        model.load_state_dict(self.state)


class SelectEpochOnTuning(L.Callback):
    """Scores the tuning split at every epoch's end and keeps the best epoch's weights.

    ``score`` takes the model and returns (each task's tuning AUROC, the tuning scores); the
    epoch is judged on the mean over tasks, and the scores are kept with the best weights so
    the run need not score tuning again after training. Each task's AUROC is logged beside the
    mean (``epoch_tuning_auroc.<task>``): the mean can hide one task falling as another rises.
    """

    def __init__(
        self,
        score: Callable[[torch.nn.Module], tuple[dict[str, float], np.ndarray]],
        *,
        log: Callable[[str], None] | None = None,
        label: str = "finetuning",
    ) -> None:
        self.score = score
        self.best = BestWeights()
        self.epochs: list[dict] = []  # each epoch's mean and per-task tuning AUROC
        self._log = log
        self.label = label

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        was_training = model.training
        per_task, scores = self.score(model)
        model.train(was_training)
        auroc = mean_of(per_task)
        epoch = trainer.current_epoch
        kept = self.best.offer(epoch, auroc, model, (per_task, scores))
        if trainer.logger is not None and math.isfinite(auroc):
            trainer.logger.log_metrics(
                {
                    "epoch_tuning_auroc_mean": auroc,
                    **{f"epoch_tuning_auroc.{t}": v for t, v in per_task.items()},
                },
                step=epoch,
            )
        self.epochs.append({"epoch": epoch, "tuning_auroc_mean": auroc, "tuning_auroc": per_task})
        if self._log:
            note = " (best so far, kept)" if kept else f" (epoch {self.best.index} stays best)"
            self._log(
                f"{self.label}: epoch {epoch} tuning mean AUROC {auroc:.4f}{note}"
                + describe_tasks(per_task)
            )
