"""Validation stage: Great Expectations suites as blocking asset checks on the marts.

A failed check stops every asset downstream of the checked one in the same run (tokenization and
training never see data that failed); its metadata names each failed expectation and how many
rows broke it.
"""

import functools
import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from ehrmamba.validation import (
    SuiteOutcome,
    ValidationConfig,
    label_support,
    validate_events,
    validate_labels,
)
from ehrmamba.validation import validate_splits as run_split_suite
from orchestration.dbt_project import ensure_manifest

EVENTS = dg.AssetKey(["marts", "meds_events"])
SUBJECTS = dg.AssetKey(["marts", "subjects"])
SPLITS = dg.AssetKey(["marts", "subject_splits"])
LAB_RANGES = dg.AssetKey(["reference", "lab_value_ranges"])


def _result(outcome: SuiteOutcome) -> dg.AssetCheckResult:
    failed = {
        o.name: {
            "expectation": o.expectation,
            "failing_rows": o.unexpected_count,
            "rows_checked": o.element_count,
            "observed": o.observed_value if o.unexpected_count is None else None,
            "examples": [str(x) for x in o.examples],
        }
        for o in outcome.failed
    }
    return dg.AssetCheckResult(
        passed=outcome.success,
        description=outcome.summary(),
        metadata={
            "rows": outcome.rows,
            "expectations": len(outcome.outcomes),
            "failed_expectations": len(failed),
            "failures": dg.MetadataValue.json(failed),
            "summary": dg.MetadataValue.md(outcome.summary()),
        },
    )


@dg.asset_check(
    asset=EVENTS,
    additional_deps=[SUBJECTS, LAB_RANGES],
    blocking=True,
    pool="duckdb_writer",
    description="GX: code format, no event before birth or after death, lab values in range.",
)
def meds_events_expectations(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        return _result(validate_events(con, ValidationConfig()))


@dg.asset_check(
    asset=SPLITS,
    blocking=True,
    pool="duckdb_writer",
    description="GX: only train/tuning/held_out, in 80/10/10 proportions within sampling noise.",
)
def subject_splits_expectations(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        return _result(run_split_suite(con, ValidationConfig()))


@functools.cache
def label_models(events_source: str = "fhir") -> list[str]:
    """Task label models, read from the dbt manifest: tasks are defined once, in dbt."""
    manifest = json.loads(ensure_manifest(events_source).read_text())
    return sorted(
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and node["name"].startswith("labels__")
    )


def build_label_checks(events_source: str = "fhir") -> list[dg.AssetChecksDefinition]:
    return [_label_check(m) for m in label_models(events_source)]


def _label_check(model: str) -> dg.AssetChecksDefinition:
    key = dg.AssetKey(["marts", model])

    @dg.asset_check(
        asset=key,
        name=f"{model}_expectations",
        blocking=True,
        pool="duckdb_writer",
        description="GX: labels complete, prevalence within plausible bounds.",
    )
    def _check(duckdb: DuckDBResource) -> dg.AssetCheckResult:
        with duckdb.get_connection() as con:
            result = _result(validate_labels(con, f"marts.{model}", ValidationConfig()))
            n, positives = label_support(con, f"marts.{model}")
        if result.passed and positives == 0:
            # not an error in the data, a task the data cannot support: say so, don't block
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{model}: {n:,} labels, none positive: this data cannot "
                "support the task; training leaves it out",
                metadata={**result.metadata, "labels": n, "positives": 0},
            )
        return dg.AssetCheckResult(
            passed=result.passed,
            description=result.description,
            metadata={**result.metadata, "labels": n, "positives": positives},
        )

    return _check
