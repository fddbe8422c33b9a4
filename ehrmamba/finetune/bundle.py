"""A finetuned model as one directory: weights, config, vocabulary and task settings.

This is the unit everything downstream handles: evaluation reads it, the registry logs it,
serving loads it. Predicting for one patient goes through the same tokenizer as training
(:func:`ehrmamba.tokenize.tokenize_events`), so there is no second FHIR-to-tokens path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ehrmamba.model import EHRMambaForMultitask
from ehrmamba.tokenize import FEATURES, TORCH_DTYPES, Vocabulary, sequence_tensors
from ehrmamba.tokenize.sequences import SubjectLayout, _to_ns, encode_events

BUNDLE_FORMAT = "ehrmamba.finetuned/1"
MODEL_SUBDIR = "model"
VOCAB_NAME = "vocabulary.json"
SETTINGS_NAME = "finetuned.json"


@dataclass
class FinetuneSettings:
    """What a prediction needs besides the weights (saved beside them)."""

    tasks: list[str]
    max_len: int
    task_token_position: str = "end"
    thresholds: dict[str, float] = field(default_factory=dict)  # chosen on tuning, per task
    version: str = ""  # e.g. the MLflow run id that produced the weights
    format: str = BUNDLE_FORMAT


@dataclass
class PatientPrediction:
    """One patient's risks at one prediction time."""

    prediction_time: datetime | None  # None: after the last event
    risks: dict[str, float]  # task -> probability
    n_tokens: int  # history tokens the model read (after truncation)
    n_events: int
    truncated: bool  # the history was longer than the model's context


@dataclass
class FinetunedModel:
    model: EHRMambaForMultitask
    vocab: Vocabulary
    settings: FinetuneSettings

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / MODEL_SUBDIR)
        self.vocab.save(directory / VOCAB_NAME)
        (directory / SETTINGS_NAME).write_text(json.dumps(asdict(self.settings), indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path | str, map_location: str = "cpu") -> FinetunedModel:
        directory = Path(directory)
        settings_path = directory / SETTINGS_NAME
        if not settings_path.exists():
            raise FileNotFoundError(
                f"{directory} is not a finetuned EHRMamba model (no {SETTINGS_NAME})"
            )
        values = json.loads(settings_path.read_text())
        if values.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{settings_path}: unsupported format {values.get('format')!r}")
        model = EHRMambaForMultitask.from_pretrained(directory / MODEL_SUBDIR, map_location)
        model.eval()
        return cls(model, Vocabulary.load(directory / VOCAB_NAME), FinetuneSettings(**values))

    # ------------------------------------------------------------------ prediction
    @property
    def tasks(self) -> list[str]:
        return list(self.settings.tasks)

    @property
    def history_room(self) -> int:
        """How many tokens of the record (its [CLS] included) fit beside the task prompt."""
        return self.settings.max_len - self.vocab.config.task_token_repeats

    def _check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        tasks = list(tasks or self.settings.tasks)
        unknown = sorted(set(tasks) - set(self.settings.tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model knows {self.settings.tasks}")
        return tasks

    @torch.no_grad()
    def predict_layout(
        self,
        layout: SubjectLayout,
        *,
        prediction_time: datetime | None = None,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """Risk per task for one patient's token layout, cut at ``prediction_time``.

        With the task token at the end, the history is scanned once and each task costs one
        recurrent step from the shared state (equal to a full forward per task).
        """
        tasks = self._check_tasks(tasks)
        cut = _to_ns(prediction_time) if prediction_time is not None else None
        seqs = [
            layout.sequence(
                self.vocab,
                cut=cut,
                task=task,
                max_len=self.settings.max_len,
                task_token_position=self.settings.task_token_position,
            )
            for task in tasks
        ]
        self.model.eval()
        if self.settings.task_token_position == "end":
            n = len(seqs[0]["input_ids"])
            prompt = n - self.vocab.config.task_token_repeats
            history = sequence_tensors(seqs[0], slice(0, prompt))
            task_inputs = {
                k: torch.as_tensor(
                    np.array([s[k][prompt:] for s in seqs]), dtype=TORCH_DTYPES[k]
                ).unsqueeze(0)
                for k in FEATURES
            }
            logits = self.model.predict_tasks(history, task_inputs)[0]
        else:  # task token first: every task needs its own scan
            batch = {k: torch.cat([sequence_tensors(s)[k] for s in seqs]) for k in FEATURES}
            logits = self.model(**batch).logits
        probs = torch.sigmoid(logits.float()).tolist()
        return dict(zip(tasks, probs, strict=True))

    def predict_events(
        self,
        events: pd.DataFrame,
        *,
        prediction_time: datetime | None = None,
        birth_time: datetime | None = None,
        tasks: Sequence[str] | None = None,
    ) -> PatientPrediction:
        """Risks for ONE patient's MEDS events (as the event table holds them)."""
        enc = encode_events(events, self.vocab)
        if enc["subject_id"].nunique() > 1:
            raise ValueError("predict_events takes one patient's events")
        layout = SubjectLayout.build(enc, self.vocab, _to_ns(birth_time) if birth_time else None)
        risks = self.predict_layout(layout, prediction_time=prediction_time, tasks=tasks)
        cut = _to_ns(prediction_time) if prediction_time is not None else None
        visible = len(layout.tok) if cut is None else int((layout.t <= cut).sum())
        return PatientPrediction(
            prediction_time=prediction_time,
            risks=risks,
            n_tokens=min(visible, self.history_room),
            n_events=len(events),
            truncated=visible > self.history_room,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.settings.version,
            "tasks": self.tasks,
            "max_len": self.settings.max_len,
            "task_token_position": self.settings.task_token_position,
            "vocabulary_version": self.vocab.version,
            "vocabulary_size": len(self.vocab.tokens),
            "model": self.model.config.to_dict(),
        }
