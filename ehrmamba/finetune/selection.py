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


def mean_task_auroc(tasks: Sequence[str], labels: Sequence[float], scores: np.ndarray) -> float:
    """The mean over tasks of each task's AUROC; tasks with one class only are left out.

    NaN when no task has both classes, so that selection falls back to the last epoch.
    """
    tasks_arr, labels_arr = np.asarray(tasks), np.asarray(labels)
    rows = [tasks_arr == t for t in np.unique(tasks_arr)]
    ranked = [a for r in rows if math.isfinite(a := auroc(labels_arr[r], scores[r]))]
    return float(np.mean(ranked)) if ranked else math.nan


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

    ``score`` takes the model and returns (mean tuning AUROC, the tuning scores); the scores are
    kept with the best weights so the run need not score tuning again after training.
    """

    def __init__(
        self,
        score: Callable[[torch.nn.Module], tuple[float, np.ndarray]],
        *,
        log: Callable[[str], None] | None = None,
        label: str = "finetuning",
    ) -> None:
        self.score = score
        self.best = BestWeights()
        self._log = log
        self.label = label

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        was_training = model.training
        auroc, scores = self.score(model)
        model.train(was_training)
        epoch = trainer.current_epoch
        kept = self.best.offer(epoch, auroc, model, scores)
        if trainer.logger is not None and math.isfinite(auroc):
            trainer.logger.log_metrics({"epoch_tuning_auroc_mean": auroc}, step=epoch)
        if self._log:
            note = " (best so far, kept)" if kept else f" (epoch {self.best.index} stays best)"
            self._log(f"{self.label}: epoch {epoch} tuning mean AUROC {auroc:.4f}{note}")
