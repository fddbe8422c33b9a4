"""Incremental pulls from the FHIR server: a sensor whose cursor is the last ``transactionTime``.

Bulk Data's ``_since`` asks the server only for resources changed since an instant; the
instant to use is the ``transactionTime`` of the previous export (the server's clock, not
ours). The raw ingestion asset records it in its materialization metadata; on each tick the
sensor moves its cursor to the newest one recorded, asks the server with a cheap search
(``_lastUpdated=ge<cursor>&_summary=count``) whether anything changed since, and only then
requests a run with ``since=<cursor>``. No change, no run, nothing flows downstream. A run still
in flight, or a server that cannot be reached, skips the tick; the next one tries again.
"""

from datetime import datetime

import dagster as dg

from ehrmamba.fhir.bulk_export import DEFAULT_TYPES, BulkExportError, RetryPolicy
from orchestration.assets.ingestion import RAW_FHIR
from orchestration.assets.ingestion_fhir_server import TRANSACTION_TIME_KEY
from orchestration.fhir_server import FhirServerResource

JOB_NAME = "fhir_server_incremental"
RAW_OP_NAME = "raw__fhir_resources"
POLL_INTERVAL_S = 300
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

fhir_server_incremental_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(RAW_FHIR),
    description="Pull what changed on the FHIR server ($export with _since) into the raw layer.",
    executor_def=dg.in_process_executor,
)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def latest_transaction_time(instance: dg.DagsterInstance) -> str | None:
    """The ``transactionTime`` recorded by the newest materialization of the raw layer."""
    event = instance.get_latest_materialization_event(RAW_FHIR)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(TRANSACTION_TIME_KEY)
    return str(value.value) if value is not None else None


def since_run_config(since: str) -> dict:
    return {"ops": {RAW_OP_NAME: {"config": {"since": since}}}}


@dg.sensor(
    job=fhir_server_incremental_job,
    minimum_interval_seconds=POLL_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs an incremental $export (_since the last transactionTime) when the FHIR "
    "server has changes.",
)
def fhir_server_incremental(
    context: dg.SensorEvaluationContext, fhir_server: FhirServerResource
) -> dg.SensorResult:
    cursor = context.cursor or ""
    recorded = latest_transaction_time(context.instance)
    if recorded and (not cursor or _instant(recorded) > _instant(cursor)):
        cursor = recorded
    in_flight = context.instance.get_runs(
        dg.RunsFilter(job_name=JOB_NAME, statuses=_IN_FLIGHT), limit=1
    )
    if in_flight:
        return dg.SensorResult(
            skip_reason=f"run {in_flight[0].run_id} is still pulling", cursor=cursor
        )
    if cursor:
        try:
            with fhir_server.client(retry=RetryPolicy(attempts=2)) as client:
                changed = client.count_changed(cursor, DEFAULT_TYPES)
        except BulkExportError as exc:
            return dg.SensorResult(skip_reason=f"FHIR server not reachable: {exc}", cursor=cursor)
        total = sum(changed.values())
        if total == 0:
            return dg.SensorResult(skip_reason=f"nothing changed since {cursor}", cursor=cursor)
        summary = ", ".join(f"{t} {n}" for t, n in changed.items() if n)
        context.log.info(f"{total} resources changed since {cursor}: {summary}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_config=since_run_config(cursor),
                tags={"ehrmamba/fhir_since": cursor or "full export"},
            )
        ],
        cursor=cursor,
    )


def fhir_server_definitions() -> dg.Definitions:
    """The incremental job, its sensor and the server resource, merged into the platform's
    definitions when ``EHRMAMBA_FHIR_SERVER_URL`` is set."""
    return dg.Definitions(
        jobs=[fhir_server_incremental_job],
        sensors=[fhir_server_incremental],
        resources={"fhir_server": FhirServerResource()},
    )
