"""The raw layer in DuckDB: the tables, and the SQL that validates and merges one batch.

Field extraction and validation run as one vectorised SQL statement per batch (DuckDB's JSON
functions are C++), so the per-resource cost stays out of Python. A batch commits atomically with
the manifest rows of the files it came from: a crash leaves every file either fully landed or
not at all, and the next run picks up where this one stopped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ehrmamba.fhir.parse import STAGE_SCHEMA
from ehrmamba.fhir.resource_types import LANDED_TYPES, R5_MARKERS, SUBJECT_OPTIONAL

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
    ingested_at TIMESTAMPTZ NOT NULL
    -- (resource_type, id) is unique by construction of MERGE_SQL; no index, because maintaining
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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _r5_check_sql() -> str:
    """One CASE arm per known R5-only shape, evaluated only for the resource type it concerns."""
    arms = []
    for marker in R5_MARKERS:
        path = _sql_str(marker.json_path)
        if marker.kind == "present":
            test = f"json_exists(resource, {path})"
        elif marker.kind == "array":
            test = f"json_type(resource, {path}) = 'ARRAY'"
        else:  # pragma: no cover - guarded by the dataclass
            raise ValueError(marker.kind)
        arms.append(
            f"WHEN resource_type = {_sql_str(marker.resource_type)} AND {test} "
            f"THEN {_sql_str('FHIR R5 shape, not R4: ' + marker.message)}"
        )
    return "CASE " + " ".join(arms) + " END" if arms else "NULL"


def _in_list(values) -> str:
    return "(" + ", ".join(_sql_str(v) for v in sorted(values)) + ")"


# Extract everything the raw layer keeps in one JSON parse per resource, then decide each row's
# fate: the first failed check becomes its quarantine reason.
CLASSIFY_SQL = f"""
CREATE OR REPLACE TEMP TABLE _fhir_classified AS
WITH extracted AS (
    SELECT
        s.*,
        json_extract_string(resource, [
            '$.id', '$.meta.versionId', '$.meta.lastUpdated',
            '$.subject.reference', '$.patient.reference'
        ]) AS f,
        json_type(resource, '$.id') AS id_type
    FROM {STAGE_TABLE} s
),
fields AS (
    SELECT
        * EXCLUDE (f),
        f[1] AS id,
        f[2] AS version_id,
        f[3] AS last_updated_text,
        TRY_CAST(f[3] AS TIMESTAMPTZ) AS last_updated,
        coalesce(f[4], f[5]) AS subject_ref
    FROM extracted
),
bundle_patients AS (
    -- urn:uuid: references in a transaction Bundle point at the fullUrl of an entry of the same file
    SELECT source_file, full_url, any_value(id) AS patient_id
    FROM fields
    WHERE resource_type = 'Patient' AND full_url IS NOT NULL AND id IS NOT NULL
    GROUP BY ALL
),
resolved AS (
    SELECT
        f.*,
        CASE
            WHEN f.resource_type = 'Patient' THEN f.id
            WHEN f.subject_ref LIKE 'urn:uuid:%' OR f.subject_ref LIKE 'urn:oid:%' THEN bp.patient_id
            ELSE regexp_extract(f.subject_ref, '(?:^|/)Patient/([A-Za-z0-9.\\-]{{1,64}})(?:/_history/[^/]+)?$', 1)
        END AS subject_id_raw
    FROM fields f
    LEFT JOIN bundle_patients bp
        ON bp.source_file = f.source_file AND bp.full_url = f.subject_ref
)
SELECT
    * EXCLUDE (subject_id_raw),
    nullif(subject_id_raw, '') AS subject_id,
    CASE
        WHEN id IS NULL THEN 'missing id'
        WHEN id_type <> 'VARCHAR' THEN 'id is not a string'
        WHEN NOT regexp_full_match(id, '[A-Za-z0-9.\\-]{{1,64}}')
            THEN 'invalid id: FHIR ids are 1-64 characters of A-Z a-z 0-9 - .'
        WHEN last_updated_text IS NOT NULL AND last_updated IS NULL
            THEN 'meta.lastUpdated is not an instant: ' || last_updated_text
        WHEN resource_type NOT IN {_in_list(SUBJECT_OPTIONAL)} AND subject_ref IS NULL
            THEN 'missing subject: ' || resource_type || '.subject (or .patient) names no Patient'
        WHEN resource_type NOT IN {_in_list(SUBJECT_OPTIONAL)} AND nullif(subject_id_raw, '') IS NULL
            THEN 'subject reference ' || subject_ref || ' does not resolve to a Patient'
        ELSE {_r5_check_sql()}
    END AS error,
    md5(resource) AS content_hash
FROM resolved
"""

# Within one batch the same resource may appear twice (two files, two versions): keep the newest.
MERGE_SQL = """
MERGE INTO raw.fhir_resources t
USING (
    SELECT * FROM _fhir_classified
    WHERE error IS NULL
    QUALIFY row_number() OVER (
        PARTITION BY resource_type, id
        ORDER BY last_updated DESC NULLS LAST, source_file DESC, seq DESC
    ) = 1
) s
ON t.resource_type = s.resource_type AND t.id = s.id
WHEN MATCHED AND t.content_hash <> s.content_hash
    AND (s.last_updated IS NULL OR t.last_updated IS NULL OR s.last_updated >= t.last_updated)
    THEN UPDATE SET
        version_id = s.version_id, content_hash = s.content_hash, subject_id = s.subject_id,
        last_updated = s.last_updated, resource = s.resource, source_file = s.source_file,
        ingested_at = $ingested_at
WHEN NOT MATCHED THEN INSERT (
    resource_type, id, version_id, content_hash, subject_id, last_updated, resource,
    source_file, ingested_at
) VALUES (
    s.resource_type, s.id, s.version_id, s.content_hash, s.subject_id, s.last_updated,
    s.resource, s.source_file, $ingested_at
)
RETURNING merge_action, resource_type
"""


@dataclass
class BatchOutcome:
    inserted: Counter[str]
    updated: Counter[str]
    accepted: Counter[str]
    quarantined: Counter[str]
    quarantined_by_file: Counter[str]


def empty_stage() -> pa.Table:
    return STAGE_SCHEMA.empty_table()


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
    """Validate the staged rows, merge the good ones, quarantine the rest. Caller owns the txn."""
    con.execute(CLASSIFY_SQL)
    actions = con.execute(MERGE_SQL, {"ingested_at": ingested_at}).fetchall()
    inserted: Counter[str] = Counter()
    updated: Counter[str] = Counter()
    for action, rtype in actions:
        (inserted if action == "INSERT" else updated)[rtype] += 1
    accepted = Counter(
        dict(
            con.execute(
                "SELECT resource_type, count(*) FROM _fhir_classified WHERE error IS NULL GROUP BY 1"
            ).fetchall()
        )
    )
    con.execute(
        f"""
        INSERT INTO {QUARANTINE_STAGE_TABLE}
        SELECT source_file, position, resource_type, id, error, left(resource, 200)
        FROM _fhir_classified WHERE error IS NOT NULL
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
    con.execute("DROP TABLE IF EXISTS _fhir_classified")
    return BatchOutcome(inserted, updated, accepted, quarantined, by_file)


def known_files(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    rows = con.execute(
        "SELECT source_file, size_bytes, mtime_ns FROM raw.fhir_ingested_files"
    ).fetchall()
    return {path: (size, mtime) for path, size, mtime in rows}


def landed_type_list() -> list[str]:
    return sorted(LANDED_TYPES)
