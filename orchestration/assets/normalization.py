"""Normalization stage: the dbt project (staging ▶ events ▶ labels) as Dagster assets.

dbt tests become asset checks; ``dbt build`` skips what depends on a failed test, and a failed
test fails the step, so nothing downstream in Dagster runs on data that failed.
"""

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, dbt_assets
from dagster_duckdb import DuckDBResource
from pydantic import Field

from orchestration.dbt_project import DBT_PROJECT_DIR, ensure_manifest
from orchestration.policies import DBT_RETRY, FOLLOW_UPSTREAM
from orchestration.resources import PlatformSettings


def _group(props: Mapping[str, Any]) -> str:
    schema = props.get("config", {}).get("schema") or props.get("schema")
    name = props["name"]
    if props["resource_type"] == "seed":
        return "reference_data"
    if name.startswith("labels__"):
        return "labels"
    if schema == "staging":
        return "staging"
    return "events"


class PlatformDbtTranslator(DagsterDbtTranslator):
    """Keys are ``[schema, model]`` (``marts/meds_events``); groups follow the stages."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            schema = (
                dbt_resource_props.get("config", {}).get("schema") or dbt_resource_props["schema"]
            )
            return dg.AssetKey([schema, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return _group(dbt_resource_props)
        return super().get_group_name(dbt_resource_props)

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # models follow their upstream; seeds change only with the code
        return FOLLOW_UPSTREAM if dbt_resource_props["resource_type"] == "model" else None


TRANSLATOR = PlatformDbtTranslator()


# failures that pass on their own: another process holds the DuckDB file
_TRANSIENT = ("Could not set lock on file", "Conflicting lock", "database is locked")


def _build_failure(invocation: DbtCliInvocation) -> dg.Failure:
    """Why ``dbt build`` failed, in words; retried only when the cause is transient."""
    results = invocation.get_artifact("run_results.json").get("results", [])
    failed = [r for r in results if r.get("status") in ("fail", "error")]
    tests = sorted(r["unique_id"].split(".")[2] for r in failed if r["status"] == "fail")
    errors = [
        f"{r['unique_id'].split('.')[2]}: {r.get('message')}"
        for r in failed
        if r["status"] == "error"
    ]
    transient = any(t in str(r.get("message")) for r in failed for t in _TRANSIENT)
    reason = "; ".join(
        part
        for part in (
            f"{len(tests)} blocking dbt test(s) failed: {', '.join(tests)}" if tests else "",
            f"{len(errors)} node(s) errored: {' | '.join(errors)}" if errors else "",
        )
        if part
    )
    error = invocation.get_error()
    return dg.Failure(
        description=f"dbt build failed ({reason or 'see the dbt log'}); what depends on it "
        f"was skipped and nothing after dbt runs.\n\n{error.description if error else ''}",
        metadata={"failed_tests": tests, "errored_nodes": errors, "retryable": transient},
        allow_retries=transient,
    )


class DbtBuildConfig(dg.Config):
    """Launchpad-editable dbt vars (task thresholds, split shares), e.g. ``los_threshold_days``."""

    vars: dict[str, str] = Field(default_factory=dict)


def build_dbt_assets(events_source: str = "fhir") -> dg.AssetsDefinition:
    """The dbt models, tests and seeds of one events source as one Dagster multi-asset."""

    @dbt_assets(
        manifest=ensure_manifest(events_source),
        dagster_dbt_translator=TRANSLATOR,
        pool="duckdb_writer",
        retry_policy=DBT_RETRY,
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        config: DbtBuildConfig,
        dbt: DbtCliResource,
        duckdb: DuckDBResource,
        platform: PlatformSettings,
    ):
        # dbt and the DuckDB resource must write the same file: the resource is the one truth
        os.environ["EHRMAMBA_DUCKDB_PATH"] = str(duckdb.database)
        settings = platform.settings()
        dbt_vars = {**config.vars, "events_source": events_source}
        invocation = dbt.cli(
            ["build", "--vars", json.dumps(dbt_vars)],
            context=context,
            target_path=settings.home.resolve() / "dbt_runs" / context.run.run_id,
            raise_on_error=False,
        )
        yield from invocation.stream()
        if not invocation.is_successful():
            raise _build_failure(invocation)

    return dbt_models


def build_dbt_resource() -> DbtCliResource:
    # the dbt of this interpreter's environment, whether or not the venv is on PATH
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=str(Path(sys.executable).with_name("dbt")),
    )
