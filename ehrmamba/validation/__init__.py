"""Blocking data-quality checks (Great Expectations on DataFrames drawn from the warehouse)."""

from ehrmamba.validation.gx_runner import ExpectationOutcome, SuiteOutcome, run_suite
from ehrmamba.validation.suites import (
    ValidationConfig,
    label_support,
    validate_events,
    validate_labels,
    validate_splits,
)

__all__ = [
    "ExpectationOutcome",
    "SuiteOutcome",
    "ValidationConfig",
    "label_support",
    "run_suite",
    "validate_events",
    "validate_labels",
    "validate_splits",
]
