"""Automation: the weekly retraining schedule, the FHIR landing sensor, eager conditions, and a
blocking check that stops a run. Real Definitions, real DuckDB, real Dagster evaluation."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from orchestration.assets.ingestion import RAW_FHIR, raw_fhir_resources
from orchestration.resources import PlatformSettings
from orchestration.schedules import RETRAINING_JOB, weekly_retraining
from orchestration.sensors import REFRESH_JOB, SETTLE_SECONDS, decode_cursor, fhir_landing
from tests import fhir_builders as fb

TRAINING = dg.AssetKey(["training", "pretrained_model"])


def _age(path: Path, seconds: float) -> None:
    """Date a file back, as if it landed ``seconds`` ago (the sensor waits for files to settle)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _landing(root: Path) -> Path:
    """Three NDJSON files of 5 patients: patients, encounters, conditions."""
    root.mkdir()
    pids = [f"p{i}" for i in range(5)]
    fb.write_ndjson(root / "Patient.ndjson", [fb.patient(p) for p in pids])
    fb.write_ndjson(
        root / "Encounter.ndjson", [fb.encounter(f"e-{p}", f"Patient/{p}") for p in pids]
    )
    fb.write_ndjson(
        root / "Condition.ndjson", [fb.condition(f"c-{p}", f"Patient/{p}") for p in pids]
    )
    for path in root.iterdir():
        _age(path, 600)
    return root


@pytest.fixture
def defs(platform_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("EHRMAMBA_FHIR_SOURCE", str(_landing(tmp_path / "landing")))
    monkeypatch.delenv("EHRMAMBA_FHIR_SERVER_URL", raising=False)
    from orchestration.definitions import build_definitions

    return build_definitions()


def _job_keys(defs: dg.Definitions, job: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(job).asset_layer.selected_asset_keys)


def test_weekly_schedule_retrains_the_training_assets_and_everything_downstream(defs) -> None:
    schedule = defs.get_schedule_def("weekly_retraining")
    assert schedule.cron_schedule == "0 3 * * 0"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == RETRAINING_JOB

    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    )
    [request] = weekly_retraining.evaluate_tick(context).run_requests
    assert request.run_key == "retraining-2026-W48"
    assert request.tags["ehrmamba/trigger"] == "weekly_retraining"
    training_config = request.run_config["ops"]["training__pretrained_model"]["config"]
    assert training_config["preset"] == "small"
    # the run config is valid for the job the schedule targets
    job = defs.resolve_job_def(RETRAINING_JOB)
    assert dg.validate_run_config(job, request.run_config)

    graph = defs.resolve_asset_graph()
    training = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "training"}
    assert TRAINING in training
    expected = training | {
        k for k in graph.get_all_asset_keys() if any(_descends_from(graph, k, t) for t in training)
    }
    assert _job_keys(defs, RETRAINING_JOB) == expected
    # retraining starts from the materialized sequences: nothing upstream of training re-runs
    assert not {RAW_FHIR, dg.AssetKey(["tokenization", "pretraining_sequences"])} & expected


def _descends_from(graph, key: dg.AssetKey, ancestor: dg.AssetKey) -> bool:
    todo, seen = list(graph.get(key).parent_keys), set()
    while todo:
        parent = todo.pop()
        if parent == ancestor:
            return True
        if parent not in seen:
            seen.add(parent)
            todo.extend(graph.get(parent).parent_keys)
    return False


def test_landing_sensor_job_is_ingestion_and_only_what_depends_on_it(defs) -> None:
    keys = _job_keys(defs, REFRESH_JOB)
    graph = defs.resolve_asset_graph()
    assert RAW_FHIR in keys
    assert all(k == RAW_FHIR or _descends_from(graph, k, RAW_FHIR) for k in keys)
    everything_downstream = {
        k for k in graph.get_all_asset_keys() if _descends_from(graph, k, RAW_FHIR)
    }
    assert keys == {RAW_FHIR} | everything_downstream
    assert TRAINING in keys
    # the reference seeds do not depend on FHIR: a new file does not rebuild them
    assert dg.AssetKey(["reference", "lab_value_ranges"]) not in keys
    assert defs.get_sensor_def("fhir_landing").job_name == REFRESH_JOB


def test_a_changed_file_triggers_one_run_and_ingestion_lands_only_that_file(
    defs, platform_home: Path
) -> None:
    source = Path(os.environ["EHRMAMBA_FHIR_SOURCE"])
    resources = {
        "platform": PlatformSettings(),
        "duckdb": DuckDBResource(database=str(platform_home / "warehouse.duckdb")),
    }

    def tick(cursor: str | None):
        context = dg.build_sensor_context(cursor=cursor, resources=resources)
        return fhir_landing(context), context

    # first tick: every file is new
    result, _ = tick(None)
    [first] = result.run_requests
    assert first.tags["ehrmamba/new_files"] == "3"
    assert first.tags["ehrmamba/changed_files"] == "0"
    cursor = result.cursor
    assert sorted(Path(p).name for p in decode_cursor(cursor)) == [
        "Condition.ndjson",
        "Encounter.ndjson",
        "Patient.ndjson",
    ]
    landed = dg.materialize([raw_fhir_resources], resources=resources)
    [mat] = landed.asset_materializations_for_node("raw__fhir_resources")
    assert (mat.metadata["files_read"].value, mat.metadata["rows_new"].value) == (3, 15)

    # nothing changed: no run
    result, _ = tick(cursor)
    assert not result.run_requests
    assert result.skip_reason.skip_message == "3 FHIR file(s), none new or changed"

    # one file gains a condition; another file is still being written
    conditions = source / "Condition.ndjson"
    fb.write_ndjson(
        conditions,
        [fb.condition(f"c-p{i}", f"Patient/p{i}") for i in range(5)]
        + [fb.condition("c-new", "Patient/p0", code="59621000")],
    )
    _age(conditions, 120)
    fb.write_ndjson(source / "Immunization.ndjson", [fb.immunization("i-0", "Patient/p1")])
    result, _ = tick(cursor)
    [second] = result.run_requests
    assert second.tags["ehrmamba/changed_files"] == "1"
    assert second.tags["ehrmamba/new_files"] == "0"
    assert second.run_key != first.run_key
    cursor = result.cursor
    # the same change set is never requested twice, and the half-written file waits
    result, _ = tick(cursor)
    assert not result.run_requests
    assert "1 file(s) still being written" in result.skip_reason.skip_message

    # ingestion reads only the changed file and lands only its new resource
    again = dg.materialize([raw_fhir_resources], resources=resources)
    [mat] = again.asset_materializations_for_node("raw__fhir_resources")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["files_read"] == 2  # the changed file, and the new one (settling is the sensor's)
    assert meta["files_unchanged"] == 2
    assert meta["rows_read"] == 6 + 1
    assert meta["rows_new"] == 2
    assert meta["rows_updated"] == 0
    with duckdb.connect(str(platform_home / "warehouse.duckdb"), read_only=True) as con:
        per_file = dict(
            con.execute(
                "SELECT regexp_extract(source_file, '[^/]+$'), count(*) FROM raw.fhir_resources "
                "GROUP BY 1"
            ).fetchall()
        )
    assert per_file == {
        "Patient.ndjson": 5,
        "Encounter.ndjson": 5,
        "Condition.ndjson": 6,
        "Immunization.ndjson": 1,
    }

    # once settled, the new file is a new change set
    _age(source / "Immunization.ndjson", SETTLE_SECONDS + 5)
    result, _ = tick(cursor)
    [third] = result.run_requests
    assert third.tags["ehrmamba/new_files"] == "1"


def test_derived_assets_follow_their_upstream_but_training_waits_for_its_schedule(defs) -> None:
    """Eager conditions, evaluated by Dagster: a new raw layer pulls the dbt models after it,
    level by level, then the export and the tokenizer; training is never requested."""
    instance = dg.DagsterInstance.ephemeral()
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0  # everything is up to date

    instance.report_runless_asset_event(dg.AssetMaterialization(RAW_FHIR))
    requested_ever: set[dg.AssetKey] = set()
    cursor = result.cursor
    for _level in range(12):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        requested = {k for k in graph.get_all_asset_keys() if result.get_num_requested(k)}
        if not requested:
            break
        # what was requested runs; the next evaluation sees it updated
        assert not requested & requested_ever
        requested_ever |= requested
        for key in requested:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
    staging = {k for k in graph.get_all_asset_keys() if k.path[0] == "staging"}
    assert staging <= requested_ever
    assert {
        dg.AssetKey(["marts", "meds_events"]),
        dg.AssetKey(["meds", "dataset"]),
        dg.AssetKey(["tokenization", "vocabulary"]),
        dg.AssetKey(["tokenization", "pretraining_sequences"]),
    } <= requested_ever
    assert TRAINING not in requested_ever
    assert dg.AssetKey(["reference", "lab_value_ranges"]) not in requested_ever


def test_a_failed_blocking_check_stops_the_run_and_says_why(defs, platform_home: Path) -> None:
    """The raw contract fails (resources without a subject): the refresh run stops at
    ingestion, with the check and its numbers in the failure, and nothing downstream runs."""
    instance = dg.DagsterInstance.ephemeral()
    db = platform_home / "warehouse.duckdb"
    resources = {"platform": PlatformSettings(), "duckdb": DuckDBResource(database=str(db))}
    assert dg.materialize([raw_fhir_resources], resources=resources).success
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE raw.fhir_resources SET subject_id = NULL WHERE resource_type = 'Condition'"
        )
    result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "raw_fhir_resources_contract"
    assert not check.passed
    assert check.metadata["resources_without_subject"].value == 5
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {RAW_FHIR}  # landed, then stopped before dbt
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "raw__fhir_resources_raw_fhir_resources_contract"
    assert failure.step_failure_data.error.message == (
        "dagster._core.errors.DagsterAssetCheckFailedError: "
        "1 blocking asset check failed with ERROR severity:\n"
        "raw/fhir_resources: raw_fhir_resources_contract\n"
    )
    assert check.description == "5 resource(s) without a subject"
