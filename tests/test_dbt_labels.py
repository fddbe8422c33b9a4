"""The dbt project on hand-built FHIR timelines: exact MEDS events, subjects, visits, splits and,
for every task, the exact label rows (positives, negatives, exclusions and boundary cases).

One dataset holds every case. It is landed with the real ingestion and built with a real
``dbt build`` once per module; a second build runs the same project, unchanged, on the second
target with the MEDS import as its event source and must give the same subjects, visits and labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from ehrmamba.fhir import ingest
from tests import fhir_builders as fb

ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT = ROOT / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"

# Tests whose job is to warn, and that do on this dataset (it has one unmapped code system).
EXPECTED_WARNINGS = {"warn_unmapped_codes", "warn_unmapped_fhir_code_systems"}


# ------------------------------------------------------------------------------------------------
# Running dbt
# ------------------------------------------------------------------------------------------------
def run_dbt(
    args: list[str],
    work_dir: Path,
    env: dict[str, str],
    timeout: float = 600,
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``dbt <args>`` on the project, in a subprocess, with its own target and log paths.

    Returns the process and ``run_results.json``'s results (empty when dbt did not get that far).
    """
    target = work_dir / "target"
    logs = work_dir / "logs"
    cmd = [
        str(DBT),
        *args,
        "--project-dir",
        str(DBT_PROJECT),
        "--profiles-dir",
        str(DBT_PROJECT),
        "--target-path",
        str(target),
        "--log-path",
        str(logs),
    ]
    full_env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **env}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    results_file = target / "run_results.json"
    results = json.loads(results_file.read_text())["results"] if results_file.exists() else []
    return proc, results


def assert_build_ok(
    proc: subprocess.CompletedProcess, results: list[dict], allowed_warnings: set[str]
) -> None:
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    bad = [
        (r["unique_id"], r["status"], r.get("message"))
        for r in results
        if r["status"] not in ("success", "pass")
        and not (r["status"] == "warn" and r["unique_id"].split(".")[-1] in allowed_warnings)
    ]
    assert not bad, bad
    assert any(r["unique_id"].startswith("test.") for r in results)


def subject_id(patient_id: str) -> int:
    """The documented subject_id: the first 15 hex digits of md5(patient id)."""
    return int(hashlib.md5(patient_id.encode()).hexdigest()[:15], 16)


def expected_split(patient_id: str, salt: str = "ehrmamba-split-v1") -> str:
    """The documented split rule (marts.subject_splits)."""
    bucket = int(hashlib.md5((salt + patient_id).encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 80 else "tuning" if bucket < 90 else "held_out"


def ts(text: str) -> datetime:
    """'2020-01-05 08:00' or '2020-01-05 08:00:01' as a naive (UTC) datetime."""
    return datetime.fromisoformat(text)


# ------------------------------------------------------------------------------------------------
# FHIR builders for timelines (NDJSON style: Patient/<id> and Encounter/<id> references)
# ------------------------------------------------------------------------------------------------
def patient(pid: str, birth: str, gender: str = "female", death: str | None = None) -> dict:
    res = fb.patient(pid, gender=gender, birthDate=birth)
    if death:
        res["deceasedDateTime"] = death
    return res


def encounter(
    eid: str,
    pid: str,
    start: str,
    end: str | None,
    cls: str | dict = "IMP",
    type_code: str = "32485007",
    ref: str | None = None,
) -> dict:
    klass = {"system": ACT_CODE, "code": cls} if isinstance(cls, str) else cls
    period = {"start": start} | ({"end": end} if end else {})
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished" if end else "in-progress",
        "class": klass,
        "type": [{"coding": [{"system": SNOMED, "code": type_code}], "text": "visit"}],
        "subject": {"reference": ref or f"Patient/{pid}"},
        "period": period,
    }


def condition(
    cid: str,
    pid: str,
    code: str,
    system: str = SNOMED,
    recorded: str | None = None,
    onset: str | None = None,
    encounter_ref: str | None = None,
    display: str | None = None,
    subject_ref: str | None = None,
) -> dict:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    res: dict = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [coding]},
        "subject": {"reference": subject_ref or f"Patient/{pid}"},
    }
    if encounter_ref:
        res["encounter"] = {"reference": encounter_ref}
    if onset:
        res["onsetDateTime"] = onset
    if recorded:
        res["recordedDate"] = recorded
    return res


def observation(
    oid: str,
    subject_ref: str,
    encounter_ref: str,
    code: str,
    effective: str,
    category: str | None,
    system: str = LOINC,
    **value,
) -> dict:
    res: dict = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject_ref},
        "encounter": {"reference": encounter_ref},
        "effectiveDateTime": effective,
        "issued": "2030-01-01T00:00:00Z",  # never used: effectiveDateTime comes first
    }
    if category:
        res["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": category}]}]
    res.update(value)
    return res


def quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


# ------------------------------------------------------------------------------------------------
# The cohort. Every case is named after what it exercises; times are UTC unless stated.
# ------------------------------------------------------------------------------------------------
A, B, C, D, E, F, G, H, OPEN = (
    "pt-a-death-30d-after-discharge",
    "pt-b-death-30d-and-1s-after-discharge",
    "pt-c-died-in-hospital",
    "pt-d-length-of-stay",
    "pt-e-readmissions",
    "pt-f-hypertension-snomed",
    "pt-g-icd-coded",
    "pt-h-one-visit-bundle",
    "pt-i-open-encounter",
)


def ndjson_cohort() -> list[dict]:
    return [
        # A: death exactly 30 days after an inpatient discharge (positive mortality).
        patient(A, "1950-01-01", death="2020-02-04T08:00:00Z"),
        encounter("a1", A, "2020-01-01T08:00:00Z", "2020-01-05T08:00:00Z"),
        # B: death 30 days and 1 second after an emergency visit (negative mortality).
        patient(B, "1951-01-01", gender="male", death="2020-03-31T16:00:01Z"),
        encounter("b1", B, "2020-03-01T10:00:00Z", "2020-03-01T16:00:00Z", cls="EMER"),
        # B's medications: a request whose Medication is contained ('#med'), an administration
        # whose Medication lives in another file (Patient H's Bundle), by 'Medication/<id>'.
        {
            "resourceType": "MedicationRequest",
            "id": "b-medrequest",
            "status": "completed",
            "intent": "order",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "med",
                    "code": {"coding": [{"system": RXNORM, "code": "197361"}]},
                }
            ],
            "medicationReference": {"reference": "#med"},
            "subject": {"reference": f"Patient/{B}"},
            "encounter": {"reference": "Encounter/b1"},
            "authoredOn": "2020-03-01T11:00:00Z",
        },
        {
            "resourceType": "MedicationAdministration",
            "id": "b-admin",
            "status": "completed",
            "medicationReference": {"reference": "Medication/h-lisinopril"},
            "subject": {"reference": f"Patient/{B}"},
            "context": {"reference": "Encounter/b1"},
            "effectivePeriod": {"start": "2020-03-01T11:30:00Z", "end": "2020-03-01T11:35:00Z"},
        },
        # C: dies at the discharge time of a 9-day stay: excluded from mortality, readmission
        # and the condition tasks for that stay; still a (positive) length-of-stay label.
        patient(C, "1952-01-01", death="2020-04-10T00:00:00Z"),
        encounter("c0", C, "2019-01-01T09:00:00Z", "2019-01-01T09:30:00Z", cls="AMB"),
        encounter("c1", C, "2020-04-01T00:00:00Z", "2020-04-10T00:00:00Z"),
        # D: stays of exactly 7 days, exactly 24 h, 23:59:59, and 7 days + 1 s. The first
        # encounter has the older Synthea class form (a bare code "inpatient", no system).
        patient(D, "1953-01-01", gender="male"),
        encounter(
            "d1", D, "2020-01-01T00:00:00Z", "2020-01-08T00:00:00Z", cls={"code": "inpatient"}
        ),
        encounter("d2", D, "2020-03-01T00:00:00Z", "2020-03-02T00:00:00Z"),
        encounter("d3", D, "2020-05-01T00:00:00Z", "2020-05-01T23:59:59Z"),
        encounter("d4", D, "2020-07-01T00:00:00Z", "2020-07-08T00:00:01Z"),
        # E: readmission exactly 30 days after discharge, then one 30 days + 1 s after, then an
        # emergency visit (not a readmission). Class given with its display.
        patient(E, "1954-01-01"),
        encounter(
            "e1",
            E,
            "2021-01-01T00:00:00Z",
            "2021-01-03T00:00:00Z",
            cls={"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
        ),
        encounter("e2", E, "2021-02-02T00:00:00Z", "2021-02-04T00:00:00Z"),
        encounter("e3", E, "2021-03-06T00:00:01Z", "2021-03-07T00:00:00Z"),
        encounter("e4", E, "2021-03-10T00:00:00Z", "2021-03-10T06:00:00Z", cls="EMER"),
        # F: hypertension recorded at 2019-01-01T09:30 (onset given earlier, but the diagnosis
        # is known when recorded): a visit ending exactly 365 days before is positive, one
        # ending 365 days + 1 s before is negative, the visit that records it and later ones are
        # excluded (already diagnosed).
        patient(F, "1955-01-01", gender="male"),
        encounter("f0", F, "2018-01-01T08:00:00Z", "2018-01-01T09:29:59Z", cls="AMB"),
        encounter("f1", F, "2018-01-01T09:00:00Z", "2018-01-01T09:30:00Z", cls="AMB"),
        encounter("f2", F, "2019-01-01T09:00:00Z", "2019-01-01T09:30:00Z", cls="AMB"),
        encounter("f3", F, "2019-06-01T09:00:00Z", "2019-06-01T09:30:00Z", cls="AMB"),
        condition(
            "f-htn",
            F,
            "59621000",
            recorded="2019-01-01T09:30:00Z",
            onset="2018-06-01",
            encounter_ref="Encounter/f2",
        ),
        # G: ICD-coded diagnoses (ICD-10-CM E78.5 with a dot, ICD-9-CM 4019 without) and a
        # dehydration whose only time is its encounter's start.
        patient(G, "1956-01-01"),
        encounter("g1", G, "2015-06-01T10:00:00Z", "2015-06-01T10:30:00Z", cls="AMB"),
        encounter("g2", G, "2016-03-01T12:00:00Z", "2016-03-01T18:00:00Z", cls="EMER"),
        condition("g-lipoid", G, "E78.5", system=ICD10CM, recorded="2016-01-01T00:00:00Z"),
        condition("g-fluid", G, "34095006", encounter_ref="Encounter/g2"),
        condition("g-htn", G, "4019", system=ICD9CM, recorded="2017-01-01T00:00:00Z"),
        # OPEN: an open inpatient encounter (no end): a visit without end, in no task.
        patient(OPEN, "1990-01-01"),
        encounter("i1", OPEN, "2022-01-01T00:00:00Z", None),
    ]


def bundle_patient_h() -> dict:
    """Patient H in a transaction Bundle (urn:uuid references), times at UTC-05:00."""
    pid, eid = "pt-h-one-visit-bundle", "h1"
    subj = f"urn:uuid:{pid}"
    enc = f"urn:uuid:{eid}"
    resources = [
        patient(pid, "1980-02-03", gender="male"),
        encounter(
            eid,
            pid,
            "2021-06-01T09:00:00-05:00",
            "2021-06-01T10:00:00-05:00",
            cls="AMB",
            type_code="185349003",
            ref=subj,
        ),
        observation(
            "h-bp",
            subj,
            enc,
            "85354-9",
            "2021-06-01T09:10:00-05:00",
            "vital-signs",
            component=[
                {
                    "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                    "valueQuantity": quantity(120, "mm[Hg]"),
                },
                {
                    "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                    "valueQuantity": quantity(80, "mm[Hg]"),
                },
            ],
        ),
        observation(
            "h-creatinine",
            subj,
            enc,
            "2160-0",
            "2021-06-01T09:20:00-05:00",
            "laboratory",
            valueQuantity=quantity(1.1, "mg/dL"),
        ),
        observation(
            "h-smoking",
            subj,
            enc,
            "72166-2",
            "2021-06-01T09:25:00-05:00",
            "social-history",
            valueCodeableConcept={
                "coding": [{"system": SNOMED, "code": "266919005", "display": "Never smoker"}]
            },
        ),
        observation(
            "h-urine-color",
            subj,
            enc,
            "5778-6",
            "2021-06-01T09:26:00-05:00",
            "laboratory",
            valueString="yellow",
        ),
        observation(
            "h-local",
            subj,
            enc,
            "X1",
            "2021-06-01T09:27:00-05:00",
            None,
            system="http://example.org/fhir/local-codes",
            valueQuantity={"value": 3},
        ),
        condition(
            "h-sinusitis",
            pid,
            "444814009",
            recorded="2021-06-01T09:30:00-05:00",
            onset="2021-05-28",
            encounter_ref=enc,
            display="Viral sinusitis (disorder)",
            subject_ref=subj,
        ),
        {
            "resourceType": "Procedure",
            "id": "h-procedure",
            "status": "completed",
            "code": {"coding": [{"system": SNOMED, "code": "430193006"}]},
            "subject": {"reference": subj},
            "encounter": {"reference": enc},
            "performedPeriod": {
                "start": "2021-06-01T09:40:00-05:00",
                "end": "2021-06-01T09:45:00-05:00",
            },
        },
        {
            "resourceType": "Medication",
            "id": "h-lisinopril",
            "code": {
                "coding": [
                    {"system": RXNORM, "code": "314076", "display": "lisinopril 10 MG Oral Tablet"}
                ]
            },
        },
        {
            "resourceType": "MedicationRequest",
            "id": "h-medrequest",
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": "urn:uuid:h-lisinopril"},
            "subject": {"reference": subj},
            "encounter": {"reference": enc},
            "authoredOn": "2021-06-01T09:50:00-05:00",
        },
        fb.immunization("h-flu", subj)
        | {"encounter": {"reference": enc}, "occurrenceDateTime": "2021-06-01T09:55:00-05:00"},
    ]
    return fb.transaction_bundle(resources)


# ------------------------------------------------------------------------------------------------
# Expected labels
# ------------------------------------------------------------------------------------------------
def row(pid: str, prediction_time: str, value: bool, visit: str) -> tuple:
    return (subject_id(pid), ts(prediction_time), value, visit)


MORTALITY = [
    row(A, "2020-01-05 08:00", True, "a1"),  # death exactly 30 days later
    row(B, "2020-03-01 16:00", False, "b1"),  # death 30 days + 1 s later
    # C (c1): died at discharge -> excluded.
    row(D, "2020-01-08 00:00", False, "d1"),
    row(D, "2020-03-02 00:00", False, "d2"),
    row(D, "2020-05-01 23:59:59", False, "d3"),
    row(D, "2020-07-08 00:00:01", False, "d4"),
    row(E, "2021-01-03 00:00", False, "e1"),
    row(E, "2021-02-04 00:00", False, "e2"),
    row(E, "2021-03-07 00:00", False, "e3"),
    row(E, "2021-03-10 06:00", False, "e4"),
    row(G, "2016-03-01 18:00", False, "g2"),
    # OPEN (i1): no end -> no label.
]

LOS = [
    row(A, "2020-01-02 08:00", False, "a1"),  # 4 days
    row(C, "2020-04-02 00:00", True, "c1"),  # 9 days; died at discharge, after prediction
    row(D, "2020-01-02 00:00", False, "d1"),  # exactly 7 days: negative
    row(D, "2020-03-02 00:00", False, "d2"),  # exactly 24 h: kept, prediction_time = end
    # d3: 23:59:59 -> excluded
    row(D, "2020-07-02 00:00", True, "d4"),  # 7 days + 1 s
    row(E, "2021-01-02 00:00", False, "e1"),
    row(E, "2021-02-03 00:00", False, "e2"),
    # e3: 23:59:59 -> excluded; e4 is an emergency visit
]

READMISSION = [
    row(A, "2020-01-05 08:00", False, "a1"),
    # c1: died during the stay -> excluded
    row(D, "2020-01-08 00:00", False, "d1"),
    row(D, "2020-03-02 00:00", False, "d2"),
    row(D, "2020-05-01 23:59:59", False, "d3"),
    row(D, "2020-07-08 00:00:01", False, "d4"),
    row(E, "2021-01-03 00:00", True, "e1"),  # e2 starts exactly 30 days later
    row(E, "2021-02-04 00:00", False, "e2"),  # e3 starts 30 days + 1 s later
    row(E, "2021-03-07 00:00", False, "e3"),  # e4 is emergency, not inpatient
]

# Visits (any type, with an end) of subjects who never get any of the three conditions.
CONDITION_NEGATIVE_VISITS = [
    row(A, "2020-01-05 08:00", False, "a1"),
    row(B, "2020-03-01 16:00", False, "b1"),
    row(C, "2019-01-01 09:30", False, "c0"),  # c1: died at its end -> excluded
    row(D, "2020-01-08 00:00", False, "d1"),
    row(D, "2020-03-02 00:00", False, "d2"),
    row(D, "2020-05-01 23:59:59", False, "d3"),
    row(D, "2020-07-08 00:00:01", False, "d4"),
    row(E, "2021-01-03 00:00", False, "e1"),
    row(E, "2021-02-04 00:00", False, "e2"),
    row(E, "2021-03-07 00:00", False, "e3"),
    row(E, "2021-03-10 06:00", False, "e4"),
    row(H, "2021-06-01 15:00", False, "h1"),
]
F_ALL_NEGATIVE = [
    row(F, "2018-01-01 09:29:59", False, "f0"),
    row(F, "2018-01-01 09:30", False, "f1"),
    row(F, "2019-01-01 09:30", False, "f2"),
    row(F, "2019-06-01 09:30", False, "f3"),
]
HYPERTENSION = [
    *CONDITION_NEGATIVE_VISITS,
    row(F, "2018-01-01 09:29:59", False, "f0"),  # recorded 365 days + 1 s later
    row(F, "2018-01-01 09:30", True, "f1"),  # recorded exactly 365 days later
    # f2 records it (at its end), f3 is after: already diagnosed -> excluded
    row(G, "2015-06-01 10:30", False, "g1"),  # ICD-9 4019 on 2017-01-01: > 365 days
    row(G, "2016-03-01 18:00", True, "g2"),  # ... 306 days later
]
FLUID_ELECTROLYTE = [
    *CONDITION_NEGATIVE_VISITS,
    *F_ALL_NEGATIVE,
    row(G, "2015-06-01 10:30", True, "g1"),  # dehydration at g2's start, 274 days later
    # g2: diagnosed at its start, before its end -> excluded
]
LIPOID = [
    *CONDITION_NEGATIVE_VISITS,
    *F_ALL_NEGATIVE,
    row(G, "2015-06-01 10:30", True, "g1"),  # ICD-10-CM E78.5 on 2016-01-01
    # g2: already diagnosed
]

EXPECTED_LABELS = {
    "mortality_1m": MORTALITY,
    "los_1w": LOS,
    "readmission_1m": READMISSION,
    "hypertension_1y": HYPERTENSION,
    "fluid_electrolyte_1y": FLUID_ELECTROLYTE,
    "lipoid_1y": LIPOID,
}


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Land the cohort, build the project; then build it again from the MEDS import."""
    work = tmp_path_factory.mktemp("dbt_labels")
    fhir_dir = work / "fhir"
    fhir_dir.mkdir()
    fb.write_ndjson(fhir_dir / "cohort.ndjson", ndjson_cohort())
    fb.write_json(fhir_dir / "patient_h.json", bundle_patient_h())
    db = work / "warehouse.duckdb"
    report = ingest(fhir_dir, db, workers=1)
    assert report.balanced and report.quarantined == 0, report.table()

    proc, results = run_dbt(["build"], work / "dbt_fhir", {"EHRMAMBA_DUCKDB_PATH": str(db)})
    assert_build_ok(proc, results, EXPECTED_WARNINGS)

    # The same dataset as a MEDS import, with the dataset's own codes metadata and splits for
    # one subject each, on the second target.
    second = work / "second.duckdb"
    overridden = subject_id(D)
    imported_split = "held_out" if expected_split(D) != "held_out" else "tuning"
    with duckdb.connect(str(second)) as con:
        con.execute(f"ATTACH '{db}' AS fhir (READ_ONLY)")
        con.execute("CREATE SCHEMA raw")
        con.execute(
            """
            CREATE TABLE raw.meds_events_import AS
            SELECT e.subject_id, s.patient_id, e.time, e.code, e.numeric_value, e.text_value,
                   e.unit, e.visit_id, e.event_type
            FROM fhir.marts.meds_events e JOIN fhir.marts.subjects s USING (subject_id)
            """
        )
        con.execute(
            "CREATE TABLE raw.meds_codes_import AS SELECT 'LOINC/2160-0' AS code, "
            "'Creatinine (imported)' AS description, ['LOINC/LP1'] AS parent_codes"
        )
        con.execute(
            "CREATE TABLE raw.meds_subject_splits_import AS "
            f"SELECT {overridden}::BIGINT AS subject_id, '{imported_split}' AS split"
        )
        con.execute("DETACH fhir")
    proc2, results2 = run_dbt(
        ["build", "--target", "ci_second", "--vars", "{events_source: meds}"],
        work / "dbt_meds",
        {"EHRMAMBA_DUCKDB_PATH_SECOND": str(second), "EHRMAMBA_DUCKDB_PATH": "/nonexistent"},
    )
    return {
        "db": db,
        "second": second,
        "results": results,
        "meds_build": (proc2, results2),
        "overridden": (overridden, imported_split),
    }


@pytest.fixture(scope="module")
def con(built: dict):
    with duckdb.connect(str(built["db"]), read_only=True) as connection:
        yield connection


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_every_model_and_test_ran(built: dict) -> None:
    results = built["results"]
    ran = {r["unique_id"].split(".")[-1] for r in results if r["unique_id"].startswith("model.")}
    assert {f"labels__{task}" for task in EXPECTED_LABELS} <= ran
    assert {"meds_events", "subjects", "visits", "meds_codes", "subject_splits"} <= ran
    warned = {r["unique_id"].split(".")[-1] for r in results if r["status"] == "warn"}
    assert warned == EXPECTED_WARNINGS  # the unmapped local code system is reported


@pytest.mark.parametrize("task", list(EXPECTED_LABELS))
def test_labels_exact(con, task: str) -> None:
    got = con.execute(
        f"SELECT subject_id, prediction_time, boolean_value, visit_id FROM marts.labels__{task} "
        "ORDER BY subject_id, prediction_time, visit_id"
    ).fetchall()
    assert sorted(got) == sorted(EXPECTED_LABELS[task])


@pytest.mark.parametrize("task", list(EXPECTED_LABELS))
def test_label_schema(con, task: str) -> None:
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND table_name = ?",
            [f"labels__{task}"],
        ).fetchall()
    )
    assert types == {
        "subject_id": "BIGINT",
        "prediction_time": "TIMESTAMP",
        "boolean_value": "BOOLEAN",
        "visit_id": "VARCHAR",
    }


def test_meds_events_of_one_patient_exactly(con) -> None:
    sid = subject_id(H)
    got = con.execute(
        "SELECT time, code, numeric_value, text_value, unit, visit_id, event_type "
        "FROM marts.meds_events WHERE subject_id = ? ORDER BY time, code",
        [sid],
    ).fetchall()
    at = "2021-06-01 "
    expected = [
        (ts("1980-02-03 00:00"), "GENDER/male", None, None, None, None, "demographic"),
        (ts("1980-02-03 00:00"), "MEDS_BIRTH", None, None, None, None, "birth"),
        (ts(at + "14:00"), "SNOMED/185349003", None, None, None, "h1", "encounter_type"),
        (ts(at + "14:00"), "VISIT/ambulatory", None, None, None, "h1", "visit_start"),
        (ts(at + "14:10"), "LOINC/8462-4", 80.0, None, "mm[Hg]", "h1", "vital"),
        (ts(at + "14:10"), "LOINC/8480-6", 120.0, None, "mm[Hg]", "h1", "vital"),
        (ts(at + "14:20"), "LOINC/2160-0", pytest.approx(1.1), None, "mg/dL", "h1", "lab"),
        (ts(at + "14:25"), "LOINC/72166-2", None, "SNOMED/266919005", None, "h1", "observation"),
        (ts(at + "14:26"), "LOINC/5778-6", None, "yellow", None, "h1", "lab"),
        (ts(at + "14:27"), "UNMAPPED_LOCAL_CODES/X1", 3.0, None, None, "h1", "observation"),
        (ts(at + "14:30"), "SNOMED/444814009", None, None, None, "h1", "condition"),
        (ts(at + "14:40"), "SNOMED/430193006", None, None, None, "h1", "procedure"),
        (ts(at + "14:50"), "RXNORM/314076", None, None, None, "h1", "medication"),
        (ts(at + "14:55"), "CVX/140", None, None, None, "h1", "immunization"),
        (ts(at + "15:00"), "VISIT_END/ambulatory", None, None, None, "h1", "visit_end"),
    ]
    assert got == expected
    # The blood pressure panel itself has no value: only its two components are events.
    assert not con.execute(
        "SELECT count(*) FROM marts.meds_events WHERE code = 'LOINC/85354-9'"
    ).fetchone()[0]


def test_meds_events_schema_and_codes(con) -> None:
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND table_name = 'meds_events'"
        ).fetchall()
    )
    assert types == {
        "subject_id": "BIGINT",
        "time": "TIMESTAMP",
        "code": "VARCHAR",
        "numeric_value": "FLOAT",
        "text_value": "VARCHAR",
        "unit": "VARCHAR",
        "visit_id": "VARCHAR",
        "event_type": "VARCHAR",
    }
    # ICD codes keep their prefix and their own spelling; a condition without its own time
    # takes its encounter's start.
    g = con.execute(
        "SELECT code, time FROM marts.meds_events WHERE subject_id = ? "
        "AND event_type = 'condition' ORDER BY time",
        [subject_id(G)],
    ).fetchall()
    assert g == [
        ("ICD10CM/E78.5", ts("2016-01-01 00:00")),
        ("SNOMED/34095006", ts("2016-03-01 12:00")),
        ("ICD9CM/4019", ts("2017-01-01 00:00")),
    ]
    # Medications resolved through a contained Medication and through Medication/<id>.
    b = con.execute(
        "SELECT time, code, visit_id, event_type FROM marts.meds_events WHERE subject_id = ? "
        "AND event_type LIKE 'medication%' ORDER BY time",
        [subject_id(B)],
    ).fetchall()
    assert b == [
        (ts("2020-03-01 11:00"), "RXNORM/197361", "b1", "medication"),
        (ts("2020-03-01 11:30"), "RXNORM/314076", "b1", "medication_administration"),
    ]
    # meds_codes: every event code exactly once, FHIR displays where FHIR gives them.
    codes = dict(con.execute("SELECT code, description FROM marts.meds_codes").fetchall())
    event_codes = {
        c for (c,) in con.execute("SELECT DISTINCT code FROM marts.meds_events").fetchall()
    }
    assert set(codes) == event_codes
    assert con.execute("SELECT count(*) = count(DISTINCT code) FROM marts.meds_codes").fetchone()[0]
    assert codes["SNOMED/444814009"] == "Viral sinusitis (disorder)"
    assert codes["RXNORM/314076"] == "lisinopril 10 MG Oral Tablet"
    assert codes["SNOMED/32485007"] == "visit"  # no display: the CodeableConcept text
    assert codes["MEDS_BIRTH"] == "Birth"
    assert codes["VISIT/inpatient"] == "Start of visit: inpatient"


def test_subjects(con) -> None:
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT patient_id, subject_id, birth_time, death_time, sex FROM marts.subjects"
        ).fetchall()
    }
    assert set(rows) == {A, B, C, D, E, F, G, H, OPEN}
    assert rows[A] == (subject_id(A), ts("1950-01-01 00:00"), ts("2020-02-04 08:00"), "female")
    assert rows[B] == (subject_id(B), ts("1951-01-01 00:00"), ts("2020-03-31 16:00:01"), "male")
    assert rows[H] == (subject_id(H), ts("1980-02-03 00:00"), None, "male")


def test_visits(con) -> None:
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT visit_id, subject_id, visit_type, start_time, end_time FROM marts.visits"
        ).fetchall()
    }
    assert len(rows) == 20
    # The older Synthea class form and the class-with-display form both map to inpatient.
    assert rows["d1"] == (
        subject_id(D),
        "inpatient",
        ts("2020-01-01 00:00"),
        ts("2020-01-08 00:00"),
    )
    assert rows["e1"][1] == "inpatient"
    assert rows["b1"][1] == "emergency"
    assert rows["h1"] == (
        subject_id(H),
        "ambulatory",
        ts("2021-06-01 14:00"),
        ts("2021-06-01 15:00"),
    )
    assert rows["i1"] == (subject_id(OPEN), "inpatient", ts("2022-01-01 00:00"), None)


def test_splits_follow_the_documented_stable_hash(con) -> None:
    rows = con.execute(
        "SELECT s.patient_id, x.split FROM marts.subject_splits x JOIN marts.subjects s "
        "USING (subject_id)"
    ).fetchall()
    assert len(rows) == 9
    assert {pid: split for pid, split in rows} == {pid: expected_split(pid) for pid, _ in rows}


def test_meds_import_on_second_target_gives_the_same_marts(built: dict) -> None:
    proc, results = built["meds_build"]
    assert_build_ok(proc, results, {"warn_unmapped_codes"})
    # No FHIR staging runs when the events come from MEDS.
    assert not [r for r in results if "stg_fhir__" in r["unique_id"]]
    with duckdb.connect(str(built["second"]), read_only=True) as con:
        con.execute(f"ATTACH '{built['db']}' AS fhir (READ_ONLY)")
        tables = ["meds_events", "subjects", "visits"] + [f"labels__{t}" for t in EXPECTED_LABELS]
        for table in tables:
            diff = con.execute(
                f"SELECT count(*) FROM ((SELECT * FROM marts.{table} EXCEPT ALL "
                f"SELECT * FROM fhir.marts.{table}) UNION ALL (SELECT * FROM fhir.marts.{table} "
                f"EXCEPT ALL SELECT * FROM marts.{table}))"
            ).fetchone()[0]
            assert diff == 0, table
        # Splits: the same stable hash, except where the import brought its own split.
        splits = dict(con.execute("SELECT subject_id, split FROM marts.subject_splits").fetchall())
        original = dict(
            con.execute("SELECT subject_id, split FROM fhir.marts.subject_splits").fetchall()
        )
        overridden, imported_split = built["overridden"]
        assert splits.pop(overridden) == imported_split != original.pop(overridden)
        assert splits == original
        # Codes: the same codes; descriptions from the import where it has them.
        codes = {
            code: (description, list(parents))
            for code, description, parents in con.execute(
                "SELECT code, description, parent_codes FROM marts.meds_codes"
            ).fetchall()
        }
        fhir_codes = {
            c for (c,) in con.execute("SELECT code FROM fhir.marts.meds_codes").fetchall()
        }
        assert set(codes) == fhir_codes
        assert codes["LOINC/2160-0"] == ("Creatinine (imported)", ["LOINC/LP1"])
        assert codes["MEDS_DEATH"] == ("Death", [])
