"""Dagster resources, all configured from the one settings object (``EHRMAMBA_*`` env vars)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from ehrmamba.settings import Settings


class PlatformSettings(ConfigurableResource):
    """Exposes :class:`ehrmamba.settings.Settings` to assets; empty fields fall back to the env."""

    home: str = ""
    fhir_source: str = ""

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home:
            settings = settings.with_home(self.home)
        if self.fhir_source:
            settings = replace(settings, fhir_source=Path(self.fhir_source))
        return settings


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or Settings.from_env()
    settings.ensure_dirs()
    return {
        "platform": PlatformSettings(),
        "duckdb": DuckDBResource(database=str(settings.duckdb_path)),
    }
