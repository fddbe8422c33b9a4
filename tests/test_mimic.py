"""MIMIC-IV on FHIR: the ``mimic`` flavour of the generator through ingestion, dbt and tokenization.

One small generated cohort (the 30-file layout) and two hand-built MIMIC-shaped patients (one
coded in ICD-9, one in ICD-10, with ED and ICU stays ``partOf`` their admissions) are landed with
the real ingestion and built with one real ``dbt build``; the tests then check the round trip
file by file, the codes and their systems in the event table, the folding of ``partOf``
encounters, the condition labels in both ICD versions, and dates in the 2100s through ages, time
gaps and splits.
"""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B import get_fhir_model_class

from ehrmamba.fhir import LANDED_TYPES, ingest
from ehrmamba.synth import mimic_codes as M
from ehrmamba.synth.mimic_writer import _render_chunk, write_mimic_cohort
from ehrmamba.tokenize import (
    GAP_TOKENS,
    TokenizerConfig,
    TokenType,
    fit_vocabulary,
    write_pretraining_sequences,
)
from orchestration.presets import load_preset, preset_names
from tests import fhir_builders as fb
from tests.test_dbt_labels import assert_build_ok, run_dbt, subject_id, ts

SEED = 7
N_PATIENTS = 40
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
MIMIC_TS = "2100-01-01"  # every shifted clinical time is after this


# ------------------------------------------------------------------------------------------------
# Hand-built MIMIC-shaped patients: X coded in ICD-9, Y in ICD-10
# ------------------------------------------------------------------------------------------------
def _enc(eid: str, pid: str, stem: str, start: str, end: str, cls: dict, part_of=None) -> dict:
    res = {
        "resourceType": "Encounter",
        "id": eid,
        "meta": {"profile": [M.profile(M.FILES[stem][1])]},
        "status": "finished",
        "class": cls,
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "308335008"}]}],
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end},
    }
    if part_of:
        res["partOf"] = {"reference": f"Encounter/{part_of}"}
    return res


def _dx(cid: str, pid: str, eid: str, system: str, code: str) -> dict:
    """A MIMIC diagnosis: an encounter diagnosis with no date of its own."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
    }


def handmade(pid: str, icd9: bool) -> list[dict]:
    """Admission 1 (via the ED, with an ICU stay) and, five months later, admission 2 that
    codes hypertension, a lipid disorder and a fluid/electrolyte disorder for the first time."""
    system = M.DIAGNOSIS_ICD9 if icd9 else M.DIAGNOSIS_ICD10
    htn, lipid, fluid, uti = (
        ("4019", "2724", "2761", "5990") if icd9 else ("I10", "E785", "E871", "N390")
    )
    hosp = {"system": M.ADMISSION_CLASS, "code": "EW EMER."}
    p = pid
    return [
        fb.patient(p, birthDate="2090-03-01", gender="male"),
        _enc(
            f"{p}-a1",
            p,
            "MimicEncounter",
            "2150-01-01T10:00:00-05:00",
            "2150-01-05T10:00:00-05:00",
            hosp,
        ),
        _enc(
            f"{p}-a1-ed",
            p,
            "MimicEncounterED",
            "2150-01-01T04:00:00-05:00",
            "2150-01-01T11:00:00-05:00",
            {"system": ACT_CODE, "code": "EMER"},
            f"{p}-a1",
        ),
        _enc(
            f"{p}-a1-icu",
            p,
            "MimicEncounterICU",
            "2150-01-02T00:00:00-05:00",
            "2150-01-03T00:00:00-05:00",
            {"system": ACT_CODE, "code": "ACUTE"},
            f"{p}-a1",
        ),
        {
            "resourceType": "Observation",
            "id": f"{p}-hr",
            "status": "final",
            "code": {"coding": [{"system": M.CHARTEVENTS_D_ITEMS, "code": "220045"}]},
            "subject": {"reference": f"Patient/{p}"},
            "encounter": {"reference": f"Encounter/{p}-a1-icu"},
            "effectiveDateTime": "2150-01-02T01:00:00-05:00",
            "valueQuantity": {"value": 91, "unit": "bpm"},
        },
        _dx(f"{p}-dx-ed", p, f"{p}-a1-ed", system, uti),
        _dx(f"{p}-dx-uti", p, f"{p}-a1", system, uti),
        _enc(
            f"{p}-a2",
            p,
            "MimicEncounter",
            "2150-06-01T10:00:00-05:00",
            "2150-06-03T10:00:00-05:00",
            hosp,
        ),
        _dx(f"{p}-dx-htn", p, f"{p}-a2", system, htn),
        _dx(f"{p}-dx-lipid", p, f"{p}-a2", system, lipid),
        _dx(f"{p}-dx-fluid", p, f"{p}-a2", system, fluid),
    ]


X, Y = "mimic-x-icd9", "mimic-y-icd10"


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("mimic")
    cohort = work / "mimic-fhir"
    summary = write_mimic_cohort(cohort, N_PATIENTS, SEED)
    handmade_dir = work / "handmade"
    handmade_dir.mkdir()
    fb.write_ndjson(handmade_dir / "patients.ndjson", handmade(X, True) + handmade(Y, False))
    db = work / "warehouse.duckdb"
    report = ingest(cohort, db, workers=1)
    extra = ingest(handmade_dir, db, workers=1)
    assert extra.balanced and extra.quarantined == 0, extra.table()
    proc, results = run_dbt(["build"], work / "dbt", {"EHRMAMBA_DUCKDB_PATH": str(db)})
    assert_build_ok(proc, results, allowed_warnings=set())
    return {"summary": summary, "report": report, "db": db, "work": work, "cohort": cohort}


@pytest.fixture(scope="module")
def con(built: dict):
    with duckdb.connect(str(built["db"]), read_only=True) as connection:
        yield connection


def _rows(con, sql: str, params=None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def _read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


# ------------------------------------------------------------------------------------------------
# The layout and the round trip
# ------------------------------------------------------------------------------------------------
def test_writes_exactly_the_mimic_layout(built: dict) -> None:
    summary = built["summary"]
    names = sorted(p.name for p in built["cohort"].iterdir())
    assert names == sorted(f"{stem}.ndjson.gz" for stem in M.FILES)
    assert len(names) == 30
    for path in summary.files:
        stem = path.name.removesuffix(".ndjson.gz")
        resources = _read(path)
        assert len(resources) == summary.file_counts[stem] > 0, stem
        rtype, profile_id = M.FILES[stem]
        url = f"http://mimic.mit.edu/fhir/mimic/StructureDefinition/{profile_id}"
        assert {r["resourceType"] for r in resources} == {rtype}, stem
        assert all(r["meta"]["profile"] == [url] for r in resources), stem
        # R4 valid (the first few of every file)
        for r in resources[:3]:
            get_fhir_model_class(rtype).model_validate(r)
    assert summary.file_counts["MimicPatient"] == N_PATIENTS
    counts = summary.file_counts
    # chart events are by far the largest file, then labs
    ranked = sorted(counts, key=counts.get, reverse=True)
    assert ranked[:2] == ["MimicObservationChartevents", "MimicObservationLabevents"]
    assert counts["MimicObservationChartevents"] > 0.4 * sum(counts.values())


def test_round_trip_exact_per_file_counts_nothing_quarantined(built: dict, con) -> None:
    summary, report = built["summary"], built["report"]
    assert report.balanced and report.quarantined == 0
    assert report.files_read == 30
    per_file = {
        Path(f).name.removesuffix(".ndjson.gz"): (read, landed, quarantined, skipped)
        for f, read, landed, quarantined, skipped in _rows(
            con,
            "SELECT source_file, rows_read, rows_landed, rows_quarantined, rows_skipped "
            "FROM raw.fhir_ingested_files WHERE source_file LIKE '%.ndjson.gz'",
        )
    }
    assert set(per_file) == set(M.FILES)
    for stem, n in summary.file_counts.items():
        landed = M.FILES[stem][0] in LANDED_TYPES
        assert per_file[stem] == (n, n if landed else 0, 0, 0 if landed else n), stem
    assert not _rows(con, "SELECT * FROM raw.fhir_quarantine")
    # every landed resource of a patient file resolved to its patient
    stored = Counter(
        dict(
            _rows(
                con,
                "SELECT resource_type, count(*) FROM raw.fhir_resources "
                "WHERE source_file LIKE '%.ndjson.gz' GROUP BY 1",
            )
        )
    )
    expected = Counter()
    for stem, n in summary.file_counts.items():
        if M.FILES[stem][0] in LANDED_TYPES:
            expected[M.FILES[stem][0]] += n
    assert stored == expected


def test_a_file_larger_than_a_batch_lands_in_several_bounded_batches(
    built: dict, tmp_path: Path
) -> None:
    """MIMIC ships each profile as one file (chart events: GBs): with batches and worker chunks
    of 1 MB, the chart file is merged in several transactions, with the same result."""
    db = tmp_path / "small-batches.duckdb"
    small = ingest(built["cohort"], db, workers=1, batch_bytes=1 << 20, chunk_bytes=1 << 20)
    assert small.balanced and small.quarantined == 0
    assert small.per_type == built["report"].per_type
    chart = built["cohort"] / "MimicObservationChartevents.ndjson.gz"
    assert len(gzip.decompress(chart.read_bytes())) > 4 << 20  # several chunks
    manifest = (
        "SELECT source_file, rows_read, rows_landed, rows_quarantined, rows_skipped "
        "FROM raw.fhir_ingested_files WHERE source_file LIKE '%.ndjson.gz' ORDER BY 1"
    )
    content = "SELECT resource_type, id, content_hash FROM raw.fhir_resources ORDER BY 1, 2"
    with duckdb.connect(str(db), read_only=True) as con_small:
        small_manifest = con_small.execute(manifest).fetchall()
        small_content = con_small.execute(content).fetchall()
    with duckdb.connect(str(built["db"]), read_only=True) as con_one:
        assert small_manifest == con_one.execute(manifest).fetchall()
        one_content = con_one.execute(
            "SELECT resource_type, id, content_hash FROM raw.fhir_resources "
            "WHERE source_file LIKE '%.ndjson.gz' ORDER BY 1, 2"
        ).fetchall()
    assert small_content == one_content


def test_generation_is_deterministic_and_order_independent(tmp_path: Path) -> None:
    one = write_mimic_cohort(tmp_path / "one", 6, SEED)
    again = write_mimic_cohort(tmp_path / "again", 6, SEED)
    for a, b in zip(one.files, again.files, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    # a smaller cohort is the first patients of a larger one
    write_mimic_cohort(tmp_path / "three", 3, SEED)
    ids = [p["id"] for p in _read(tmp_path / "one" / "MimicPatient.ndjson.gz")]
    assert [p["id"] for p in _read(tmp_path / "three" / "MimicPatient.ndjson.gz")] == ids[:3]
    # worker processes render chunks of indices in any order: a patient's bytes do not depend
    # on what was rendered before it (what makes --workers N write the same bytes as 1)
    forward = _render_chunk(SEED, 0, 12)
    backward = _render_chunk(SEED, 6, 12) + _render_chunk(SEED, 0, 6)
    assert sorted(forward) == sorted(backward)


# ------------------------------------------------------------------------------------------------
# Codes keep their systems
# ------------------------------------------------------------------------------------------------
def test_mimic_codes_with_their_systems_in_the_event_table(con) -> None:
    prefixes = dict(
        _rows(con, "SELECT split_part(code, '/', 1), count(*) FROM marts.meds_events GROUP BY 1")
    )
    for prefix in (
        "MIMIC_LAB",
        "MIMIC_CHART",
        "MIMIC_ITEM",
        "MIMIC_MED",
        "MIMIC_ICU_MED",
        "ICD9CM",
        "ICD10CM",
        "ICD10PCS",
        "GSN",
        "LOINC",
    ):
        assert prefixes.get(prefix, 0) > 0, prefix
    assert not [p for p in prefixes if p.startswith(("UNMAPPED", "UNCODED"))]
    # creatinine: d_labitems 50912, in mg/dL, as a lab
    creat = _rows(
        con,
        "SELECT DISTINCT unit, event_type FROM marts.meds_events WHERE code = 'MIMIC_LAB/50912'",
    )
    assert creat == [("mg/dL", "lab")]
    # every ICD-9 diagnosis of the raw layer is an ICD9CM/<code> event of its patient
    raw = _rows(
        con,
        """
        SELECT subject_id, resource ->> '$.code.coding[0].code'
        FROM raw.fhir_resources
        WHERE resource_type = 'Condition'
          AND resource ->> '$.code.coding[0].system' = ?
        """,
        [M.DIAGNOSIS_ICD9],
    )
    assert len(raw) > 10
    events = set(
        _rows(
            con,
            "SELECT s.patient_id, substr(e.code, 8) FROM marts.meds_events e "
            "JOIN marts.subjects s USING (subject_id) WHERE e.code LIKE 'ICD9CM/%'",
        )
    )
    assert set(raw) <= events
    # medications through Medication resources: requests carry no code of their own
    assert _rows(
        con,
        "SELECT count(*) FROM raw.fhir_resources WHERE resource_type = 'MedicationRequest' "
        "AND resource ->> '$.medicationCodeableConcept' IS NOT NULL",
    ) == [(0,)]
    coded = _rows(
        con,
        "SELECT count(*), count(*) FILTER (WHERE code LIKE 'MIMIC_MED/%') FROM marts.meds_events "
        "WHERE event_type = 'medication'",
    )[0]
    assert coded[0] > 0 and coded[0] == coded[1]


# ------------------------------------------------------------------------------------------------
# partOf encounters fold into their hospital visit
# ------------------------------------------------------------------------------------------------
def test_part_of_encounters_are_folded_into_their_hospital_visit(con) -> None:
    visits = {
        v: rest
        for v, *rest in _rows(
            con,
            "SELECT visit_id, visit_type, start_time, end_time FROM marts.visits "
            "WHERE subject_id = ?",
            [subject_id(X)],
        )
    }
    # the ED stay (from 04:00) and the ICU stay are part of admission 1: one visit
    assert visits == {
        f"{X}-a1": ["inpatient", ts("2150-01-01 09:00"), ts("2150-01-05 15:00")],
        f"{X}-a2": ["inpatient", ts("2150-06-01 15:00"), ts("2150-06-03 15:00")],
    }
    a1 = _rows(
        con,
        "SELECT time, code, event_type FROM marts.meds_events WHERE visit_id = ? "
        "ORDER BY time, code",
        [f"{X}-a1"],
    )
    assert a1 == [
        (ts("2150-01-01 09:00"), "ACTCODE/EMER", "encounter_type"),
        (ts("2150-01-01 09:00"), "VISIT/inpatient", "visit_start"),
        (ts("2150-01-01 15:00"), "SNOMED/308335008", "encounter_type"),
        (ts("2150-01-01 16:00"), "ICD9CM/5990", "condition"),  # the ED diagnosis, at the ED end
        (ts("2150-01-02 05:00"), "ACTCODE/ACUTE", "encounter_type"),
        (ts("2150-01-02 06:00"), "MIMIC_CHART/220045", "observation"),
        (ts("2150-01-05 15:00"), "ICD9CM/5990", "condition"),  # billed at discharge
        (ts("2150-01-05 15:00"), "VISIT_END/inpatient", "visit_end"),
    ]
    # generated cohort: no visit for an ICU or ED stay that is part of an admission, and
    # every event of such a stay belongs to the admission's visit
    parts = dict(
        _rows(
            con,
            "SELECT id, regexp_extract(resource ->> '$.partOf.reference', 'Encounter/(.+)', 1) "
            "FROM raw.fhir_resources WHERE resource_type = 'Encounter' "
            "AND resource ->> '$.partOf' IS NOT NULL AND source_file LIKE '%.ndjson.gz'",
        )
    )
    assert len(parts) > 10
    visit_ids = {v for (v,) in _rows(con, "SELECT visit_id FROM marts.visits")}
    assert not set(parts) & visit_ids
    assert set(parts.values()) <= visit_ids
    # every chart event falls in an ICU stay and belongs to that stay's admission
    placed = _rows(
        con,
        """
        WITH icu AS (
            SELECT subject_id AS patient_id,
                regexp_extract(resource ->> '$.partOf.reference', 'Encounter/(.+)', 1) AS parent,
                timezone('UTC', (resource ->> '$.period.start')::TIMESTAMPTZ) AS start_time,
                timezone('UTC', (resource ->> '$.period.end')::TIMESTAMPTZ) AS end_time
            FROM raw.fhir_resources
            WHERE resource_type = 'Encounter' AND source_file LIKE '%MimicEncounterICU%'
        )
        SELECT count(*), count(*) FILTER (WHERE e.visit_id = icu.parent)
        FROM marts.meds_events e
        JOIN marts.subjects s USING (subject_id)
        JOIN icu ON icu.patient_id = s.patient_id
            AND e.time BETWEEN icu.start_time AND icu.end_time
        WHERE e.code LIKE 'MIMIC_CHART/%' AND s.patient_id NOT IN (?, ?)
        """,
        [X, Y],
    )[0]
    n_chart = _rows(
        con,
        "SELECT count(*) FROM marts.meds_events e JOIN marts.subjects s USING (subject_id) "
        "WHERE e.code LIKE 'MIMIC_CHART/%' AND s.patient_id NOT IN (?, ?)",
        [X, Y],
    )[0][0]
    assert placed == (n_chart, n_chart) and n_chart > 1000
    n_visits = _rows(
        con,
        "SELECT count(*) FROM marts.visits v JOIN marts.subjects s USING (subject_id) "
        "WHERE s.patient_id NOT IN (?, ?)",
        [X, Y],
    )[0][0]
    n_top = _rows(
        con,
        "SELECT count(*) FROM raw.fhir_resources WHERE resource_type = 'Encounter' "
        "AND resource ->> '$.partOf' IS NULL AND source_file LIKE '%.ndjson.gz'",
    )[0][0]
    assert n_visits == n_top


# ------------------------------------------------------------------------------------------------
# Condition labels from ICD-9 and ICD-10 alike
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["hypertension_1y", "lipoid_1y", "fluid_electrolyte_1y"])
def test_condition_tasks_label_icd9_and_icd10_alike(con, task: str) -> None:
    got = _rows(
        con,
        f"SELECT subject_id, prediction_time, boolean_value, visit_id FROM marts.labels__{task} "
        "WHERE subject_id IN (?, ?) ORDER BY subject_id, prediction_time",
        [subject_id(X), subject_id(Y)],
    )
    # admission 1 ends 149 days before admission 2 codes the condition (at its discharge):
    # positive; admission 2 is excluded (diagnosed at its end), for either ICD version
    assert sorted(got) == sorted(
        [
            (subject_id(X), ts("2150-01-05 15:00"), True, f"{X}-a1"),
            (subject_id(Y), ts("2150-01-05 15:00"), True, f"{Y}-a1"),
        ]
    )
    # in the generated cohort too, both versions start a condition group
    firsts = {
        code.split("/")[0]
        for (code,) in _rows(
            con,
            "SELECT first_diagnosis_code FROM intermediate.int_condition_group_onsets "
            "WHERE subject_id NOT IN (?, ?)",
            [subject_id(X), subject_id(Y)],
        )
    }
    assert {"ICD9CM", "ICD10CM"} <= firsts


# ------------------------------------------------------------------------------------------------
# 2100s dates everywhere
# ------------------------------------------------------------------------------------------------
def test_dates_after_2100_are_handled_everywhere(built: dict, con) -> None:
    lo, hi = _rows(
        con,
        "SELECT min(time), max(time) FROM marts.meds_events "
        "WHERE event_type NOT IN ('birth', 'demographic')",
    )[0]
    assert ts(MIMIC_TS) < lo and hi < datetime(2262, 1, 1)  # inside pandas' nanosecond range
    # ages: adults at every event, computed across the shifted calendar
    ages = _rows(
        con,
        """
        SELECT min(date_diff('day', s.birth_time, e.time)) / 365.25,
               max(date_diff('day', s.birth_time, e.time)) / 365.25
        FROM marts.meds_events e JOIN marts.subjects s USING (subject_id)
        WHERE e.event_type NOT IN ('birth', 'demographic')
        """,
    )[0]
    assert ages[0] >= 18 and ages[1] < 111
    # splits: every subject has one, by the stable hash
    assert _rows(
        con,
        "SELECT count(*) FROM marts.subjects LEFT JOIN marts.subject_splits USING (subject_id) "
        "WHERE split IS NULL",
    ) == [(0,)]
    # labels: prediction times in the 2100s, the dbt checks on them passed in the build
    assert _rows(
        con,
        "SELECT min(prediction_time) > ?::TIMESTAMP FROM marts.labels__mortality_1m",
        [MIMIC_TS],
    ) == [(True,)]
    # tokenization: ages in years, weeks since the first event and gap tokens between visits
    vocab = fit_vocabulary(con, TokenizerConfig(max_len=4096))
    path = write_pretraining_sequences(con, vocab, built["work"] / "tokens", batch_size=16)
    table = pq.read_table(path).to_pylist()
    assert len(table) == N_PATIENTS + 2
    gap_ids = {vocab.token_to_id[t] for t in GAP_TOKENS}
    n_gaps = 0
    for row in table:
        ttype = np.asarray(row["token_type_ids"])
        ages_y = np.asarray(row["age_years"])[ttype != TokenType.PAD]
        assert ages_y.min() >= 0 and ages_y.max() < 111
        assert np.asarray(row["age_years"])[ttype == TokenType.CONCEPT].min() >= 18
        weeks = np.asarray(row["time_weeks"])
        assert weeks.min() >= 0 and np.all(np.isfinite(weeks))
        n_gaps += sum(t in gap_ids for t in row["input_ids"])
    assert n_gaps > N_PATIENTS
    x = next(r for r in table if r["subject_id"] == subject_id(X))
    x_ages = np.asarray(x["age_years"])[np.asarray(x["token_type_ids"]) == TokenType.CONCEPT]
    first_seen = datetime(2150, 1, 1, 9) - datetime(2090, 3, 1)  # the ED arrival, UTC
    assert x_ages.min() == pytest.approx(first_seen.days / 365.25 + 9 / 24 / 365.25, abs=1e-4)
    assert vocab.token_to_id["[M_4]"] in x["input_ids"]  # admission 2, 4 months later


# ------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------
def test_mimic_iv_paper_preset_is_the_papers_setup_and_a_valid_run_config(
    platform_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "mimic_iv_paper" in preset_names()
    config = load_preset("mimic_iv_paper")
    monkeypatch.setenv("EHRMAMBA_FHIR_SOURCE", str(platform_home / "mimic-iv-fhir"))
    import dagster as dg  # heavy imports: only this test needs them

    from ehrmamba.model import EHRMambaConfig
    from orchestration.definitions import build_definitions

    job = build_definitions().resolve_job_def("ehrmamba_main")
    ops = dg.validate_run_config(job, config)["ops"]  # raises on any unknown or mistyped key
    train = ops["training__pretrained_model"]["config"]
    assert (train["preset"], train["learning_rate"], train["warmup_ratio"]) == ("paper", 5e-5, 0.1)
    model = EHRMambaConfig.preset(train["preset"], vocab_size=100)
    assert (model.hidden_size, model.num_hidden_layers, model.max_seq_length) == (768, 32, 2048)
    assert ops["tokenization__vocabulary"]["config"]["max_len"] == 2048
    assert ops["dbt_models"]["config"]["vars"] == {
        "mortality_horizon_days": "30",
        "los_threshold_days": "7",
        "readmission_horizon_days": "30",
        "condition_horizon_days": "365",
    }
