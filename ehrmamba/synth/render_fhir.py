"""Render a simulated ``Timeline`` as FHIR R4 resources (plain JSON-able dicts).

Kept apart from the simulation so that other renderers (a MIMIC flavour) can reuse the same
histories. The output follows what Synthea writes, which is what real pipelines are tested
against: SNOMED/LOINC/RxNorm/CVX codings with displays, UCUM quantities, encounter periods with
timezone offsets, every clinical resource pointing at its Patient and its Encounter, blood
pressure as a panel with systolic/diastolic components.

Resources are built from dict literals (no pydantic): validation is the tests' job, generation
has to be fast. For speed the constant parts (codings, categories, statuses) are shared between
the resources of one call: treat the output as read-only, or copy it (``generate_patient`` in the
package API returns independent copies).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date
from typing import Any, Literal

from . import catalog as C
from .timeline import (
    CONDITION,
    DAY,
    EPOCH_ORDINAL,
    IMMUNIZATION,
    MEDICATION,
    OBSERVATION,
    PROCEDURE,
    Timeline,
)

References = Literal["relative", "urn"]

_DATES: dict[int, str] = {}
_CATEGORY_DISPLAY = {"laboratory": "Laboratory", "vital-signs": "Vital Signs", "survey": "Survey"}
_MED_CATEGORY = {"IMP": "inpatient", "EMER": "inpatient", "AMB": "outpatient"}
_MED_CATEGORY_DISPLAY = {"inpatient": "Inpatient", "outpatient": "Outpatient"}


def _date(day: int) -> str:
    s = _DATES.get(day)
    if s is None:
        s = _DATES[day] = date.fromordinal(EPOCH_ORDINAL + day).isoformat()
    return s


def format_datetime(t: int, tz: str) -> str:
    """FHIR dateTime with seconds and a UTC offset, e.g. ``2019-03-04T08:15:00-05:00``."""
    day, rem = divmod(t, DAY)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{_date(day)}T{h:02d}:{m:02d}:{s:02d}{tz}"


def format_date(t: int) -> str:
    """FHIR date (``YYYY-MM-DD``) of a local timestamp."""
    return _date(t // DAY)


_VARIANT = {f"{i:x}": f"{8 | (i & 3):x}" for i in range(16)}


def new_id(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (same as ``uuid.UUID(int=..., version=4)``)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _id_stream(rng: random.Random, n: int) -> Iterator[str]:
    """``n`` version-4 UUID strings from one block of random bytes (faster than one by one)."""
    h = rng.randbytes(16 * n).hex()
    var = _VARIANT
    for o in range(0, 32 * n, 32):
        yield (
            f"{h[o : o + 8]}-{h[o + 8 : o + 12]}-4{h[o + 13 : o + 16]}-"
            f"{var[h[o + 16]]}{h[o + 17 : o + 20]}-{h[o + 20 : o + 32]}"
        )


_CC_CACHE: dict[tuple[str, str], dict[str, Any]] = {}


def _cc(system: str, code: str, display: str) -> dict[str, Any]:
    """A CodeableConcept with one coding; cached, so it is shared: never mutate it."""
    key = (system, code)
    cc = _CC_CACHE.get(key)
    if cc is None:
        coding = {"system": system, "code": code, "display": display}
        cc = _CC_CACHE[key] = {"coding": [coding], "text": display}
    return cc


def _coding_list(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return {"coding": [coding]}


_OBS_CATEGORY = {
    cat: [_coding_list(C.OBS_CATEGORY, cat, disp)] for cat, disp in _CATEGORY_DISPLAY.items()
}
_MED_CATEGORIES = {
    cls: [_coding_list(C.MED_CATEGORY, code, _MED_CATEGORY_DISPLAY[code])]
    for cls, code in _MED_CATEGORY.items()
}
_CLINICAL = {s: _coding_list(C.COND_CLINICAL, s) for s in ("active", "resolved")}
_CONFIRMED = _coding_list(C.COND_VERIFICATION, "confirmed")
_COND_CATEGORY = {
    True: [_coding_list(C.COND_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
    False: [_coding_list(C.COND_CATEGORY, "problem-list-item", "Problem List Item")],
}
_CLASS = {
    cls: {"system": C.ACT_CODE, "code": cls, "display": disp}
    for cls, disp in C.ENCOUNTER_CLASSES.items()
}
_ADMIT = {k: _coding_list(C.ADMIT_SOURCE, k, d) for k, d in C.ADMIT_SOURCES.items()}
_DISCHARGE = {
    k: _coding_list(C.DISCHARGE_DISPOSITION, k, d) for k, d in C.DISCHARGE_DISPOSITIONS.items()
}

UCUM = C.UCUM
_OBS_STATIC = {
    key: (_OBS_CATEGORY[m.category], _cc(C.LOINC, m.code, m.display), m.unit)
    for key, m in C.MEASURES.items()
}
_SBP = _cc(C.LOINC, C.MEASURES["sbp"].code, C.MEASURES["sbp"].display)
_DBP = _cc(C.LOINC, C.MEASURES["dbp"].code, C.MEASURES["dbp"].display)


def _mmhg(value: float | None) -> dict[str, Any]:
    return {"value": value, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"}


def render_patient(timeline: Timeline, references: References = "relative") -> list[dict]:
    """All FHIR R4 resources of one patient, Patient first, then each Encounter and its content.

    ``references="relative"`` writes ``Patient/<id>`` style references (standalone resources,
    Bulk Data NDJSON); ``"urn"`` writes ``urn:uuid:<id>`` (inside a transaction Bundle).
    Resource ids are UUIDs drawn from the timeline's own id seed, so they are deterministic.
    """
    ids = _id_stream(
        random.Random(timeline.id_seed), 1 + len(timeline.visits) + len(timeline.events)
    ).__next__
    p = timeline.person
    tz = p.tz
    cache: dict[int, str] = {}

    def fdt(t: int, tz: str) -> str:
        s = cache.get(t)
        if s is None:
            s = cache[t] = format_datetime(t, tz)
        return s

    pid = ids()
    urn = references == "urn"
    pref = f"urn:uuid:{pid}" if urn else f"Patient/{pid}"
    subj = {"reference": pref}

    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {
                "system": "urn:ehrmamba:synth:mrn",
                "value": f"SYN-{timeline.seed}-{timeline.index:07d}",
            }
        ],
        "name": [{"use": "official", "family": p.family, "given": [p.given]}],
        "gender": p.gender,
        "birthDate": format_date(p.birth),
        "address": [{"city": p.city, "state": p.state, "country": "US"}],
    }
    if p.death is not None:
        patient["deceasedDateTime"] = fdt(p.death, tz)
    out: list[dict] = [patient]

    events = timeline.events
    n_events = len(events)
    ei = 0
    for vi, v in enumerate(timeline.visits):
        eid = ids()
        eref = f"urn:uuid:{eid}" if urn else f"Encounter/{eid}"
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": _CLASS[v.cls],
            "type": [_cc(C.SNOMED, v.type_code, C.ENCOUNTER_TYPES[v.type_code])],
            "subject": subj,
            "period": {"start": fdt(v.start, tz), "end": fdt(v.end, tz)},
        }
        if v.reason is not None:
            enc["reasonCode"] = [_cc(C.SNOMED, v.reason, C.CONDITIONS[v.reason])]
        if v.cls == "IMP":
            hosp: dict[str, Any] = {}
            if v.admit_source:
                hosp["admitSource"] = _ADMIT[v.admit_source]
            if v.discharge:
                hosp["dischargeDisposition"] = _DISCHARGE[v.discharge]
            enc["hospitalization"] = hosp
        out.append(enc)
        med_cat = _MED_CATEGORIES[v.cls]
        enc_ref = {"reference": eref}
        while ei < n_events and events[ei].visit == vi:
            ev = events[ei]
            ei += 1
            kind = ev.kind
            rid = ids()
            if kind == OBSERVATION:
                category, code, unit = _OBS_STATIC[ev.code]
                res: dict[str, Any] = {
                    "resourceType": "Observation",
                    "id": rid,
                    "status": "final",
                    "category": category,
                    "code": code,
                    "subject": subj,
                    "encounter": enc_ref,
                    "effectiveDateTime": fdt(ev.time, tz),
                }
                if ev.code == "bp":
                    res["component"] = [
                        {"code": _SBP, "valueQuantity": _mmhg(ev.value)},
                        {"code": _DBP, "valueQuantity": _mmhg(ev.value2)},
                    ]
                else:
                    res["valueQuantity"] = {
                        "value": ev.value,
                        "unit": unit,
                        "system": UCUM,
                        "code": unit,
                    }
            elif kind == CONDITION:
                resolved = ev.end is not None
                res = {
                    "resourceType": "Condition",
                    "id": rid,
                    "clinicalStatus": _CLINICAL["resolved" if resolved else "active"],
                    "verificationStatus": _CONFIRMED,
                    "category": _COND_CATEGORY[resolved],
                    "code": _cc(C.SNOMED, ev.code, C.CONDITIONS[ev.code]),
                    "subject": subj,
                    "encounter": enc_ref,
                    "onsetDateTime": fdt(ev.onset if ev.onset is not None else ev.time, tz),
                }
                if resolved:
                    res["abatementDateTime"] = fdt(ev.end, tz)
                res["recordedDate"] = fdt(ev.time, tz)
            elif kind == MEDICATION:
                res = {
                    "resourceType": "MedicationRequest",
                    "id": rid,
                    "status": ev.status,
                    "intent": "order",
                    "category": med_cat,
                    "medicationCodeableConcept": _cc(C.RXNORM, ev.code, C.MEDICATIONS[ev.code]),
                    "subject": subj,
                    "encounter": enc_ref,
                    "authoredOn": fdt(ev.time, tz),
                }
            elif kind == PROCEDURE:
                res = {
                    "resourceType": "Procedure",
                    "id": rid,
                    "status": "completed",
                    "code": _cc(C.SNOMED, ev.code, C.PROCEDURES[ev.code]),
                    "subject": subj,
                    "encounter": enc_ref,
                }
                if ev.end is not None:
                    res["performedPeriod"] = {"start": fdt(ev.time, tz), "end": fdt(ev.end, tz)}
                else:
                    res["performedDateTime"] = fdt(ev.time, tz)
            elif kind == IMMUNIZATION:
                res = {
                    "resourceType": "Immunization",
                    "id": rid,
                    "status": "completed",
                    "vaccineCode": _cc(C.CVX, ev.code, C.VACCINES[ev.code]),
                    "patient": subj,
                    "encounter": enc_ref,
                    "occurrenceDateTime": fdt(ev.time, tz),
                    "primarySource": True,
                }
            else:  # pragma: no cover - the simulation only emits the kinds above
                raise ValueError(f"unknown event kind {kind!r}")
            out.append(res)
    if ei != n_events:  # pragma: no cover - events are appended visit by visit
        raise AssertionError("timeline events are not grouped by visit")
    return out
