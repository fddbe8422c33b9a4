"""Hand-built FHIR R4 resources for tests: small, explicit, and easy to break on purpose."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def patient(pid: str, last_updated: str | None = None, **extra) -> dict:
    res = {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1950-01-02"}
    if last_updated:
        res["meta"] = {"lastUpdated": last_updated}
    res.update(extra)
    return res


def condition(cid: str, subject_ref: str, code: str = "38341003") -> dict:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": subject_ref},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "onsetDateTime": "2010-05-01T10:00:00Z",
    }


def encounter(eid: str, subject_ref: str, r5_class: bool = False) -> dict:
    cls = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": [{"coding": [cls]}] if r5_class else cls,
        "subject": {"reference": subject_ref},
        "period": {"start": "2010-05-01T10:00:00Z", "end": "2010-05-03T10:00:00Z"},
    }


def immunization(iid: str, patient_ref: str) -> dict:
    return {
        "resourceType": "Immunization",
        "id": iid,
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": patient_ref},
        "occurrenceDateTime": "2012-10-01T09:00:00Z",
    }


def transaction_bundle(resources: list[dict]) -> dict:
    """A Synthea-style transaction Bundle: fullUrl ``urn:uuid:<id>`` for every entry."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{r['id']}",
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for r in resources
        ],
    }


def write_json(path: Path, doc, gz: bool = False) -> Path:
    data = json.dumps(doc, indent=1).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_ndjson(path: Path, resources: list[dict | str], gz: bool = False) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in resources]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
