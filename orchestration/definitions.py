"""The platform's one Dagster ``Definitions``, assembled from per-stage modules.

The source of events is configuration: FHIR ingestion by default, or a MEDS dataset when
``EHRMAMBA_MEDS_SOURCE`` is set; everything from the dbt models on is the same graph.
"""

import dagster as dg

from ehrmamba.settings import Settings
from orchestration.assets import ingestion, meds, normalization, validation
from orchestration.resources import build_resources

settings = Settings.from_env()
source_assets = (
    [meds.meds_events_import] if settings.meds_source else [ingestion.raw_fhir_resources]
)
source_checks = [] if settings.meds_source else [ingestion.raw_fhir_resources_contract]

main_job = dg.define_asset_job(
    "ehrmamba_main",
    selection=dg.AssetSelection.all(),
    description="FHIR source to deployable model: every asset of the platform, in order.",
    executor_def=dg.in_process_executor,  # one DuckDB writer at a time
)

defs = dg.Definitions(
    assets=[*source_assets, normalization.dbt_models, meds.meds_dataset],
    asset_checks=[
        *source_checks,
        validation.meds_events_expectations,
        validation.subject_splits_expectations,
        *validation.label_checks,
    ],
    jobs=[main_job],
    resources={**build_resources(), "dbt": normalization.build_dbt_resource()},
)
