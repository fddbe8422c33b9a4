"""The raw layer in DuckDB: its tables, and the SQL that merges one batch into them.

Rows arrive already validated and extracted by the parser workers; here they are only merged. A
batch commits atomically with the manifest rows of the files it came from: a crash leaves every
file either fully landed or not at all, and the next run picks up where this one stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ehrmamba.fhir.classify import CLASSIFIED_SCHEMA

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.fhir_resources (
    resource_type VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    version_id VARCHAR,
    content_hash VARCHAR NOT NULL,
    subject_id VARCHAR,
    last_updated TIMESTAMPTZ,
    resource JSON NOT NULL USING COMPRESSION zstd,
    source_file VARCHAR NOT NULL,
    full_url VARCHAR,  -- Bundle entry fullUrl: resolves urn:uuid references within source_file
    ingested_at TIMESTAMPTZ NOT NULL
    -- (resource_type, id) is unique by construction of ACTIONS_SQL; no index, because maintaining
    -- an ART index doubles the cost of landing a batch. tests/test_ingest.py checks uniqueness.
);
CREATE TABLE IF NOT EXISTS raw.fhir_quarantine (
    source_file VARCHAR NOT NULL,
    position VARCHAR NOT NULL,
    resource_type VARCHAR,
    resource_id VARCHAR,
    reason VARCHAR NOT NULL,
    excerpt VARCHAR,
    ingested_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS raw.fhir_ingested_files (
    source_file VARCHAR PRIMARY KEY,
    format VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    rows_read BIGINT NOT NULL,
    rows_landed BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    rows_skipped BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL
);
"""

STAGE_TABLE = "_fhir_stage"  # an Arrow view registered for one batch, never materialised
QUARANTINE_STAGE_TABLE = "_fhir_quarantine_stage"


# What to do with each staged resource: within one batch the same resource may appear twice (two
# files, two versions), the newest wins; against the warehouse, new rows are inserted, changed
# rows replace older ones, identical or older versions change nothing. Keys only: cheap.
ACTIONS_SQL = """
CREATE OR REPLACE TEMP TABLE _fhir_actions AS
SELECT
    s.resource_type, s.id, s.source_file, s.seq,
    CASE
        WHEN t.id IS NULL THEN 'insert'
        WHEN t.content_hash <> s.content_hash
            AND (s.last_updated IS NULL OR t.last_updated IS NULL
                 OR s.last_updated >= t.last_updated) THEN 'update'
        ELSE 'unchanged'
    END AS action
FROM (
    SELECT resource_type, id, source_file, seq, content_hash, last_updated
    FROM _fhir_stage
    WHERE error IS NULL
    QUALIFY row_number() OVER (
        PARTITION BY resource_type, id
        ORDER BY last_updated DESC NULLS LAST, source_file DESC, seq DESC
    ) = 1
) s
LEFT JOIN raw.fhir_resources t ON t.resource_type = s.resource_type AND t.id = s.id
"""

_COLUMNS = (
    "s.resource_type, s.id, s.version_id, s.content_hash, s.subject_id, s.last_updated, "
    "s.resource, s.source_file, s.full_url, $ingested_at"
)

# The common case, a first landing of every row, is a plain append (DuckDB writes it straight
# to the database file); otherwise only the rows whose action says so are touched.
INSERT_ALL_SQL = (
    f"INSERT INTO raw.fhir_resources SELECT {_COLUMNS} FROM _fhir_stage s WHERE error IS NULL"
)
INSERT_NEW_SQL = f"""
INSERT INTO raw.fhir_resources
SELECT {_COLUMNS}
FROM _fhir_stage s
SEMI JOIN (SELECT source_file, seq FROM _fhir_actions WHERE action = 'insert') a
    ON a.source_file = s.source_file AND a.seq = s.seq
"""
UPDATE_SQL = """
UPDATE raw.fhir_resources t SET
    version_id = s.version_id, content_hash = s.content_hash, subject_id = s.subject_id,
    last_updated = s.last_updated, resource = s.resource, source_file = s.source_file,
    full_url = s.full_url, ingested_at = $ingested_at
FROM _fhir_stage s, _fhir_actions a
WHERE a.action = 'update' AND a.source_file = s.source_file AND a.seq = s.seq
    AND t.resource_type = a.resource_type AND t.id = a.id
"""


@dataclass
class BatchOutcome:
    inserted: Counter[str]
    updated: Counter[str]
    accepted: Counter[str]
    quarantined: Counter[str]
    quarantined_by_file: Counter[str]


def empty_stage() -> pa.Table:
    return CLASSIFIED_SCHEMA.empty_table()


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_SQL)


def create_stage(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {QUARANTINE_STAGE_TABLE} (
            source_file VARCHAR, position VARCHAR, resource_type VARCHAR, resource_id VARCHAR,
            reason VARCHAR, excerpt VARCHAR
        );
        """
    )


def merge_stage(con: duckdb.DuckDBPyConnection, ingested_at) -> BatchOutcome:
    """Merge the staged good rows, quarantine the rest. The caller owns the transaction.

    ``_fhir_stage`` (classified rows, see :mod:`ehrmamba.fhir.classify`) is registered by the
    caller; the worker-level quarantine rows are already in ``_fhir_quarantine_stage``.
    """
    con.execute(ACTIONS_SQL)
    counts = con.execute(
        "SELECT resource_type, action, count(*) FROM _fhir_actions GROUP BY ALL"
    ).fetchall()
    inserted: Counter[str] = Counter()
    updated: Counter[str] = Counter()
    for rtype, action, n in counts:
        if action == "insert":
            inserted[rtype] += n
        elif action == "update":
            updated[rtype] += n
    accepted = Counter(
        dict(
            con.execute(
                f"SELECT resource_type, count(*) FROM {STAGE_TABLE} WHERE error IS NULL GROUP BY 1"
            ).fetchall()
        )
    )
    params = {"ingested_at": ingested_at}
    if inserted.total() == accepted.total():  # all new, no duplicates within the batch
        con.execute(INSERT_ALL_SQL, params)
    elif inserted:
        con.execute(INSERT_NEW_SQL, params)
    if updated:
        con.execute(UPDATE_SQL, params)
    con.execute(
        f"""
        INSERT INTO {QUARANTINE_STAGE_TABLE}
        SELECT source_file, position, resource_type, id, error, left(resource, 200)
        FROM {STAGE_TABLE} WHERE error IS NOT NULL
        """
    )
    quarantined = Counter(
        dict(
            con.execute(
                f"SELECT coalesce(resource_type, '(unknown)'), count(*) "
                f"FROM {QUARANTINE_STAGE_TABLE} GROUP BY 1"
            ).fetchall()
        )
    )
    by_file = Counter(
        dict(
            con.execute(
                f"SELECT source_file, count(*) FROM {QUARANTINE_STAGE_TABLE} GROUP BY 1"
            ).fetchall()
        )
    )
    con.execute(
        f"""
        INSERT INTO raw.fhir_quarantine
        SELECT source_file, position, resource_type, resource_id, reason, excerpt, $ingested_at
        FROM {QUARANTINE_STAGE_TABLE}
        """,
        {"ingested_at": ingested_at},
    )
    con.execute(f"DELETE FROM {QUARANTINE_STAGE_TABLE}")
    return BatchOutcome(inserted, updated, accepted, quarantined, by_file)


def known_files(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    rows = con.execute(
        "SELECT source_file, size_bytes, mtime_ns FROM raw.fhir_ingested_files"
    ).fetchall()
    return {path: (size, mtime) for path, size, mtime in rows}
