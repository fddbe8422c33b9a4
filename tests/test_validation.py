"""The Great Expectations suites on small hand-made warehouses: what fails, and how it is told."""

from __future__ import annotations

import duckdb
import pytest

from ehrmamba.validation import (
    ValidationConfig,
    label_support,
    validate_events,
    validate_labels,
    validate_splits,
)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        """
        CREATE SCHEMA marts; CREATE SCHEMA reference;
        CREATE TABLE marts.subjects AS SELECT * FROM (VALUES
            (1, TIMESTAMP '1950-01-01', TIMESTAMP '2020-01-01'),
            (2, TIMESTAMP '1960-01-01', NULL)) v(subject_id, birth_time, death_time);
        CREATE TABLE marts.meds_events AS SELECT * FROM (VALUES
            (1, TIMESTAMP '1950-01-01', 'MEDS_BIRTH', NULL::FLOAT, NULL),
            (1, TIMESTAMP '2019-01-01', 'LOINC/2160-0', 1.2::FLOAT, 'mg/dL'),
            (1, TIMESTAMP '2019-02-01', 'LOINC/2160-0', 1.3::FLOAT, 'mg/dL'),
            (1, TIMESTAMP '2020-01-05', 'SNOMED/308646001', NULL, NULL),
            (2, TIMESTAMP '1960-01-01', 'MEDS_BIRTH', NULL, NULL),
            (2, TIMESTAMP '2001-01-01', 'LOINC/2160-0', 1.0::FLOAT, 'umol/L'))
            v(subject_id, time, code, numeric_value, unit);
        CREATE TABLE reference.lab_value_ranges AS SELECT * FROM (VALUES
            ('LOINC/2160-0', 'mg/dL', 0.05, 30.0, true))
            v(code, unit, min_value, max_value, enforce);
        CREATE TABLE marts.subject_splits AS SELECT range AS subject_id,
            CASE WHEN range % 10 < 8 THEN 'train' WHEN range % 10 = 8 THEN 'tuning'
                 ELSE 'held_out' END AS split FROM range(1000);
        """
    )
    return con


def test_clean_events_pass_including_a_post_mortem_record_within_tolerance(con) -> None:
    outcome = validate_events(con, ValidationConfig())
    assert outcome.success, outcome.summary()
    assert [o.name for o in outcome.outcomes][:4] == [
        "code format",
        "time present",
        "no event before birth (tolerance 7 d)",
        "no event after death (tolerance 7 d)",
    ]
    # only the (code, unit) pairs that have a range are range-checked: umol/L is not
    assert outcome.outcomes[-1].name == "LOINC/2160-0 [mg/dL] within 0.05..30"
    assert outcome.outcomes[-1].element_count == 2


def test_each_broken_rule_is_named_with_its_failing_rows(con) -> None:
    con.execute(
        """
        INSERT INTO marts.meds_events VALUES
            (2, TIMESTAMP '1940-01-01', 'bad code', NULL, NULL),
            (1, TIMESTAMP '2020-03-01', 'LOINC/2160-0', 99, 'mg/dL')
        """
    )
    outcome = validate_events(con, ValidationConfig())
    failed = {o.name: o for o in outcome.failed}
    assert set(failed) == {
        "code format",
        "no event before birth (tolerance 7 d)",
        "no event after death (tolerance 7 d)",
        "LOINC/2160-0 [mg/dL] within 0.05..30",
    }
    assert failed["code format"].unexpected_count == 1
    assert failed["code format"].examples == ["bad code"]
    assert failed["no event after death (tolerance 7 d)"].examples == ["LOINC/2160-0"]
    lab = failed["LOINC/2160-0 [mg/dL] within 0.05..30"]
    assert (lab.unexpected_count, lab.element_count, lab.examples) == (1, 3, [99.0])
    assert "1 of 3 rows fail" in outcome.summary()


def test_a_small_share_of_bad_rows_is_tolerated_but_not_a_systematic_one(con) -> None:
    config = ValidationConfig(max_bad_lab_share=0.5)
    con.execute(
        "INSERT INTO marts.meds_events VALUES (1, TIMESTAMP '2019-03-01', "
        "'LOINC/2160-0', 99, 'mg/dL')"
    )
    assert validate_events(con, config).success  # 1 of 3 under a 50% budget
    con.execute("UPDATE reference.lab_value_ranges SET enforce = false")
    assert validate_events(con, ValidationConfig()).success  # a waived range is not checked


def test_split_proportions(con) -> None:
    assert validate_splits(con, ValidationConfig()).success
    con.execute("UPDATE marts.subject_splits SET split = 'train' WHERE split = 'tuning'")
    outcome = validate_splits(con, ValidationConfig())
    assert {o.name for o in outcome.failed} == {"train share 80% ± 5.1%", "tuning share 10% ± 5.0%"}


def test_label_prevalence_and_support(con) -> None:
    con.execute(
        "CREATE TABLE marts.labels__t AS SELECT range AS subject_id, now() AS prediction_time, "
        "range % 5 = 0 AS boolean_value FROM range(100)"
    )
    assert validate_labels(con, "marts.labels__t", ValidationConfig()).success
    assert label_support(con, "marts.labels__t") == (100, 20)
    con.execute("UPDATE marts.labels__t SET boolean_value = true")
    outcome = validate_labels(con, "marts.labels__t", ValidationConfig())
    assert [o.name for o in outcome.failed] == ["prevalence within 0.001..0.6"]
    assert outcome.failed[0].observed_value == 1.0
    con.execute("UPDATE marts.labels__t SET boolean_value = false")
    # no positive at all: unsupported task, reported by label_support, not a prevalence failure
    assert validate_labels(con, "marts.labels__t", ValidationConfig()).success
    assert label_support(con, "marts.labels__t") == (100, 0)
