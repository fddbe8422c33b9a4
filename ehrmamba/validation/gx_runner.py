"""Run a Great Expectations suite on a DataFrame and report it in plain terms.

GX's SQL datasource does not work on DuckDB, so every suite validates a pandas DataFrame that
the caller prepared (with SQL) from the warehouse. One ephemeral context serves all suites.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd


@dataclass
class ExpectationOutcome:
    """One expectation's verdict: what was expected, on how many rows, how many failed."""

    name: str
    expectation: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed_value: Any = None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        if self.success:
            return f"{self.name}: ok"
        if self.unexpected_count is not None:
            return (
                f"{self.name}: {self.unexpected_count:,} of {self.element_count:,} rows fail "
                f"({self.expectation}); e.g. {self.examples[:3]}"
            )
        return f"{self.name}: observed {self.observed_value!r} ({self.expectation})"


@dataclass
class SuiteOutcome:
    suite: str
    outcomes: list[ExpectationOutcome]
    rows: int

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {len(self.outcomes)} expectations met on {self.rows:,} rows"
        return f"{self.suite}: " + "; ".join(o.describe() for o in self.failed)


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:  # progress bars would flood Dagster's logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):  # pragma: no cover - older/newer GX layouts
        pass
    return context, context.data_sources.add_pandas("ehrmamba")


def run_suite(name: str, df: pd.DataFrame, expectations: list[tuple[str, Any]]) -> SuiteOutcome:
    """Validate ``df`` against named GX expectations (``[(name, gx.expectations.X(...)), ...]``)."""
    import great_expectations as gx

    _, source = _context()
    asset_name = f"{name}_{id(df)}"
    asset = source.add_dataframe_asset(asset_name)
    try:
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": df}
        )
        suite = gx.ExpectationSuite(name=asset_name)
        for label, expectation in expectations:
            expectation.meta = {**(expectation.meta or {}), "label": label}
            suite.add_expectation(expectation)
        result = batch.validate(suite, result_format="SUMMARY")
    finally:
        source.delete_asset(asset_name)
    outcomes = []
    for r in result.results:
        config = r.expectation_config
        details = r.result or {}
        label = (config.meta or {}).get("label") or config.type
        outcomes.append(
            ExpectationOutcome(
                name=label,
                expectation=config.type,
                success=bool(r.success),
                element_count=details.get("element_count"),
                unexpected_count=details.get("unexpected_count"),
                observed_value=details.get("observed_value"),
                examples=list(details.get("partial_unexpected_list") or [])[:5],
            )
        )
    return SuiteOutcome(suite=name, outcomes=outcomes, rows=len(df))
