"""Ingestion from a live FHIR server: ``$export`` into a landing directory, then land it.

The same asset key as the file-based ingestion (``raw/fhir_resources``), so everything
downstream is the same graph; the definitions pick this one when ``EHRMAMBA_FHIR_SERVER_URL``
is set. Each run pulls into a new directory under ``$EHRMAMBA_HOME/landing/fhir-server/`` and
ingests only that directory. With ``since`` (the previous export's ``transactionTime``, which
the incremental sensor passes) the server sends only what changed, and the merge into the raw
layer adds or updates exactly those resources.
"""

import time
from dataclasses import replace

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from ehrmamba.fhir import Progress, ingest
from ehrmamba.fhir.bulk_export import ExportProgress, ExportRequest, landing_directory
from orchestration.assets.ingestion import RAW_FHIR
from orchestration.fhir_server import FhirServerResource
from orchestration.resources import PlatformSettings

# The materialization metadata key the incremental sensor reads its cursor from.
TRANSACTION_TIME_KEY = "fhir_server_transaction_time"


class FhirServerPullConfig(dg.Config):
    since: str = ""
    """Only resources changed at or after this FHIR instant; empty pulls everything."""
    types: list[str] = Field(default_factory=list)
    """Resource types to export; empty means the types the pipeline lands."""


@dg.asset(
    key=RAW_FHIR,
    group_name="ingestion",
    kinds={"duckdb", "python"},
    pool="duckdb_writer",
    description="Every landed FHIR resource, pulled from the FHIR server with Bulk Data "
    "$export (incrementally with _since); what could not be landed is in raw.fhir_quarantine.",
)
def raw_fhir_resources_from_server(
    context: dg.AssetExecutionContext,
    config: FhirServerPullConfig,
    platform: PlatformSettings,
    duckdb: DuckDBResource,
    fhir_server: FhirServerResource,
) -> dg.MaterializeResult:
    settings = platform.settings()
    request = ExportRequest(since=config.since or None)
    if config.types:
        request = replace(request, types=tuple(config.types))
    directory = landing_directory(settings.fhir_landing_dir)
    last_log = [0.0]

    def log_every_5s(line: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_log[0] > 5:
            last_log[0] = now
            context.log.info(line)

    def on_export(p: ExportProgress) -> None:
        if p.phase == "in-progress":
            log_every_5s(f"$export: server working ({p.message or 'no progress given'})")
        elif p.phase in ("downloading", "complete"):
            log_every_5s(
                f"$export: {p.files_done}/{p.files_total} files, {p.resources_done:,} resources, "
                f"{p.bytes_done / 1e6:.1f} MB",
                force=p.phase == "complete",
            )

    def on_ingest(p: Progress) -> None:
        log_every_5s(f"ingest: {p.files_done}/{p.files_total} files", p.files_done == p.files_total)

    since = config.since or "(full export)"
    context.log.info(f"$export from {fhir_server.base_url()} since {since} into {directory}")
    with fhir_server.client() as client:
        result = client.export(directory, request, progress=on_export)
    for message in result.messages:
        context.log.warning(f"FHIR server: {message}")
    with duckdb.get_connection() as con:
        report = ingest(result.directory, con, progress=on_ingest, spill_dir=settings.home)
        total_rows, patients = con.execute(
            "SELECT count(*), count(DISTINCT subject_id) FROM raw.fhir_resources"
        ).fetchone()
    context.log.info(report.summary())
    per_type = {
        name: {
            "exported": result.counts.get(name, 0),
            "new": c.inserted,
            "updated": c.updated,
            "quarantined": c.quarantined,
            "skipped": c.skipped,
        }
        for name, c in sorted(report.per_type.items())
    }
    return dg.MaterializeResult(
        metadata={
            TRANSACTION_TIME_KEY: result.transaction_time,
            "since": since,
            "export_request": result.request,
            "landing_dir": dg.MetadataValue.path(str(result.directory)),
            "export_resources": result.resources,
            "export_megabytes": round(result.bytes / 1e6, 2),
            "export_seconds": round(result.seconds, 2),
            "server_messages": dg.MetadataValue.json(result.messages),
            "rows_read": report.read,
            "rows_landed": report.landed,
            "rows_new": report.inserted,
            "rows_updated": report.updated,
            "rows_quarantined": report.quarantined,
            "rows_skipped": report.skipped,
            "accounting_balanced": report.balanced,
            "per_type": dg.MetadataValue.json(per_type),
            "per_type_table": dg.MetadataValue.md("```\n" + report.table() + "\n```"),
            "table_rows": total_rows,
            "patients": patients,
            "dagster/row_count": total_rows,
        }
    )
