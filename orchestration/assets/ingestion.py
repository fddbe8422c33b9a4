"""Ingestion stage: FHIR files (or the synthetic default) into DuckDB ``raw.fhir_resources``."""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource

from ehrmamba.data_source import resolve_fhir_source
from ehrmamba.fhir import Progress, ingest
from orchestration.resources import PlatformSettings

RAW_FHIR = dg.AssetKey(["raw", "fhir_resources"])


class IngestConfig(dg.Config):
    force: bool = False
    """Re-read files the manifest says are unchanged (the merge still adds nothing twice)."""


@dg.asset(
    key=RAW_FHIR,
    group_name="ingestion",
    kinds={"duckdb", "python"},
    pool="duckdb_writer",
    description="Every landed FHIR resource, one row per (resource_type, id); "
    "what could not be landed is in raw.fhir_quarantine.",
)
def raw_fhir_resources(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    platform: PlatformSettings,
    duckdb: DuckDBResource,
) -> dg.MaterializeResult:
    settings = platform.settings()
    source = resolve_fhir_source(settings, progress=True)
    context.log.info(f"ingesting FHIR from {source}")
    last_log = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last_log[0] > 5 or p.files_done == p.files_total:
            last_log[0] = now
            context.log.info(
                f"ingest: {p.files_done}/{p.files_total} files, "
                f"{p.bytes_done / 1e6:.0f}/{p.bytes_total / 1e6:.0f} MB, "
                f"{p.resources_read:,} resources"
            )

    with duckdb.get_connection() as con:
        report = ingest(
            source,
            con,
            force=config.force,
            progress=on_progress,
            spill_dir=settings.home,
        )
        totals = con.execute(
            "SELECT count(*), count(DISTINCT subject_id) FROM raw.fhir_resources"
        ).fetchone()
        quarantine_total = con.execute("SELECT count(*) FROM raw.fhir_quarantine").fetchone()[0]
    context.log.info(report.summary())
    per_type = {
        name: {
            "read": c.read,
            "landed": c.landed,
            "new": c.inserted,
            "updated": c.updated,
            "quarantined": c.quarantined,
            "skipped": c.skipped,
        }
        for name, c in sorted(report.per_type.items())
    }
    return dg.MaterializeResult(
        metadata={
            "source": dg.MetadataValue.path(str(source)),
            "files_read": report.files_read,
            "files_unchanged": report.files_unchanged,
            "rows_read": report.read,
            "rows_landed": report.landed,
            "rows_new": report.inserted,
            "rows_updated": report.updated,
            "rows_quarantined": report.quarantined,
            "rows_skipped": report.skipped,
            "accounting_balanced": report.balanced,
            "per_type": dg.MetadataValue.json(per_type),
            "per_type_table": dg.MetadataValue.md("```\n" + report.table() + "\n```"),
            "table_rows": totals[0],
            "patients": totals[1],
            "quarantine_rows": quarantine_total,
            "seconds": round(report.seconds, 2),
            "dagster/row_count": totals[0],
        }
    )


@dg.asset_check(
    asset=RAW_FHIR,
    blocking=True,
    pool="duckdb_writer",
    description="One row per (resource_type, id), "
    "every non-Patient resource has a subject, rows read balance.",
)
def raw_fhir_resources_contract(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        duplicates = con.execute(
            "SELECT count(*) FROM (SELECT resource_type, id FROM raw.fhir_resources "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        no_subject = con.execute(
            "SELECT count(*) FROM raw.fhir_resources "
            "WHERE subject_id IS NULL AND resource_type NOT IN ('Patient', 'Medication')"
        ).fetchone()[0]
        unbalanced = con.execute(
            "SELECT count(*) FROM raw.fhir_ingested_files "
            "WHERE rows_read <> rows_landed + rows_quarantined + rows_skipped"
        ).fetchone()[0]
    problems = [
        f"{n:,} {what}"
        for n, what in (
            (duplicates, "duplicate (resource_type, id) key(s)"),
            (no_subject, "resource(s) without a subject"),
            (unbalanced, "file(s) whose rows read do not balance"),
        )
        if n
    ]
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or "one row per key, every resource has its subject",
        metadata={
            "duplicate_keys": duplicates,
            "resources_without_subject": no_subject,
            "files_unbalanced": unbalanced,
        },
    )
