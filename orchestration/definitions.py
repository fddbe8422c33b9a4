"""The platform's one Dagster ``Definitions``, assembled from per-stage modules.

The source of events is configuration: FHIR ingestion by default, or a MEDS dataset when
``EHRMAMBA_MEDS_SOURCE`` is set; everything from the dbt models on is the same graph.
"""

import dagster as dg

from ehrmamba.settings import Settings
from orchestration.assets import (
    evaluation,
    finetuning,
    ingestion,
    meds,
    modeling,
    normalization,
    serving,
    validation,
)
from orchestration.assets.ingestion_fhir_server import raw_fhir_resources_from_server
from orchestration.resources import build_resources
from orchestration.schedules import schedule_definitions
from orchestration.sensors import automation_definitions, fhir_landing_definitions
from orchestration.sensors_fhir_server import fhir_server_definitions


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The graph for the current environment (a MEDS source replaces FHIR ingestion)."""
    settings = settings or Settings.from_env()
    events_source = "meds" if settings.meds_source else "fhir"
    if settings.meds_source:
        source_assets, source_checks = [meds.meds_events_import], []
    else:
        source_assets = [ingestion.raw_fhir_resources]
        source_checks = [ingestion.raw_fhir_resources_contract]
    pull_from_server = bool(settings.fhir_server_url) and not settings.meds_source
    if pull_from_server:  # a live FHIR server ($export) replaces files as the FHIR source
        source_assets = [raw_fhir_resources_from_server]
    main_job = dg.define_asset_job(
        "ehrmamba_main",
        selection=dg.AssetSelection.all(),
        description="FHIR source to deployable model: every asset of the platform, in order.",
        executor_def=dg.in_process_executor,  # one DuckDB writer at a time
    )
    platform = dg.Definitions(
        assets=[
            *source_assets,
            normalization.build_dbt_assets(events_source),
            meds.build_meds_dataset(events_source),
            modeling.vocabulary,
            modeling.pretraining_sequences,
            modeling.pretrained_model,
            finetuning.label_sequences,
            finetuning.finetuned_model,
            finetuning.single_task_models,
            evaluation.model_evaluation,
            evaluation.registered_model,
            serving.bento,
        ],
        asset_checks=[
            *source_checks,
            validation.meds_events_expectations,
            validation.subject_splits_expectations,
            *validation.build_label_checks(events_source),
        ],
        jobs=[main_job],
        resources={**build_resources(settings), "dbt": normalization.build_dbt_resource()},
    )
    automation = [schedule_definitions(), automation_definitions()]
    if pull_from_server:
        return dg.Definitions.merge(platform, fhir_server_definitions(), *automation)
    if not settings.meds_source:  # FHIR files: watch the landing directory
        automation.append(fhir_landing_definitions())
    return dg.Definitions.merge(platform, *automation)


defs = build_definitions()
