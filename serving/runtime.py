"""What the model service does, without BentoML: records in, risks / forecasts / explanations out.

A served model is one directory (the BentoML model's files): ``finetuned/`` (a
:class:`ehrmamba.finetune.bundle.FinetunedModel`: weights, vocabulary, task settings) and
``event_chain/`` (the compiled FHIR-to-MEDS models, :mod:`ehrmamba.fhir.event_chain`). Events go
through the training tokenizer (``encode_events`` / ``SubjectLayout``) and
``FinetunedModel.predict_layout``, exactly as ``FinetunedModel.predict_events`` does.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ehrmamba.fhir.event_chain import EventChain, EventEngine, RecordEvents
from ehrmamba.fhir.request_bundle import PatientRecord, RecordProblem
from ehrmamba.finetune.bundle import FinetunedModel
from ehrmamba.tokenize import SubjectLayout, encode_events
from ehrmamba.tokenize.sequences import _to_ns
from serving import model_api

BENTO_MODEL_NAME = "ehrmamba"  # the BentoML model a build imports the champion as
MODEL_TAG_ENV = "EHRMAMBA_BENTO_MODEL"  # the tag the service loads, default "ehrmamba:latest"
MODEL_DIR_ENV = "EHRMAMBA_MODEL_DIR"  # development: serve a directory, skip the model store
MODEL_SUBDIR = "finetuned"
CHAIN_SUBDIR = "event_chain"
INFO_FILE = "serving.json"  # registry provenance written by the build
_VISIT_PREFIXES = ("VISIT/", "VISIT_END/")


@dataclass
class Scored:
    """One patient's risks, and what they were computed from."""

    patient_id: str
    risks: dict[str, float]
    prediction_time: datetime  # the cut used (the last event's time when none was asked)
    n_events: int
    n_tokens: int
    truncated: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """A record's tokens, ready for the model (internal to the runtime)."""

    patient_id: str
    layout: SubjectLayout
    cut_ns: int | None
    prediction_time: datetime
    n_events: int
    n_tokens: int
    truncated: bool
    warnings: list[str]


def _utc(ts: datetime | None) -> datetime | None:
    """Event times are naive UTC (as in the warehouse); an aware time is converted."""
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


class ModelRuntime:
    """A loaded model with its event chain; thread-safe (one event engine per concurrent call)."""

    def __init__(
        self,
        model: FinetunedModel,
        chain: EventChain,
        *,
        engines: int = 2,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.chain = chain
        self.info = dict(info or {})
        self._engines: queue.Queue[EventEngine] = queue.Queue()
        for _ in range(engines):
            self._engines.put(EventEngine(chain))

    @classmethod
    def load(cls, directory: Path | str, *, engines: int = 2) -> ModelRuntime:
        directory = Path(directory)
        info_path = directory / INFO_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return cls(
            FinetunedModel.load(directory / MODEL_SUBDIR),
            EventChain.load(directory / CHAIN_SUBDIR),
            engines=engines,
            info=info,
        )

    @staticmethod
    def save(model_dir: Path | str, chain: EventChain, out: Path | str, info: dict) -> Path:
        """Lay out a servable directory from a FinetunedModel directory and a chain."""
        out = Path(out)
        FinetunedModel.load(model_dir).save(out / MODEL_SUBDIR)
        chain.save(out / CHAIN_SUBDIR)
        (out / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))
        return out

    # ------------------------------------------------------------------ description
    @property
    def version(self) -> str:
        """The registered model version when known, else the run that made the weights."""
        return str(self.info.get("model_version") or self.model.settings.version or "unversioned")

    def describe(self) -> dict[str, Any]:
        return {
            **self.info,
            "version": self.version,
            "tasks": self.model.tasks,
            "thresholds": dict(self.model.settings.thresholds),
            "max_len": self.model.settings.max_len,
            "vocabulary_version": self.model.vocab.version,
            "event_chain_version": self.chain.version,
        }

    # ------------------------------------------------------------------ records -> events
    @contextmanager
    def _engine(self) -> Iterator[EventEngine]:
        engine = self._engines.get()
        try:
            yield engine
        finally:
            self._engines.put(engine)

    def events(self, records: Sequence[PatientRecord]) -> list[RecordEvents | RecordProblem]:
        with self._engine() as engine:
            return engine.events(records)

    def prepare(
        self,
        records: Sequence[RecordEvents],
        *,
        prediction_times: Sequence[datetime | None] | None = None,
        truncate: Sequence[bool] | None = None,
    ) -> list[Prepared | RecordProblem]:
        """Tokens of each record's events, or the :class:`RecordProblem` that stops it (no
        events, only codes the model never saw, longer than its context).

        The batch is encoded in ONE ``encode_events`` call (as the training writers do), each
        record under its own position as subject key, so two records of one patient stay apart.
        """
        n = len(records)
        prediction_times = prediction_times or [None] * n
        truncate = truncate or [False] * n
        vocab = self.model.vocab
        frames = [r.events.assign(subject_id=i) for i, r in enumerate(records) if len(r.events)]
        enc = encode_events(pd.concat(frames, ignore_index=True), vocab) if frames else None
        sid = enc["subject_id"].to_numpy() if enc is not None else np.zeros(0, dtype=np.int64)
        starts = np.searchsorted(sid, np.arange(n), side="left")
        stops = np.searchsorted(sid, np.arange(n), side="right")
        out: list[Prepared | RecordProblem] = []
        for i, record in enumerate(records):
            try:
                if starts[i] == stops[i]:
                    raise RecordProblem(
                        "the record yields no dated events (no birthDate and no dated clinical "
                        "resources)",
                        code="required",
                    )
                out.append(
                    self._prepare_one(
                        record,
                        enc.iloc[starts[i] : stops[i]],  # type: ignore[union-attr]
                        prediction_times[i],
                        truncate[i],
                    )
                )
            except RecordProblem as problem:
                out.append(problem)
        return out

    def _prepare_one(
        self,
        record: RecordEvents,
        enc: pd.DataFrame,
        prediction_time: datetime | None,
        truncate: bool,
    ) -> Prepared:
        vocab = self.model.vocab
        cut_ns = _to_ns(_utc(prediction_time)) if prediction_time is not None else None
        clinical = (
            ~enc["static"].to_numpy() & ~enc["code"].str.startswith(_VISIT_PREFIXES).to_numpy()
        )
        unknown = clinical & (enc["tok"].to_numpy() == vocab.unk_id)
        warnings = list(record.warnings)
        if clinical.any() and unknown[clinical].all():
            raise RecordProblem(
                f"none of the record's {int(clinical.sum())} coded events is in the model's "
                f"vocabulary (version {vocab.version}); the model cannot read this record",
                code="code-invalid",
            )
        if unknown.any():
            warnings.append(
                f"{int(unknown.sum())} of {int(clinical.sum())} coded events are not in the "
                "model's vocabulary and are read as [UNK]"
            )
        layout = SubjectLayout.build(enc, vocab, None)
        visible = len(layout.tok) if cut_ns is None else int((layout.t <= cut_ns).sum())
        room = self.model.history_room
        if visible > room and not truncate:
            raise RecordProblem(
                f"the record is {visible} tokens long and the model reads at most {room} "
                "(its context); send a shorter record, or ask for the most recent part with "
                "truncate=true",
                code="too-long",
            )
        if visible > room:
            warnings.append(f"the record was cut to its most recent {room} of {visible} tokens")
        used = prediction_time or pd.Timestamp(int(layout.t.max())).to_pydatetime()
        return Prepared(
            patient_id=record.patient_id,
            layout=layout,
            cut_ns=cut_ns,
            prediction_time=_utc(used).replace(tzinfo=UTC),
            n_events=len(record.events),
            n_tokens=min(visible, room),
            truncated=visible > room,
            warnings=warnings,
        )

    # ------------------------------------------------------------------ model calls
    def predict(self, prepared: Prepared, tasks: Sequence[str] | None = None) -> Scored:
        cut = None if prepared.cut_ns is None else pd.Timestamp(prepared.cut_ns).to_pydatetime()
        risks = self.model.predict_layout(prepared.layout, prediction_time=cut, tasks=tasks)
        return Scored(
            patient_id=prepared.patient_id,
            risks=risks,
            prediction_time=prepared.prediction_time,
            n_events=prepared.n_events,
            n_tokens=prepared.n_tokens,
            truncated=prepared.truncated,
            warnings=prepared.warnings,
        )

    def check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        tasks = list(tasks or self.model.tasks)
        unknown = sorted(set(tasks) - set(self.model.tasks))
        if unknown:
            raise RecordProblem(
                f"unknown task(s) {unknown}; this model predicts {self.model.tasks}",
                status=400,
                code="not-supported",
                expression="tasks",
            )
        return tasks

    def score(
        self,
        records: Sequence[PatientRecord],
        *,
        prediction_times: Sequence[datetime | None] | None = None,
        tasks: Sequence[Sequence[str] | None] | None = None,
        truncate: Sequence[bool] | None = None,
    ) -> list[Scored | RecordProblem]:
        """Risks for a batch of records: one event-chain run for all, then one scan each."""
        n = len(records)
        prediction_times = prediction_times or [None] * n
        tasks = tasks or [None] * n
        truncate = truncate or [False] * n
        events: list[RecordEvents | RecordProblem] = []
        wanted: list[list[str]] = []
        for i, result in enumerate(self.events(records)):
            try:  # a bad parameter is the first thing to say
                wanted.append(self.check_tasks(tasks[i]))
            except RecordProblem as problem:
                wanted.append([])
                result = problem
            events.append(result)
        usable = [i for i, e in enumerate(events) if not isinstance(e, RecordProblem)]
        prepared = self.prepare(
            [events[i] for i in usable],  # type: ignore[misc]
            prediction_times=[prediction_times[i] for i in usable],
            truncate=[truncate[i] for i in usable],
        )
        out: list[Scored | RecordProblem] = list(events)  # type: ignore[arg-type]
        for i, p in zip(usable, prepared, strict=True):
            out[i] = p if isinstance(p, RecordProblem) else self.predict(p, wanted[i])
        return out

    def prepare_one(
        self, record: PatientRecord, *, prediction_time: datetime | None, truncate: bool
    ) -> Prepared:
        (result,) = self.events([record])
        if isinstance(result, RecordProblem):
            raise result
        (prepared,) = self.prepare(
            [result], prediction_times=[prediction_time], truncate=[truncate]
        )
        if isinstance(prepared, RecordProblem):
            raise prepared
        return prepared

    def forecast(self, prepared: Prepared, **options: Any) -> dict[str, Any]:
        """Sampled futures after the cut (see :func:`serving.model_api.forecast`), as JSON."""
        result = model_api.forecast(self.model, prepared.layout, cut_ns=prepared.cut_ns, **options)
        cut = prepared.cut_ns if prepared.cut_ns is not None else int(prepared.layout.t.max())
        return model_api.forecast_json(result, cut)

    def explain(
        self,
        prepared: Prepared,
        *,
        tasks: Sequence[str] | None = None,
        top_k: int = 10,
        steps: int = 16,
    ) -> dict[str, list[model_api.Contribution]]:
        return model_api.explain(
            self.model,
            prepared.layout,
            tasks=self.check_tasks(tasks),
            cut_ns=prepared.cut_ns,
            top_k=top_k,
            steps=steps,
        )


def iso(ts: datetime | np.datetime64 | pd.Timestamp) -> str:
    """FHIR instant (UTC, seconds)."""
    value = pd.Timestamp(ts)
    if value.tzinfo is None:
        value = value.tz_localize("UTC")
    return value.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
