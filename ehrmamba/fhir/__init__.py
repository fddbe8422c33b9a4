"""FHIR ingestion: land Bundles and Bulk Data NDJSON into DuckDB's raw layer."""

from ehrmamba.fhir.landing import IngestReport, Progress, TypeCounts, ingest
from ehrmamba.fhir.resource_types import LANDED_TYPES

__all__ = ["LANDED_TYPES", "IngestReport", "Progress", "TypeCounts", "ingest"]
