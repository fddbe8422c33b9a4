"""Validate the fields the pipeline uses and extract them, as one SQL statement per chunk.

Runs inside each parser worker on an in-memory DuckDB connection, so the JSON field extraction
(C++, one parse per resource) is spread over all cores like the parsing itself. The output is
final: the parent process only merges it into the warehouse.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from ehrmamba.fhir.resource_types import R5_MARKERS, SUBJECT_OPTIONAL

# What a worker hands to the parent: one row per candidate resource, ``error`` set when it
# must go to quarantine instead of raw.fhir_resources.
CLASSIFIED_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("position", pa.string()),
        ("seq", pa.int64()),
        ("full_url", pa.string()),
        ("resource_type", pa.string()),
        ("id", pa.string()),
        ("version_id", pa.string()),
        ("content_hash", pa.string()),
        ("subject_id", pa.string()),
        ("last_updated", pa.timestamp("us", tz="UTC")),
        ("resource", pa.string()),
        ("error", pa.string()),
    ]
)

_FHIR_ID = "[A-Za-z0-9.\\-]{1,64}"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_list(values) -> str:
    return "(" + ", ".join(_sql_str(v) for v in sorted(values)) + ")"


_BASE_PATHS = (
    "$.id",
    "$.meta.versionId",
    "$.meta.lastUpdated",
    "$.subject.reference",
    "$.patient.reference",
)
# Every path the checks need is extracted in the same single parse of the resource.
_PATHS = _BASE_PATHS + tuple(dict.fromkeys(m.json_path for m in R5_MARKERS))


def _r5_check_sql() -> str:
    """One CASE arm per known R5-only shape, tested on the already-extracted field."""
    arms = []
    for marker in R5_MARKERS:
        value = f"j[{_PATHS.index(marker.json_path) + 1}]"
        test = (
            f"{value} IS NOT NULL" if marker.kind == "present" else f"json_type({value}) = 'ARRAY'"
        )
        arms.append(
            f"WHEN resource_type = {_sql_str(marker.resource_type)} AND {test} "
            f"THEN {_sql_str('FHIR R5 shape, not R4: ' + marker.message)}"
        )
    return "CASE " + " ".join(arms) + " END" if arms else "NULL"


# One JSON parse per resource extracts everything the raw layer keeps and every field a check
# looks at; then the first failed check becomes the row's quarantine reason. ``content_hash`` is
# DuckDB's 64-bit hash: it only detects changed content between two landings of a resource.
CLASSIFY_SQL = f"""
WITH extracted AS (
    SELECT
        s.*,
        json_extract(resource, [{", ".join(_sql_str(p) for p in _PATHS)}]) AS j
    FROM _fhir_chunk s
),
fields AS (
    SELECT
        *,
        j[1] ->> '$' AS id,
        json_type(j[1]) AS id_type,
        j[2] ->> '$' AS version_id,
        j[3] ->> '$' AS last_updated_text,
        TRY_CAST(j[3] ->> '$' AS TIMESTAMPTZ) AS last_updated,
        coalesce(j[4], j[5]) ->> '$' AS subject_ref
    FROM extracted
),
bundle_patients AS (
    -- urn:uuid: references in a transaction Bundle point at the fullUrl of an entry of the file
    SELECT source_file, full_url, any_value(id) AS patient_id
    FROM fields
    WHERE resource_type = 'Patient' AND full_url IS NOT NULL AND id IS NOT NULL
    GROUP BY ALL
),
resolved AS (
    SELECT
        f.*,
        nullif(CASE
            WHEN f.resource_type = 'Patient' THEN f.id
            WHEN f.subject_ref LIKE 'urn:%' THEN bp.patient_id
            ELSE regexp_extract(
                f.subject_ref, '(?:^|/)Patient/({_FHIR_ID})(?:/_history/[^/]+)?$', 1
            )
        END, '') AS subject_id
    FROM fields f
    LEFT JOIN bundle_patients bp
        ON bp.source_file = f.source_file AND bp.full_url = f.subject_ref
)
SELECT
    source_file, position, seq, full_url, resource_type, id, version_id,
    lpad(to_hex(hash(resource)), 16, '0') AS content_hash,
    subject_id, last_updated, resource,
    CASE
        WHEN id IS NULL THEN 'missing id'
        WHEN id_type <> 'VARCHAR' THEN 'id is not a string'
        WHEN NOT regexp_full_match(id, '{_FHIR_ID}')
            THEN 'invalid id: FHIR ids are 1-64 characters of A-Z a-z 0-9 - .'
        WHEN last_updated_text IS NOT NULL AND last_updated IS NULL
            THEN 'meta.lastUpdated is not an instant: ' || last_updated_text
        WHEN resource_type NOT IN {_in_list(SUBJECT_OPTIONAL)} AND subject_ref IS NULL
            THEN 'missing subject: ' || resource_type || '.subject (or .patient) names no Patient'
        WHEN resource_type NOT IN {_in_list(SUBJECT_OPTIONAL)} AND subject_id IS NULL
            THEN 'subject reference ' || subject_ref || ' does not resolve to a Patient'
        ELSE {_r5_check_sql()}
    END AS error
FROM resolved
"""

_connection: duckdb.DuckDBPyConnection | None = None


def _worker_connection() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per worker, single-threaded: the processes are the parallelism."""
    global _connection
    if _connection is None:
        _connection = duckdb.connect(":memory:")
        _connection.execute("SET threads = 1")
        _connection.execute("SET TimeZone = 'UTC'")
    return _connection


def classify(chunk: pa.Table | pa.RecordBatch) -> pa.Table:
    """Candidate rows (``parse.STAGE_SCHEMA``) in, classified rows (``CLASSIFIED_SCHEMA``) out.

    ``chunk`` must hold each Bundle file whole (urn:uuid references resolve within a file);
    NDJSON may be sliced anywhere, as its references are ``Patient/<id>``.
    """
    con = _worker_connection()
    con.register("_fhir_chunk", chunk)
    try:
        table = con.sql(CLASSIFY_SQL).to_arrow_table()
    finally:
        con.unregister("_fhir_chunk")
    return table.cast(CLASSIFIED_SCHEMA)
