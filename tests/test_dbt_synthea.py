"""The dbt project on the outside reference data (Synthea 2.4, 489 patients): event counts that
match the raw layer resource by resource, every dbt test green, the build time, and the label
counts per task.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from ehrmamba.fhir import ingest
from tests.test_dbt_labels import DBT_PROJECT, assert_build_ok, run_dbt

pytestmark = pytest.mark.slow

TASKS = (
    "mortality_1m",
    "los_1w",
    "readmission_1m",
    "hypertension_1y",
    "fluid_electrolyte_1y",
    "lipoid_1y",
)
BUILD_SECONDS_LIMIT = 120


@pytest.fixture(scope="module")
def synthea_built(synthea_r4: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("dbt_synthea")
    db = work / "warehouse.duckdb"
    report = ingest(synthea_r4, db)
    assert report.balanced and report.quarantined == 0
    started = time.perf_counter()
    proc, results = run_dbt(["build"], work / "dbt", {"EHRMAMBA_DUCKDB_PATH": str(db)})
    seconds = time.perf_counter() - started
    print(f"\ndbt build on synthea-r4: {seconds:.1f} s (subprocess, including dbt start-up)")
    return {"db": db, "proc": proc, "results": results, "seconds": seconds}


@pytest.fixture(scope="module")
def con(synthea_built: dict):
    with duckdb.connect(str(synthea_built["db"]), read_only=True) as connection:
        yield connection


def _raw_resources(con, resource_type: str) -> list[dict]:
    rows = con.execute(
        "SELECT resource FROM raw.fhir_resources WHERE resource_type = ?", [resource_type]
    ).fetchall()
    return [json.loads(r) for (r,) in rows]


def _event_counts(con) -> Counter:
    return Counter(
        dict(
            con.execute("SELECT event_type, count(*) FROM marts.meds_events GROUP BY 1").fetchall()
        )
    )


def test_build_passes_every_test_in_time(synthea_built: dict) -> None:
    results = synthea_built["results"]
    assert_build_ok(synthea_built["proc"], results, allowed_warnings=set())
    n_tests = sum(r["unique_id"].startswith("test.") for r in results)
    n_models = sum(r["unique_id"].startswith("model.") for r in results)
    print(f"\n{n_models} models, {n_tests} tests, all passed in {synthea_built['seconds']:.1f} s")
    assert n_tests > 100
    assert synthea_built["seconds"] < BUILD_SECONDS_LIMIT


def test_event_counts_match_the_raw_layer(con) -> None:
    raw = Counter(
        dict(
            con.execute(
                "SELECT resource_type, count(*) FROM raw.fhir_resources GROUP BY 1"
            ).fetchall()
        )
    )
    events = _event_counts(con)
    codes = Counter(
        dict(
            con.execute(
                "SELECT code, count(*) FROM marts.meds_events "
                "WHERE code IN ('MEDS_BIRTH', 'MEDS_DEATH') GROUP BY 1"
            ).fetchall()
        )
    )
    # Synthea marks nothing entered-in-error, refuted, not-done or cancelled, so every clinical
    # resource becomes exactly one event (one per value, per component for observations).
    assert events["condition"] == raw["Condition"] == 3651
    assert events["procedure"] == raw["Procedure"] == 11167
    assert events["immunization"] == raw["Immunization"] == 5824
    assert events["medication"] == raw["MedicationRequest"] == 3696
    assert events["visit_start"] == events["encounter_type"] == raw["Encounter"] == 14408
    assert events["visit_end"] == raw["Encounter"]  # every Synthea encounter has an end
    assert codes["MEDS_BIRTH"] == events["demographic"] == raw["Patient"] == 489

    patients = _raw_resources(con, "Patient")
    assert codes["MEDS_DEATH"] == sum("deceasedDateTime" in p for p in patients)

    # Observations, counted from the raw JSON: the observation's own value (when it has one, or
    # has no components) plus one per component.
    value_keys = ("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean")
    expected_obs = 0
    for obs in _raw_resources(con, "Observation"):
        components = obs.get("component", [])
        has_value = any(k in obs for k in value_keys)
        expected_obs += len(components) + (1 if has_value or not components else 0)
    assert events["lab"] + events["vital"] + events["observation"] == expected_obs
    assert expected_obs == 70973 - 4538 + 9079  # 4538 panels carry 9079 components
    print("\nevents by type:", dict(sorted(events.items())))


def test_every_event_code_has_a_known_system_and_a_description(con) -> None:
    prefixes = dict(
        con.execute(
            "SELECT split_part(code, '/', 1), count(*) FROM marts.meds_events GROUP BY 1"
        ).fetchall()
    )
    assert not [p for p in prefixes if p.startswith(("UNMAPPED", "UNCODED"))]
    assert set(prefixes) == {
        "MEDS_BIRTH",
        "MEDS_DEATH",
        "GENDER",
        "VISIT",
        "VISIT_END",
        "SNOMED",
        "LOINC",
        "RXNORM",
        "CVX",
    }
    n_codes, n_described = con.execute(
        "SELECT count(*), count(description) FROM marts.meds_codes"
    ).fetchone()
    assert (
        n_codes == con.execute("SELECT count(DISTINCT code) FROM marts.meds_events").fetchone()[0]
    )
    assert n_described == n_codes  # Synthea gives a display for every coding


def test_label_counts_and_prevalence(con, record_property) -> None:
    stats = {}
    for task in TASKS:
        n, positives, subjects = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE boolean_value), count(DISTINCT subject_id) "
            f"FROM marts.labels__{task}"
        ).fetchone()
        stats[task] = {
            "rows": n,
            "positives": positives,
            "prevalence": round(positives / n, 4) if n else None,
            "subjects": subjects,
        }
        record_property(f"labels__{task}", json.dumps(stats[task]))
    print("\nlabels on synthea-r4:")
    for task, s in stats.items():
        print(f"  {task:22s} {s}")

    for task in ("mortality_1m", "readmission_1m", "hypertension_1y", "lipoid_1y"):
        assert stats[task]["rows"] > 0 and stats[task]["positives"] > 0, task
    for task in TASKS:
        assert stats[task]["rows"] > 0, task

    # los_1w: Synthea 2.4 never keeps anyone in hospital for more than 7 days (its longest
    # inpatient encounter here is about 4 days), so every label is negative. The task is well
    # defined on this data (stays of >= 24 h exist), it just has no positive class.
    longest_hours = con.execute(
        "SELECT max(date_diff('second', start_time, end_time)) / 3600 FROM marts.visits "
        "WHERE visit_type = 'inpatient'"
    ).fetchone()[0]
    assert longest_hours < 7 * 24
    assert stats["los_1w"]["positives"] == 0

    # fluid_electrolyte_1y: Synthea 2.4's modules never diagnose a fluid or electrolyte disorder
    # (no hyponatremia, hyperkalemia, dehydration, ... in any SNOMED or ICD code of its
    # Conditions), so there is no onset to predict and every label is negative.
    value_set = {
        (row["code_prefix"], row["code"])
        for row in csv.DictReader((DBT_PROJECT / "seeds" / "condition_value_sets.csv").open())
        if row["task"] == "fluid_electrolyte"
    }
    prefix = {"http://snomed.info/sct": "SNOMED"}
    condition_codes = {
        (prefix.get(c.get("system"), c.get("system")), c.get("code"))
        for res in _raw_resources(con, "Condition")
        for c in res["code"]["coding"]
    }
    assert not (value_set & condition_codes)
    assert stats["fluid_electrolyte_1y"]["positives"] == 0
