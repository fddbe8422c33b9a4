"""The service's answers as FHIR R4 and CDS Hooks 2.0 JSON (plain dicts, built here only).

``RiskAssessment`` (one per task, in a ``collection`` Bundle), ``OperationOutcome`` for every
problem and warning, and the CDS Hooks discovery document and cards. Tests validate the FHIR
with ``fhir.resources.R4B`` and the CDS shapes against the CDS Hooks 2.0 specification.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from ehrmamba.fhir.request_bundle import RecordProblem
from serving.runtime import Scored, iso

FHIR_JSON = "application/fhir+json"
METHOD_SYSTEM = "urn:ehrmamba:model"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
CDS_SERVICE_ID = "ehrmamba-risk"


@dataclass(frozen=True)
class TaskOutcome:
    text: str
    horizon_days: int | None  # None: the outcome is not a future window (length of stay)


# The default tasks' outcomes (their definitions live in dbt_project/models/marts/labels/);
# a task not listed here is described by its name and carries no period.
TASK_OUTCOMES: dict[str, TaskOutcome] = {
    "mortality_1m": TaskOutcome("death within 30 days", 30),
    "los_1w": TaskOutcome("hospital stay longer than 7 days", None),
    "readmission_1m": TaskOutcome("inpatient readmission within 30 days", 30),
    "hypertension_1y": TaskOutcome("first diagnosis of hypertension within a year", 365),
    "fluid_electrolyte_1y": TaskOutcome(
        "first diagnosis of a fluid or electrolyte disorder within a year", 365
    ),
    "lipoid_1y": TaskOutcome("first diagnosis of a lipoid metabolism disorder within a year", 365),
}


def outcome(task: str) -> TaskOutcome:
    return TASK_OUTCOMES.get(task, TaskOutcome(task.replace("_", " "), None))


# ------------------------------------------------------------------ OperationOutcome
def issue(
    diagnostics: str,
    *,
    code: str = "invalid",
    severity: str = "error",
    expression: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        out["expression"] = [expression]
    return out


def operation_outcome(issues: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [dict(i) for i in issues]}


def warning_issues(warnings: Iterable[str]) -> list[dict[str, Any]]:
    return [issue(w, code="informational", severity="warning") for w in warnings]


# ------------------------------------------------------------------ RiskAssessment
def _method(model_version: str) -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": METHOD_SYSTEM,
                "code": "ehrmamba-multitask",
                "version": model_version,
                "display": "EHRMamba multitask risk model",
            }
        ],
        "text": f"EHRMamba, model version {model_version}",
    }


def risk_assessment(
    task: str,
    probability: float,
    *,
    patient_id: str,
    scored: Scored,
    model_version: str,
    threshold: float | None,
) -> dict[str, Any]:
    what = outcome(task)
    prediction: dict[str, Any] = {
        "outcome": {"coding": [{"system": METHOD_SYSTEM, "code": task}], "text": what.text},
        "probabilityDecimal": round(float(probability), 6),
    }
    if threshold is not None:
        level = "high" if probability >= threshold else "low"
        prediction["qualitativeRisk"] = {
            "coding": [{"system": RISK_PROBABILITY_SYSTEM, "code": level}],
            "text": f"{level} (threshold {threshold:.3g})",
        }
    if what.horizon_days is not None:
        end = scored.prediction_time + timedelta(days=what.horizon_days)
        prediction["whenPeriod"] = {"start": iso(scored.prediction_time), "end": iso(end)}
    return {
        "resourceType": "RiskAssessment",
        "id": str(uuid.uuid4()),
        "status": "final",
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": iso(scored.prediction_time),
        "method": _method(model_version),
        "prediction": [prediction],
        "note": [
            {
                "text": f"{task}: from {scored.n_tokens} tokens of {scored.n_events} events"
                + (" (record cut to the model's context)" if scored.truncated else "")
            }
        ],
    }


def risk_bundle(
    scored: Scored, *, model_version: str, thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """A ``collection`` Bundle: one RiskAssessment per task, then the warnings if any."""
    resources = [
        risk_assessment(
            task,
            p,
            patient_id=scored.patient_id,
            scored=scored,
            model_version=model_version,
            threshold=thresholds.get(task),
        )
        for task, p in scored.risks.items()
    ]
    if scored.warnings:
        outcome_resource = operation_outcome(warning_issues(scored.warnings))
        outcome_resource["id"] = str(uuid.uuid4())
        resources.append(outcome_resource)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def prediction_json(
    scored: Scored, *, model: Mapping[str, Any], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """The plain JSON answer of /predict, with the FHIR Bundle inside."""
    return {
        "patient": scored.patient_id,
        "model": dict(model),
        "prediction_time": iso(scored.prediction_time),
        "risks": {
            task: {
                "probability": float(p),
                "threshold": thresholds.get(task),
                "high": None if task not in thresholds else bool(p >= thresholds[task]),
                "outcome": outcome(task).text,
            }
            for task, p in scored.risks.items()
        },
        "record": {
            "events": scored.n_events,
            "tokens": scored.n_tokens,
            "truncated": scored.truncated,
        },
        "issues": warning_issues(scored.warnings),
        "bundle": risk_bundle(scored, model_version=str(model["version"]), thresholds=thresholds),
    }


# ------------------------------------------------------------------ CDS Hooks 2.0
def cds_discovery() -> dict[str, Any]:
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": CDS_SERVICE_ID,
                "title": "EHRMamba risk assessment",
                "description": (
                    "Risks of death, long stay, readmission and new chronic conditions from "
                    "the patient's whole record, with the events that drove them."
                ),
                "prefetch": {
                    "patient": "Patient/{{context.patientId}}",
                    "everything": "Patient/{{context.patientId}}/$everything",
                },
                "usageRequirements": "Prefetch of the patient and Patient/$everything.",
            }
        ]
    }


_MD_ESCAPE = re.compile(r"([\\`*_{}\[\]()#+\-.!|])")


def _md(text: str) -> str:
    return _MD_ESCAPE.sub(r"\\\1", text)


def cds_cards(
    scored: Scored,
    *,
    model_version: str,
    thresholds: Mapping[str, float],
    drivers: Mapping[str, list[Mapping[str, Any]]],
) -> dict[str, Any]:
    """One card: the risks (highest first) and, per task, its top contributing events."""
    ranked = sorted(scored.risks.items(), key=lambda kv: kv[1], reverse=True)
    high = [t for t, p in ranked if t in thresholds and p >= thresholds[t]]
    top_task, top_p = ranked[0]
    if high:
        summary = (
            f"EHRMamba: elevated risk of {outcome(high[0]).text} ({scored.risks[high[0]]:.0%})"
        )
    else:
        summary = f"EHRMamba: no elevated risk (highest: {outcome(top_task).text}, {top_p:.0%})"
    lines = ["| outcome | risk | |", "| --- | ---: | --- |"]
    for task, p in ranked:
        flag = "above threshold" if task in high else ""
        lines.append(f"| {_md(outcome(task).text)} | {p:.1%} | {flag} |")
    for task, contributions in drivers.items():
        if contributions:
            lines.append("")
            lines.append(f"Events raising the risk of {_md(outcome(task).text)}:")
            for c in contributions:  # {"code": ..., "time": FHIR instant, ...}
                lines.append(f"- {_md(c['code'])} ({c['time'][:10]})")
    lines.append("")
    lines.append(
        f"Prediction at {iso(scored.prediction_time)} from {scored.n_events} events "
        f"({scored.n_tokens} tokens{', cut to the model context' if scored.truncated else ''})."
    )
    return {
        "cards": [
            {
                "uuid": str(uuid.uuid4()),
                "summary": summary[:140],
                "indicator": "warning" if high else "info",
                "detail": "\n".join(lines),
                "source": {"label": f"EHRMamba (model version {model_version})"},
            }
        ]
    }


def cds_record_bundle(body: bytes) -> bytes:
    """The patient's record from a patient-view request's prefetch, as one Bundle (bytes).

    CDS Hooks 2.0: ``context.patientId``; ``prefetch.patient`` (the Patient) and
    ``prefetch.everything`` (Patient/$everything, a searchset Bundle). Without prefetch the
    service would have to query the EHR's FHIR server, which it does not: 412, as the spec says.
    """
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RecordProblem(f"invalid JSON: {exc}", status=400, code="structure") from None
    if not isinstance(request, dict):
        raise RecordProblem("a CDS Hooks request is a JSON object", status=400)
    if request.get("hook") != "patient-view":
        raise RecordProblem(
            f"this service answers the patient-view hook, not {str(request.get('hook'))[:40]!r}",
            status=400,
            code="not-supported",
            expression="hook",
        )
    context = request.get("context")
    patient_id = context.get("patientId") if isinstance(context, dict) else None
    if not isinstance(patient_id, str) or not isinstance(request.get("hookInstance"), str):
        raise RecordProblem(
            "a patient-view request needs hookInstance and context.patientId",
            status=400,
            code="required",
            expression="context.patientId",
        )
    prefetch = request.get("prefetch")
    everything = prefetch.get("everything") if isinstance(prefetch, dict) else None
    if not isinstance(everything, dict):
        raise RecordProblem(
            "prefetch.everything (Patient/{{context.patientId}}/$everything) is missing; this "
            "service does not query the FHIR server itself",
            status=412,
            code="required",
            expression="prefetch.everything",
        )
    patient = prefetch.get("patient")
    entries = everything.get("entry")
    entries = list(entries) if isinstance(entries, list) else []
    has_patient = any(
        isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
        for e in entries
    )
    if isinstance(patient, dict) and not has_patient:
        entries.insert(0, {"resource": patient})
    for e in entries:
        resource = e.get("resource") if isinstance(e, dict) else None
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Patient"
            and resource.get("id") != patient_id
        ):
            raise RecordProblem(
                "the prefetched Patient is not context.patientId",
                status=400,
                expression="prefetch.patient",
            )
    return orjson.dumps({**everything, "entry": entries})
