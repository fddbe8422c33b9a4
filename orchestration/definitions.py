"""The platform's one Dagster ``Definitions``, assembled from per-stage modules."""

from __future__ import annotations

import dagster as dg

from orchestration.assets import ingestion
from orchestration.resources import build_resources

all_assets = dg.load_assets_from_modules([ingestion])
all_checks = dg.load_asset_checks_from_modules([ingestion])

main_job = dg.define_asset_job(
    "ehrmamba_main",
    selection=dg.AssetSelection.all(),
    description="FHIR source to deployable model: every asset of the platform, in order.",
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[main_job],
    resources=build_resources(),
)
