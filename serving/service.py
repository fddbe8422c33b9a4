"""The BentoML service: FHIR in, FHIR out, built from the registered champion model.

Two services, the pattern BentoML uses for adaptive batching behind a custom HTTP front:

- ``EHRMambaService`` (the entry point): the FHIR and CDS Hooks routes (FastAPI, mounted on the
  service). It reads and checks each client Bundle (:mod:`ehrmamba.fhir.request_bundle`), answers
  every unusable input with a 4xx ``OperationOutcome``, and shapes the answers as JSON, FHIR
  ``RiskAssessment`` Bundles and CDS cards (:mod:`serving.fhir_io`). Bearer tokens and the body
  limit are checked before any route runs (:mod:`serving.security`).
- ``EHRMambaModel``: the model and its event chain (one BentoML model). ``score`` is batchable:
  BentoML's adaptive batcher gathers concurrent /predict calls, and one event-chain query and one
  history scan per patient serve the whole batch (:mod:`serving.runtime`).

Nothing here logs a record's content: BentoML's access log holds method, path, sizes, status
and latency; problems go back to the client only.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

# Each model worker process runs one batch at a time (BentoML's dispatcher keeps one batch in
# flight) on one core; the cores are used by running MODEL_WORKERS such processes, not by
# intra-op threads, which only fight for the same cores. Set before numba is first imported
# (ehrmamba.model); an explicit environment value wins.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import aiohttp
import anyio
import bentoml
import numpy as np
import pyarrow as pa
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ehrmamba.fhir.parse import STAGE_SCHEMA
from ehrmamba.fhir.request_bundle import PatientRecord, RecordProblem, read_patient_bundle
from serving import fhir_io
from serving.runtime import (
    BENTO_MODEL_NAME,
    MODEL_DIR_ENV,
    MODEL_TAG_ENV,
    ModelRuntime,
    Scored,
)
from serving.security import GuardMiddleware

logger = logging.getLogger("ehrmamba.serving")

MAX_BATCH_ENV = "EHRMAMBA_SERVE_MAX_BATCH"
TORCH_THREADS_ENV = "EHRMAMBA_SERVE_TORCH_THREADS"
MODEL_WORKERS_ENV = "EHRMAMBA_SERVE_MODEL_WORKERS"
MODEL_WORKERS = int(os.environ.get(MODEL_WORKERS_ENV) or 2)  # processes: one per core
MODEL_THREADS = 2  # concurrent calls per process (a batch and an explanation); one engine each
JSON_TYPES = ("application/json", "application/fhir+json")
_WARMUP_PATIENT = '{"resourceType":"Patient","id":"warmup","birthDate":"1970-01-01"}'


# ---------------------------------------------------------------------- the model service's I/O
class RecordIn(BaseModel):
    """One checked record on its way to the model service (Arrow IPC of the resources)."""

    record: bytes
    patient_id: str
    warnings: list[str] = Field(default_factory=list)
    prediction_time: datetime | None = None
    truncate: bool = False

    @classmethod
    def of(cls, record: PatientRecord, options: dict[str, Any], **extra: Any) -> Any:
        return cls(
            record=record.to_ipc(),
            patient_id=record.patient_id,
            warnings=record.warnings,
            **options,
            **extra,
        )

    def patient_record(self) -> PatientRecord:
        resources = PatientRecord.resources_from_ipc(self.record)
        return PatientRecord(self.patient_id, resources, warnings=list(self.warnings))


class ScoreIn(RecordIn):
    tasks: list[str] | None = None


class ForecastIn(RecordIn):
    samples: int = 8
    max_new_tokens: int = 64
    horizon_days: float = 365.0
    seed: int = 0


class ExplainIn(RecordIn):
    tasks: list[str] | None = None
    top_k: int = 10
    steps: int = 16


class Problem(BaseModel):
    status: int
    code: str
    message: str
    expression: str | None = None

    @classmethod
    def of(cls, problem: RecordProblem) -> Problem:
        return cls(
            status=problem.status,
            code=problem.code,
            message=problem.message,
            expression=problem.expression,
        )


class ScoreOut(BaseModel):
    problem: Problem | None = None
    patient_id: str = ""
    risks: dict[str, float] = Field(default_factory=dict)
    prediction_time: datetime | None = None
    n_events: int = 0
    n_tokens: int = 0
    truncated: bool = False
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, result: Scored | RecordProblem) -> ScoreOut:
        if isinstance(result, RecordProblem):
            return cls(problem=Problem.of(result))
        return cls(**vars(result))

    def scored(self) -> Scored:
        return Scored(**self.model_dump(exclude={"problem"}))


class ForecastOut(BaseModel):
    problem: Problem | None = None
    patient_id: str = ""
    prediction_time: datetime | None = None
    forecast: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class ExplainOut(BaseModel):
    problem: Problem | None = None
    score: ScoreOut | None = None
    drivers: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


def _iso(value: np.datetime64) -> str:
    return fhir_io.iso(value)


def _jsonable(value: Any) -> Any:
    """Times as FHIR instants, containers walked; everything else as is."""
    if isinstance(value, np.datetime64):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@bentoml.service(
    name="ehrmamba-model",
    workers=MODEL_WORKERS,
    threads=MODEL_THREADS,
    traffic={"timeout": 600},
)
class EHRMambaModel:
    """The champion model and its compiled FHIR-to-events chain, as one BentoML model."""

    if not os.environ.get(MODEL_DIR_ENV):  # a development directory needs no store entry
        bento_model = bentoml.models.BentoModel(
            os.environ.get(MODEL_TAG_ENV, f"{BENTO_MODEL_NAME}:latest")
        )

    def __init__(self) -> None:
        torch.set_num_threads(int(os.environ.get(TORCH_THREADS_ENV) or 1))
        path = os.environ.get(MODEL_DIR_ENV) or self.bento_model.path
        self.runtime = ModelRuntime.load(path, engines=MODEL_THREADS)
        logger.info("loaded model version %s", self.runtime.version)
        self._ready = False

    def __is_ready__(self) -> bool:
        if not self._ready:
            self._warm()
            self._ready = True
        return True

    def _warm(self) -> None:
        """One tiny prediction (a Patient with a birth date), so the first client does not pay
        numba's and DuckDB's warm-up; an error here is a broken model and fails readiness."""
        table = pa.table(
            [["request"], ["entry[0]"], [1], [None], ["Patient"], [_WARMUP_PATIENT]],
            schema=STAGE_SCHEMA,
        )
        (result,) = self.runtime.score([PatientRecord("warmup", table)], truncate=[True])
        if isinstance(result, RecordProblem):
            raise RuntimeError(f"the warm-up record was refused: {result.message}")

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get(MAX_BATCH_ENV) or 16),
        max_latency_ms=60_000,
    )
    def score(self, items: list[ScoreIn]) -> list[ScoreOut]:
        """Risks for a batch of records (BentoML gathers concurrent requests into it)."""
        results = self.runtime.score(
            [item.patient_record() for item in items],
            prediction_times=[item.prediction_time for item in items],
            tasks=[item.tasks for item in items],
            truncate=[item.truncate for item in items],
        )
        return [ScoreOut.of(r) for r in results]

    @bentoml.api
    def forecast(self, item: ForecastIn) -> ForecastOut:
        try:
            prepared = self.runtime.prepare_one(
                item.patient_record(), prediction_time=item.prediction_time, truncate=item.truncate
            )
            result = self.runtime.forecast(
                prepared,
                samples=item.samples,
                max_new_tokens=item.max_new_tokens,
                horizon_days=item.horizon_days,
                seed=item.seed,
            )
        except RecordProblem as problem:
            return ForecastOut(problem=Problem.of(problem))
        return ForecastOut(
            patient_id=prepared.patient_id,
            prediction_time=prepared.prediction_time,
            forecast=_jsonable(result),
            warnings=prepared.warnings,
        )

    @bentoml.api
    def explain(self, item: ExplainIn) -> ExplainOut:
        try:
            tasks = self.runtime.check_tasks(item.tasks)
            prepared = self.runtime.prepare_one(
                item.patient_record(), prediction_time=item.prediction_time, truncate=item.truncate
            )
            scored = self.runtime.predict(prepared, tasks)
            drivers = self.runtime.explain(
                prepared, tasks=tasks, top_k=item.top_k, steps=item.steps
            )
        except RecordProblem as problem:
            return ExplainOut(problem=Problem.of(problem))
        return ExplainOut(
            score=ScoreOut.of(scored),
            drivers={
                task: [
                    {
                        "code": c.code,
                        "time": _iso(c.time),
                        "attribution": c.attribution,
                        "tokens": c.tokens,
                    }
                    for c in contributions
                ]
                for task, contributions in drivers.items()
            },
        )

    @bentoml.api
    def describe(self) -> dict[str, Any]:
        return self.runtime.describe()


# ---------------------------------------------------------------------- the FHIR front
app = FastAPI(
    title="EHRMamba",
    description="Risks, forecasts and explanations from one patient's FHIR record.",
    version="1",
    docs_url=None,
    redoc_url=None,
)

_BUNDLE_SCHEMA = {
    "type": "object",
    "description": "One patient's record: a FHIR R4 Bundle (collection, transaction, batch, or "
    "the searchset of Patient/$everything) holding exactly one Patient.",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string"},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"fullUrl": {"type": "string"}, "resource": {"type": "object"}},
            },
        },
    },
}
_OUTCOME_SCHEMA = {
    "type": "object",
    "description": "A FHIR OperationOutcome naming the problem.",
    "properties": {"resourceType": {"enum": ["OperationOutcome"]}, "issue": {"type": "array"}},
}
_BUNDLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": _BUNDLE_SCHEMA},
            "application/json": {"schema": _BUNDLE_SCHEMA},
        },
    }
}
_CDS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["hook", "hookInstance", "context"],
                    "properties": {
                        "hook": {"type": "string"},
                        "hookInstance": {"type": "string"},
                        "context": {"type": "object"},
                        "prefetch": {"type": "object"},
                    },
                }
            }
        },
    }
}
_ERRORS = {
    status: {
        "description": text,
        "content": {"application/fhir+json": {"schema": _OUTCOME_SCHEMA}},
    }
    for status, text in {
        400: "Not JSON, not a Bundle, or a bad parameter",
        401: "No or wrong bearer token",
        404: "No such CDS service",
        413: "Body larger than the limit",
        415: "Not JSON",
        422: "A Bundle the model cannot score (no or several patients, unknown codes only, "
        "longer than the model's context)",
    }.items()
}


def _outcome_response(status: int, issues: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(
        fhir_io.operation_outcome(issues), status_code=status, media_type=fhir_io.FHIR_JSON
    )


def _problem_response(problem: RecordProblem | Problem) -> JSONResponse:
    return _outcome_response(
        problem.status,
        [fhir_io.issue(problem.message, code=problem.code, expression=problem.expression)],
    )


@app.exception_handler(RecordProblem)
async def _record_problem(_: Request, exc: RecordProblem) -> JSONResponse:
    return _problem_response(exc)


@app.exception_handler(RequestValidationError)
async def _bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
    issues = [
        fhir_io.issue(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}",
            code="value",
            expression=str(e.get("loc", ("",))[-1]),
        )
        for e in exc.errors()
    ]
    return _outcome_response(400, issues)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    return _outcome_response(exc.status_code, [fhir_io.issue(str(exc.detail), code=code)])


def _options(prediction_time: str | None, truncate: bool) -> dict[str, Any]:
    when = None
    if prediction_time:
        try:
            when = datetime.fromisoformat(prediction_time)
        except ValueError:
            raise RecordProblem(
                f"prediction_time {prediction_time[:40]!r} is not an ISO 8601 date-time",
                status=400,
                code="value",
                expression="prediction_time",
            ) from None
    return {"prediction_time": when, "truncate": truncate}


def _tasks(tasks: str | None) -> list[str] | None:
    if not tasks:
        return None
    return [t.strip() for t in tasks.split(",") if t.strip()] or None


async def _read(request: Request) -> PatientRecord:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media and media not in JSON_TYPES:
        raise RecordProblem(
            f"content type {media[:60]!r} is not supported; send application/fhir+json",
            status=415,
            code="not-supported",
        )
    body = await request.body()
    return await anyio.to_thread.run_sync(read_patient_bundle, body)


def _wants_fhir(request: Request) -> bool:
    return fhir_io.FHIR_JSON in request.headers.get("accept", "")


@bentoml.service(name="ehrmamba", workers=1, traffic={"timeout": 600})
@bentoml.asgi_app(app, path="/")
class EHRMambaService:
    """FHIR and CDS Hooks routes; the model runs in :class:`EHRMambaModel`."""

    model = bentoml.depends(EHRMambaModel)

    def __init__(self) -> None:
        self._info: dict[str, Any] | None = None

    async def _call(self, method: str, *args: Any) -> Any:
        """Call the model service; retry when a pooled connection was closed under us (the
        calls have no side effects, and a long batch can outlive a keep-alive timeout)."""
        for attempt in range(3):
            try:
                return await getattr(self.model.to_async, method)(*args)
            except aiohttp.ClientConnectionError:
                if attempt == 2:
                    raise

    async def _model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self._call("describe")
        return self._info

    async def _score(self, item: ScoreIn) -> Scored:
        (out,) = await self._call("score", [item])
        out = ScoreOut.model_validate(out)
        if out.problem is not None:
            raise RecordProblem(
                out.problem.message,
                status=out.problem.status,
                code=out.problem.code,
                expression=out.problem.expression,
            )
        return out.scored()

    @app.post("/predict", openapi_extra=_BUNDLE_BODY, responses=_ERRORS)
    async def predict(
        self,
        request: Request,
        prediction_time: str | None = Query(
            None, description="Cut the record here (ISO 8601); default: its last event."
        ),
        tasks: str | None = Query(None, description="Comma-separated tasks; default: all."),
        truncate: bool = Query(
            False, description="Score a record longer than the context by its recent part."
        ),
    ) -> JSONResponse:
        """Risk per task for one patient's Bundle: JSON, or with ``Accept: application/fhir+json``
        a FHIR Bundle of RiskAssessment."""
        record = await _read(request)
        item = ScoreIn.of(record, _options(prediction_time, truncate), tasks=_tasks(tasks))
        scored = await self._score(item)
        info = await self._model_info()
        thresholds = info.get("thresholds", {})
        if _wants_fhir(request):
            bundle = fhir_io.risk_bundle(
                scored, model_version=info["version"], thresholds=thresholds
            )
            return JSONResponse(bundle, media_type=fhir_io.FHIR_JSON)
        model = {"name": BENTO_MODEL_NAME, "version": info["version"]}
        model.update({k: info[k] for k in ("run_id", "registered_model") if k in info})
        return JSONResponse(fhir_io.prediction_json(scored, model=model, thresholds=thresholds))

    @app.post("/forecast", openapi_extra=_BUNDLE_BODY, responses=_ERRORS)
    async def forecast(
        self,
        request: Request,
        prediction_time: str | None = Query(None),
        truncate: bool = Query(False),
        samples: int = Query(8, ge=1, le=64, description="Futures to sample."),
        horizon_days: float = Query(365.0, gt=0, le=3650, description="How far ahead."),
        max_tokens: int = Query(64, ge=1, le=512, description="Tokens per future at most."),
        seed: int = Query(0, ge=0, le=2**31 - 1),
    ) -> JSONResponse:
        """The next events with their times: sampled futures of the record after the cut (or
        its end), and what they agree on about the next visit."""
        record = await _read(request)
        item = ForecastIn.of(
            record,
            _options(prediction_time, truncate),
            samples=samples,
            max_new_tokens=max_tokens,
            horizon_days=horizon_days,
            seed=seed,
        )
        out = ForecastOut.model_validate(await self._call("forecast", item))
        if out.problem is not None:
            return _problem_response(out.problem)
        info = await self._model_info()
        return JSONResponse(
            {
                "patient": out.patient_id,
                "model": {"name": BENTO_MODEL_NAME, "version": info["version"]},
                "prediction_time": fhir_io.iso(out.prediction_time),
                **out.forecast,
                "issues": fhir_io.warning_issues(out.warnings),
            }
        )

    @app.post("/explain", openapi_extra=_BUNDLE_BODY, responses=_ERRORS)
    async def explain(
        self,
        request: Request,
        prediction_time: str | None = Query(None),
        truncate: bool = Query(False),
        tasks: str | None = Query(None),
        top: int = Query(10, ge=1, le=50, description="Events per task."),
        steps: int = Query(16, ge=2, le=64, description="Integrated-gradients steps."),
    ) -> JSONResponse:
        """Per task, the events that raised the risk most (integrated gradients)."""
        record = await _read(request)
        item = ExplainIn.of(
            record,
            _options(prediction_time, truncate),
            tasks=_tasks(tasks),
            top_k=top,
            steps=steps,
        )
        out = ExplainOut.model_validate(await self._call("explain", item))
        if out.problem is not None:
            return _problem_response(out.problem)
        scored = out.score.scored()
        info = await self._model_info()
        return JSONResponse(
            {
                "patient": scored.patient_id,
                "model": {"name": BENTO_MODEL_NAME, "version": info["version"]},
                "prediction_time": fhir_io.iso(scored.prediction_time),
                "risks": scored.risks,
                "drivers": out.drivers,
                "issues": fhir_io.warning_issues(scored.warnings),
            }
        )

    @app.get("/cds-services")
    async def cds_services(self) -> JSONResponse:
        """CDS Hooks 2.0 discovery."""
        return JSONResponse(fhir_io.cds_discovery())

    @app.post("/cds-services/{service_id}", openapi_extra=_CDS_BODY, responses=_ERRORS)
    async def cds_service(self, service_id: str, request: Request) -> JSONResponse:
        """CDS Hooks patient-view: cards with the risks and their top contributing events."""
        if service_id != fhir_io.CDS_SERVICE_ID:
            raise RecordProblem(
                f"no CDS service {service_id[:60]!r}; see GET /cds-services",
                status=404,
                code="not-found",
            )
        body = await request.body()
        bundle = await anyio.to_thread.run_sync(fhir_io.cds_record_bundle, body)
        record = await anyio.to_thread.run_sync(read_patient_bundle, bundle)
        # An EHR cannot pass truncate=true: a record longer than the context is scored by its
        # most recent part (the card says so). Risks for every task (batched with /predict),
        # then the drivers of the tasks the card leads with: the elevated ones, else the top.
        options = {"truncate": True}
        scored = await self._score(ScoreIn.of(record, options))
        info = await self._model_info()
        thresholds = info.get("thresholds", {})
        ranked = sorted(scored.risks, key=scored.risks.get, reverse=True)
        lead = [t for t in ranked if t in thresholds and scored.risks[t] >= thresholds[t]]
        item = ExplainIn.of(record, options, tasks=(lead or ranked)[:2], top_k=3, steps=8)
        out = ExplainOut.model_validate(await self._call("explain", item))
        if out.problem is not None:
            return _problem_response(out.problem)
        return JSONResponse(
            fhir_io.cds_cards(
                scored,
                model_version=info["version"],
                thresholds=thresholds,
                drivers=out.drivers,
            )
        )


EHRMambaService.add_asgi_middleware(GuardMiddleware)
