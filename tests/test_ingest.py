"""FHIR ingestion into DuckDB on real files: the reference data, malformed input, re-ingestion."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from ehrmamba.fhir import LANDED_TYPES, ingest
from tests import fhir_builders as fb


def _independent_counts(root: Path) -> Counter:
    """Count resources per type with nothing but gzip + json, the way a reviewer would."""
    counts: Counter = Counter()
    for path in sorted(root.iterdir()):
        opener = gzip.open if path.name.endswith(".gz") else open
        if path.name.startswith("log."):
            continue
        with opener(path, "rt", encoding="utf-8") as fh:
            if ".ndjson" in path.name:
                for line in fh:
                    if line.strip():
                        counts[json.loads(line)["resourceType"]] += 1
            else:
                doc = json.load(fh)
                for entry in doc.get("entry", []):
                    counts[entry["resource"]["resourceType"]] += 1
    return counts


def _table_counts(db: Path) -> Counter:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT resource_type, count(*) FROM raw.fhir_resources GROUP BY 1"
        ).fetchall()
    return Counter(dict(rows))


def _quarantine(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT regexp_extract(source_file, '[^/]+$'), position, resource_type, resource_id, "
            "reason FROM raw.fhir_quarantine ORDER BY 1, 2"
        ).fetchall()


@pytest.mark.slow
def test_synthea_bundles_land_exactly(synthea_r4: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    report = ingest(synthea_r4, db)
    expected = _independent_counts(synthea_r4)

    assert report.balanced
    assert report.read == sum(expected.values()) == 152_468
    assert report.quarantined == 0
    landed_expected = {t: n for t, n in expected.items() if t in LANDED_TYPES}
    assert _table_counts(db) == landed_expected
    assert landed_expected["Observation"] == 70_973
    assert landed_expected["Patient"] == 489
    assert {t: c.skipped for t, c in report.per_type.items() if c.skipped} == {
        t: n for t, n in expected.items() if t not in LANDED_TYPES
    }
    with duckdb.connect(str(db), read_only=True) as con:
        # every clinical resource resolved its urn:uuid reference to a landed patient
        orphans = con.execute(
            "SELECT count(*) FROM raw.fhir_resources r WHERE resource_type <> 'Patient' AND "
            "subject_id NOT IN (SELECT id FROM raw.fhir_resources WHERE resource_type='Patient')"
        ).fetchone()[0]
        assert orphans == 0
        assert (
            con.execute(
                "SELECT count(*) FROM (SELECT resource_type, id FROM raw.fhir_resources "
                "GROUP BY ALL HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )


def test_bulk_ndjson_lands_exactly(bulk_ndjson_10: Path, tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    report = ingest(bulk_ndjson_10, db)
    expected = _independent_counts(bulk_ndjson_10)

    assert report.balanced
    assert report.quarantined == 0
    assert report.read == sum(expected.values())
    assert _table_counts(db) == {t: n for t, n in expected.items() if t in LANDED_TYPES}
    assert report.files_ignored == [str(bulk_ndjson_10 / "log.ndjson.gz")]
    with duckdb.connect(str(db), read_only=True) as con:
        patients = con.execute(
            "SELECT count(DISTINCT subject_id) FROM raw.fhir_resources"
        ).fetchone()[0]
    assert patients == 13


def _malformed_dir(root: Path) -> Path:
    src = root / "malformed"
    src.mkdir()
    good = [fb.patient("p1"), fb.condition("c1", "urn:uuid:p1"), fb.condition("c2", "urn:uuid:p1")]
    # truncated: cut the pretty-printed Bundle inside its third entry
    text = json.dumps(fb.transaction_bundle(good), indent=1)
    cut = text.index('"c2"')
    (src / "truncated.json").write_text(text[:cut])
    # a Bundle with broken entries among good ones
    broken = fb.transaction_bundle([fb.patient("p2"), fb.condition("c3", "urn:uuid:p2")])
    broken["entry"] += [
        {"fullUrl": "urn:uuid:x1", "resource": "not an object"},
        {"fullUrl": "urn:uuid:x2"},
        {"fullUrl": "urn:uuid:x3", "resource": {"id": "x3", "subject": {"reference": "x"}}},
        {"fullUrl": "urn:uuid:c4", "resource": fb.condition("c4", "urn:uuid:nobody")},
        {"resource": {k: v for k, v in fb.condition("zz", "urn:uuid:p2").items() if k != "id"}},
        {"resource": {"resourceType": "Claim", "id": "claim1"}},
    ]
    fb.write_json(src / "broken_entry.json.gz", broken, gz=True)
    # R5-only shapes of fields the pipeline reads
    fb.write_ndjson(
        src / "Encounter.r5.ndjson",
        [fb.encounter("e1", "Patient/p3"), fb.encounter("e2", "Patient/p3", r5_class=True)],
    )
    # NDJSON: a resource without id, a truncated line, a line that is not an object
    fb.write_ndjson(
        src / "Condition.000.ndjson.gz",
        [
            fb.condition("c5", "Patient/p3"),
            {k: v for k, v in fb.condition("c6", "Patient/p3").items() if k != "id"},
            json.dumps(fb.condition("c7", "Patient/p3"))[:40],
            "[1, 2, 3]",
            fb.immunization("i1", "Patient/p3"),
        ],
        gz=True,
    )
    fb.write_ndjson(src / "Patient.000.ndjson", [fb.patient("p3")])
    (src / "empty.json").write_bytes(b"")
    (src / "binary.json").write_bytes(bytes(range(256)) * 4)
    (src / "notgzip.ndjson.gz").write_bytes(b"this is not gzip")
    (src / "README.txt").write_text("not FHIR, ignored by name")
    return src


def test_malformed_inputs_are_quarantined_and_good_rows_land(tmp_path: Path) -> None:
    src = _malformed_dir(tmp_path)
    db = tmp_path / "w.duckdb"
    report = ingest(src, db, workers=2)

    assert report.balanced
    assert report.files_ignored == [str(src / "README.txt")]
    assert _table_counts(db) == {"Patient": 3, "Condition": 3, "Encounter": 1, "Immunization": 1}
    quarantine = _quarantine(db)
    reasons = {(f, pos): reason for f, pos, _t, _id, reason in quarantine}
    assert len(quarantine) == 13 == report.quarantined

    truncated = reasons[("truncated.json", "entry[2]")]
    assert truncated.startswith("invalid JSON at line")
    assert "the 2 entries before it were recovered" in truncated
    assert reasons[("broken_entry.json.gz", "entry[2]")] == (
        "not a FHIR resource: a JSON str, not an object"
    )
    assert reasons[("broken_entry.json.gz", "entry[3]")] == "Bundle entry has no resource"
    assert reasons[("broken_entry.json.gz", "entry[4]")] == "not a FHIR resource: no resourceType"
    assert reasons[("broken_entry.json.gz", "entry[5]")] == (
        "subject reference urn:uuid:nobody does not resolve to a Patient"
    )
    assert reasons[("broken_entry.json.gz", "entry[6]")] == "missing id"
    assert reasons[("Encounter.r5.ndjson", "line 2")].startswith(
        "FHIR R5 shape, not R4: Encounter.class is a list"
    )
    assert reasons[("Condition.000.ndjson.gz", "line 2")] == "missing id"
    assert reasons[("Condition.000.ndjson.gz", "line 3")].startswith("invalid JSON")
    assert reasons[("Condition.000.ndjson.gz", "line 4")] == (
        "not a FHIR resource: a JSON array, not an object"
    )
    assert reasons[("empty.json", "file")] == "empty file"
    assert reasons[("binary.json", "file")].startswith("not UTF-8 text")
    assert reasons[("notgzip.ndjson.gz", "file")].startswith("cannot read file")
    # the Claim in the broken bundle is read and skipped, not quarantined
    assert report.per_type["Claim"].skipped == 1
    # the quarantine says which resource it was when it knows
    by_pos = {(f, pos): (t, rid) for f, pos, t, rid, _r in quarantine}
    assert by_pos[("broken_entry.json.gz", "entry[5]")] == ("Condition", "c4")
    assert by_pos[("Encounter.r5.ndjson", "line 2")] == ("Encounter", "e2")


def test_reingestion_adds_nothing_and_newer_versions_replace(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    db = tmp_path / "w.duckdb"
    fb.write_ndjson(src / "Patient.000.ndjson", [fb.patient("p1", "2024-01-01T00:00:00Z")])
    fb.write_json(
        src / "b.json", fb.transaction_bundle([fb.patient("p2"), fb.condition("c1", "urn:uuid:p2")])
    )

    first = ingest(src, db)
    assert (first.inserted, first.updated) == (3, 0)
    again = ingest(src, db)
    assert (again.files_read, again.files_unchanged, again.read) == (0, 2, 0)
    forced = ingest(src, db, force=True)
    assert (forced.read, forced.landed, forced.inserted, forced.updated) == (3, 3, 0, 0)
    assert sum(_table_counts(db).values()) == 3

    # a newer version of p1 replaces the older one
    newer = fb.patient("p1", "2024-06-01T00:00:00Z", gender="male")
    fb.write_ndjson(src / "Patient.000.ndjson", [newer])
    os.utime(src / "Patient.000.ndjson", ns=(1, 1))  # a different mtime, as an edit would give
    update = ingest(src, db)
    assert (update.files_read, update.inserted, update.updated) == (1, 0, 1)
    # an older version arriving later does not win
    fb.write_ndjson(src / "Patient.001.ndjson", [fb.patient("p1", "2023-01-01T00:00:00Z")])
    stale = ingest(src, db)
    assert (stale.inserted, stale.updated, stale.landed) == (0, 0, 1)
    with duckdb.connect(str(db), read_only=True) as con:
        gender, updated_at, n = con.execute(
            "SELECT resource->>'gender', last_updated, count(*) OVER () FROM raw.fhir_resources "
            "WHERE resource_type = 'Patient' AND id = 'p1'"
        ).fetchone()
        assert (gender, n) == ("male", 1)
        assert updated_at.year == 2024 and updated_at.month == 6
        assert con.execute("SELECT count(*) FROM raw.fhir_resources").fetchone()[0] == 3


def test_subject_references_resolve_in_every_form(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fb.write_json(
        src / "bundle.json",
        fb.transaction_bundle([fb.patient("pa"), fb.immunization("i1", "urn:uuid:pa")]),
    )
    fb.write_ndjson(
        src / "Condition.ndjson",
        [
            fb.condition("c1", "Patient/pb"),
            fb.condition("c2", "https://fhir.example.org/r4/Patient/pc"),
            fb.condition("c3", "Patient/pd/_history/2"),
        ],
    )
    db = tmp_path / "w.duckdb"
    report = ingest(src, db, workers=1)
    assert report.quarantined == 0
    with duckdb.connect(str(db), read_only=True) as con:
        subjects = dict(con.execute("SELECT id, subject_id FROM raw.fhir_resources").fetchall())
    assert subjects == {"pa": "pa", "i1": "pa", "c1": "pb", "c2": "pc", "c3": "pd"}


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(tmp_path / "nowhere", tmp_path / "w.duckdb")


@pytest.mark.parametrize("fmt", ["bundle", "ndjson"])
def test_synthetic_cohort_lands_without_quarantine(fmt: str, tmp_path: Path) -> None:
    from ehrmamba.synth import write_cohort

    summary = write_cohort(tmp_path / "cohort", 25, seed=7, fmt=fmt)
    db = tmp_path / "w.duckdb"
    report = ingest(tmp_path / "cohort", db)
    assert report.balanced
    assert report.quarantined == 0 and report.skipped == 0
    assert _table_counts(db) == summary.resource_counts
    with duckdb.connect(str(db), read_only=True) as con:
        assert (
            con.execute("SELECT count(DISTINCT subject_id) FROM raw.fhir_resources").fetchone()[0]
            == 25
        )


@pytest.mark.parametrize("layout", ["ndjson", "bundle"])
def test_a_number_beyond_64_bits_lands_as_a_float(layout: str, tmp_path: Path) -> None:
    """Valid JSON that simdjson refuses (an integer beyond 64 bits) still lands."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "valueQuantity": {"value": 12345678901234567890123, "unit": "mg/dL"},
    }
    src = tmp_path / "src"
    src.mkdir()
    if layout == "ndjson":
        text = "\n".join(json.dumps(r) for r in (patient, observation)) + "\n"
        (src / "mixed.ndjson").write_text(text)
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in (patient, observation)],
        }
        (src / "bundle.json").write_text(json.dumps(bundle))
    db = tmp_path / "w.duckdb"
    report = ingest(src, db, workers=1)
    assert report.quarantined == 0
    assert _table_counts(db) == {"Patient": 1, "Observation": 1}
    with duckdb.connect(str(db), read_only=True) as con:
        value = con.execute(
            "SELECT resource->>'$.valueQuantity.value' FROM raw.fhir_resources "
            "WHERE resource_type = 'Observation'"
        ).fetchone()[0]
    assert float(value) == pytest.approx(1.2345678901234568e22)
