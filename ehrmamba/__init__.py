"""EHRMamba platform library: FHIR ingestion, synthetic data, MEDS I/O, validation, models."""

__version__ = "0.1.0"
