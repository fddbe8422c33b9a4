"""MEDS stage: export the event store as a MEDS dataset, or import one instead of FHIR."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from ehrmamba.meds_io import export_meds, import_meds
from orchestration.assets.validation import EVENTS, SPLITS, label_models
from orchestration.policies import FOLLOW_UPSTREAM
from orchestration.resources import PlatformSettings

MEDS_IMPORT = dg.AssetKey(["raw", "meds_events_import"])


def build_meds_dataset(events_source: str = "fhir") -> dg.AssetsDefinition:
    """The MEDS export, downstream of the event store and every task's labels."""

    @dg.asset(
        key=["meds", "dataset"],
        group_name="events",
        kinds={"parquet"},
        deps=[EVENTS, SPLITS, dg.AssetKey(["marts", "meds_codes"])]
        + [dg.AssetKey(["marts", m]) for m in label_models(events_source)],
        automation_condition=FOLLOW_UPSTREAM,
        pool="duckdb_writer",
        description="The event store and task labels as a MEDS dataset directory "
        "(data/*.parquet, metadata/, labels/<task>/), validated against the meds schemas.",
    )
    def meds_dataset(
        context: dg.AssetExecutionContext, duckdb: DuckDBResource, platform: PlatformSettings
    ) -> dg.MaterializeResult:
        settings = platform.settings()
        out = settings.home / "meds"
        with duckdb.get_connection() as con:
            summary = export_meds(
                con, out, dataset_name="ehrmamba", dataset_version=context.run.run_id
            )
        context.log.info(
            f"MEDS dataset at {out}: {summary.events:,} events, {summary.subjects:,} subjects, "
            f"{len(summary.shards)} shards"
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(out.resolve())),
                "events": summary.events,
                "subjects": summary.subjects,
                "codes": summary.codes,
                "shards": len(summary.shards),
                "labels": dg.MetadataValue.json(summary.labels),
            }
        )

    return meds_dataset


@dg.asset(
    key=MEDS_IMPORT,
    group_name="ingestion",
    kinds={"duckdb", "parquet"},
    pool="duckdb_writer",
    description="A MEDS dataset (EHRMAMBA_MEDS_SOURCE) landed as raw.meds_events_import, "
    "the alternative to FHIR ingestion.",
)
def meds_events_import(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, platform: PlatformSettings
) -> dg.MaterializeResult:
    settings = platform.settings()
    if settings.meds_source is None:
        raise dg.Failure("EHRMAMBA_MEDS_SOURCE is not set: there is no MEDS dataset to import")
    with duckdb.get_connection() as con:
        counts = import_meds(con, settings.meds_source)
    context.log.info(f"imported {counts} from {settings.meds_source}")
    return dg.MaterializeResult(
        metadata={"source": dg.MetadataValue.path(str(settings.meds_source)), **counts}
    )
