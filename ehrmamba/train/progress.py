"""Training progress as log lines, for runs whose output is a log rather than a terminal.

Inside Dagster a tqdm bar is either invisible (the UI shows the run's log events, not stderr) or
hundreds of carriage-return frames in a file. A line every few steps with the loss, the pace and
the time left reads well in both places.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import lightning as L


class LogProgress(L.Callback):
    """Calls ``log`` with ``step k/N (p%) loss x, s/step, ~t left`` about ``lines`` times a run."""

    def __init__(self, log: Callable[[str], None], *, label: str = "training", lines: int = 10):
        self._emit = log
        self.label = label
        self.lines = max(1, lines)
        self._started = 0.0
        self._every = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        self._every = max(1, math.ceil(total / self.lines)) if math.isfinite(total) else 50
        self._started = time.monotonic()
        self._emit(f"{self.label}: {total if math.isfinite(total) else '?'} steps")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        total = trainer.estimated_stepping_batches
        if step == 0 or (step % self._every and step != total):
            return
        elapsed = time.monotonic() - self._started
        per_step = elapsed / step
        loss = trainer.callback_metrics.get("train_loss")
        parts = [f"{self.label}: step {step}/{total} ({100 * step / total:.0f}%)"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{per_step:.2f} s/step")
        if step < total:
            parts.append(f"~{_duration((total - step) * per_step)} left")
        self._emit(", ".join(parts))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
