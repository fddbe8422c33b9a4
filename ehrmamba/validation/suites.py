"""The platform's data-quality suites: the MEDS event table, the splits, and the task labels.

Each function reads what it needs from the warehouse with SQL (cheap derived columns such as
"is this event before birth") and validates it with Great Expectations. They are plain library
functions; Dagster runs them as blocking asset checks, so a failure stops training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb

from ehrmamba.validation.gx_runner import SuiteOutcome, run_suite

CODE_PATTERN = r"^(?:[A-Z0-9_]+/.+|MEDS_BIRTH|MEDS_DEATH)$"
SPLIT_SHARES = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the suites; defaults suit the synthetic cohort and Synthea alike."""

    events_table: str = "marts.meds_events"
    subjects_table: str = "marts.subjects"
    splits_table: str = "marts.subject_splits"
    lab_ranges_table: str = "reference.lab_value_ranges"  # the dbt seed of the same name
    # Post-mortem records are real: Synthea (like hospitals) files the death certification
    # encounter up to a few days after death. Beyond a week, an event after death is an error.
    time_tolerance_days: float = 7.0
    # Real exports hold a few impossible rows (Synthea 2.4: 0.1% of events dated after death);
    # the check blocks when more than this share of rows breaks a rule, i.e. when the problem
    # is systematic rather than a stray record.
    max_bad_time_share: float = 0.005
    max_bad_lab_share: float = 0.01
    min_prevalence: float = 0.001
    max_prevalence: float = 0.6
    min_labels_for_prevalence: int = 50
    split_tolerance: float = 0.05


def validate_events(con: duckdb.DuckDBPyConnection, config: ValidationConfig) -> SuiteOutcome:
    """Code format, time ordering against birth and death, and lab values in plausible ranges."""
    import great_expectations as gx

    tol = float(config.time_tolerance_days)
    df = con.execute(
        f"""
        SELECT
            e.code,
            -- the offending code where a rule is broken, NULL where it holds: failures then
            -- come with examples that say what went wrong
            CASE WHEN e.time IS NULL THEN e.code END AS code_without_time,
            CASE WHEN e.code <> 'MEDS_BIRTH'
                AND e.time < s.birth_time - to_seconds({tol * 86400}) THEN e.code
            END AS code_before_birth,
            CASE WHEN e.code <> 'MEDS_DEATH'
                AND e.time > s.death_time + to_seconds({tol * 86400}) THEN e.code
            END AS code_after_death
        FROM {config.events_table} e
        LEFT JOIN {config.subjects_table} s USING (subject_id)
        """
    ).df()
    expectations = [
        (
            "code format",
            gx.expectations.ExpectColumnValuesToMatchRegex(column="code", regex=CODE_PATTERN),
        ),
        ("time present", gx.expectations.ExpectColumnValuesToBeNull(column="code_without_time")),
        (
            f"no event before birth (tolerance {tol:g} d)",
            gx.expectations.ExpectColumnValuesToBeNull(
                column="code_before_birth", mostly=1 - config.max_bad_time_share
            ),
        ),
        (
            f"no event after death (tolerance {tol:g} d)",
            gx.expectations.ExpectColumnValuesToBeNull(
                column="code_after_death", mostly=1 - config.max_bad_time_share
            ),
        ),
    ]
    outcome = run_suite("meds_events", df, expectations)
    ranges = _lab_ranges(con, config)
    if ranges:
        labs = con.execute(
            f"""
            SELECT e.code, e.unit, e.numeric_value
            FROM {config.events_table} e
            SEMI JOIN {config.lab_ranges_table} r ON r.code = e.code AND r.unit = e.unit
            WHERE e.numeric_value IS NOT NULL
            """
        ).df()
        lab_expectations = []
        from great_expectations.expectations.row_conditions import Column

        for code, unit, low, high in ranges:
            condition = (Column("code") == code) & (Column("unit") == unit)
            lab_expectations.append(
                (
                    f"{code} [{unit}] within {low:g}..{high:g}",
                    gx.expectations.ExpectColumnValuesToBeBetween(
                        column="numeric_value",
                        min_value=low,
                        max_value=high,
                        row_condition=condition,
                        mostly=1 - config.max_bad_lab_share,
                    ),
                )
            )
        lab_outcome = run_suite("lab_values", labs, lab_expectations)
        outcome.outcomes.extend(lab_outcome.outcomes)
    return outcome


def _lab_ranges(con, config: ValidationConfig) -> list[tuple[str, str, float, float]]:
    try:
        rows = con.execute(
            f"SELECT code, unit, min_value, max_value FROM {config.lab_ranges_table} "
            "WHERE coalesce(enforce, true) ORDER BY 1, 2"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    used = {
        (c, u)
        for c, u in con.execute(
            f"SELECT DISTINCT code, unit FROM {config.events_table} WHERE numeric_value IS NOT NULL"
        ).fetchall()
    }
    return [(c, u, float(lo), float(hi)) for c, u, lo, hi in rows if (c, u) in used]


def validate_splits(con: duckdb.DuckDBPyConnection, config: ValidationConfig) -> SuiteOutcome:
    """Only the three MEDS splits, in 80/10/10 proportions within sampling noise."""
    import great_expectations as gx

    df = con.execute(
        f"""
        SELECT split,
               (split = 'train')::INT AS is_train,
               (split = 'tuning')::INT AS is_tuning,
               (split = 'held_out')::INT AS is_held_out
        FROM {config.splits_table}
        """
    ).df()
    n = max(len(df), 1)
    expectations: list = [
        (
            "split names",
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="split", value_set=sorted(SPLIT_SHARES)
            ),
        ),
    ]
    for split, share in SPLIT_SHARES.items():
        # four standard deviations of a binomial share, and never tighter than the tolerance
        tol = max(config.split_tolerance, 4 * math.sqrt(share * (1 - share) / n))
        expectations.append(
            (
                f"{split} share {share:.0%} ± {tol:.1%}",
                gx.expectations.ExpectColumnMeanToBeBetween(
                    column=f"is_{split}",
                    min_value=max(0.0, share - tol),
                    max_value=min(1.0, share + tol),
                ),
            )
        )
    return run_suite("subject_splits", df, expectations)


def label_support(con: duckdb.DuckDBPyConnection, table: str) -> tuple[int, int]:
    """(labels, positives): a task without positives is one this data cannot support."""
    n, positives = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE boolean_value) FROM {table}"
    ).fetchone()
    return int(n), int(positives)


def validate_labels(
    con: duckdb.DuckDBPyConnection, table: str, config: ValidationConfig
) -> SuiteOutcome:
    """Labels are complete and their prevalence is plausible (a broken join shows up as 0 or 1).

    A task with no positive label at all is not checked for prevalence here: the data cannot
    support it (Synthea has no stay longer than a week), which :func:`label_support` reports.
    """
    import great_expectations as gx

    df = con.execute(
        f"SELECT subject_id, prediction_time, boolean_value::INT AS boolean_value FROM {table}"
    ).df()
    expectations: list = [
        ("subject_id present", gx.expectations.ExpectColumnValuesToNotBeNull(column="subject_id")),
        (
            "prediction_time present",
            gx.expectations.ExpectColumnValuesToNotBeNull(column="prediction_time"),
        ),
        ("label present", gx.expectations.ExpectColumnValuesToNotBeNull(column="boolean_value")),
    ]
    if len(df) >= config.min_labels_for_prevalence and df["boolean_value"].sum() > 0:
        expectations.append(
            (
                f"prevalence within {config.min_prevalence:g}..{config.max_prevalence:g}",
                gx.expectations.ExpectColumnMeanToBeBetween(
                    column="boolean_value",
                    min_value=config.min_prevalence,
                    max_value=config.max_prevalence,
                ),
            )
        )
    return run_suite(table.split(".")[-1], df, expectations)
