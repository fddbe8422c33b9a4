"""MEDS datasets in and out: export the warehouse's event store, import someone else's.

The export is a directory any MEDS tool reads (``data/*.parquet``, ``metadata/codes.parquet``,
``metadata/subject_splits.parquet``, ``metadata/dataset.json``, and labels under
``labels/<task>/``), validated against the ``meds`` package's schemas before it is published.
The import lands a MEDS dataset as ``raw.meds_events_import`` so the rest of the pipeline (dbt
with ``events_source: meds``) runs on it instead of FHIR.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import meds
import pyarrow.parquet as pq

from ehrmamba import __version__

EXPORT_COLUMNS = (
    "subject_id::BIGINT AS subject_id, time::TIMESTAMP AS time, code, "
    "numeric_value::FLOAT AS numeric_value, text_value::VARCHAR AS text_value, "
    "unit::VARCHAR AS unit, "
    "visit_id::VARCHAR AS visit_id, event_type::VARCHAR AS event_type"
)
LABEL_PREFIX = "labels__"
IMPORT_TABLE = "raw.meds_events_import"
IMPORT_SPLITS_TABLE = "raw.meds_subject_splits_import"
IMPORT_CODES_TABLE = "raw.meds_codes_import"


class MedsValidationError(ValueError):
    """A file does not follow the MEDS schema; the message names the file and the problem."""


@dataclass
class MedsExportSummary:
    root: Path
    events: int = 0
    subjects: int = 0
    codes: int = 0
    shards: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def label_tables(con: duckdb.DuckDBPyConnection, schema: str = "marts") -> list[str]:
    """Task label tables are found by name, so tasks are defined once (in dbt) and only there."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = ? AND table_name LIKE ? ORDER BY 1",
        [schema, LABEL_PREFIX + "%"],
    ).fetchall()
    return [f"{schema}.{name}" for (name,) in rows]


def _write(table, path: Path, schema) -> None:
    """Cast to the MEDS schema's exact types (it wants e.g. large_string), validate, write."""
    try:
        table = schema.align(table)
        schema.validate(table)
    except Exception as exc:  # the meds/flexible_schema errors vary by version
        raise MedsValidationError(f"{path.name}: {exc}") from exc
    pq.write_table(table, path)


def _validate(path: Path, schema) -> None:
    try:
        schema.validate(pq.read_table(path))
    except Exception as exc:  # the meds/flexible_schema errors vary by version
        raise MedsValidationError(f"{path}: {exc}") from exc


def export_meds(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    *,
    dataset_name: str = "ehrmamba",
    dataset_version: str = "unversioned",
    shard_subjects: int = 10_000,
    schema: str = "marts",
) -> MedsExportSummary:
    """Write the MEDS dataset; the previous export at ``out_dir`` is replaced only on success."""
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "data").mkdir(parents=True)
    (partial / "metadata").mkdir()
    summary = MedsExportSummary(root=out_dir)

    # shard membership once: subjects in subject_id order, `shard_subjects` per shard and split
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _meds_shards AS
        SELECT subject_id, split,
               (row_number() OVER (PARTITION BY split ORDER BY subject_id) - 1)
               // {int(shard_subjects)} AS shard
        FROM {schema}.subject_splits
        """
    )
    pairs = con.execute("SELECT DISTINCT split, shard FROM _meds_shards ORDER BY 1, 2").fetchall()
    for split, shard in pairs:
        name = f"{split}_{shard}"
        table = con.sql(
            f"""
            SELECT {EXPORT_COLUMNS}
            FROM {schema}.meds_events
            SEMI JOIN (SELECT subject_id FROM _meds_shards WHERE split = $split AND shard = $shard)
                USING (subject_id)
            ORDER BY subject_id, time, code
            """,
            params={"split": split, "shard": shard},
        ).to_arrow_table()
        _write(table, partial / "data" / f"{name}.parquet", meds.DataSchema)
        summary.shards.append(name)
    con.execute("DROP TABLE _meds_shards")

    codes = partial / "metadata" / "codes.parquet"
    _write(
        con.sql(
            f"""
            SELECT code, description, coalesce(parent_codes, []::VARCHAR[]) AS parent_codes
            FROM {schema}.meds_codes ORDER BY code
            """
        ).to_arrow_table(),
        codes,
        meds.CodeMetadataSchema,
    )
    _write(
        con.sql(
            f"SELECT subject_id::BIGINT AS subject_id, split FROM {schema}.subject_splits "
            "ORDER BY subject_id"
        ).to_arrow_table(),
        partial / "metadata" / "subject_splits.parquet",
        meds.SubjectSplitSchema,
    )

    for table in label_tables(con, schema):
        task = table.split(".", 1)[1].removeprefix(LABEL_PREFIX)
        task_dir = partial / "labels" / task
        task_dir.mkdir(parents=True)
        labels = con.sql(
            f"""
            SELECT subject_id::BIGINT AS subject_id,
                   prediction_time::TIMESTAMP AS prediction_time, boolean_value
            FROM {table} ORDER BY subject_id, prediction_time
            """
        ).to_arrow_table()
        _write(labels, task_dir / "0.parquet", meds.LabelSchema)
        summary.labels[task] = labels.num_rows

    metadata = {
        "dataset_name": dataset_name,
        "dataset_version": dataset_version,
        "etl_name": "ehrmamba-platform",
        "etl_version": __version__,
        "meds_version": _meds_version(),
        "created_at": datetime.now(UTC).isoformat(),
        "raw_source_id_columns": ["visit_id"],
        "code_modifier_columns": ["unit"],
    }
    (partial / "metadata" / "dataset.json").write_text(json.dumps(metadata, indent=2))
    meds.DatasetMetadataSchema.validate(metadata)

    summary.events, summary.subjects = con.execute(
        f"SELECT count(*), count(DISTINCT subject_id) FROM {schema}.meds_events"
    ).fetchone()
    summary.codes = pq.read_metadata(codes).num_rows
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return summary


def _meds_version() -> str:
    from importlib.metadata import version

    return version("meds")


def import_meds(con: duckdb.DuckDBPyConnection, root: Path) -> dict[str, int]:
    """Land a MEDS dataset (events, and splits and codes when present) into the raw schema.

    Every data shard's schema is checked against ``meds.DataSchema`` first; optional columns
    this platform adds (``unit``, ``visit_id``, ``event_type``) are NULL when a dataset lacks them.
    """
    root = Path(root)
    data_files = sorted((root / meds.data_subdirectory).rglob("*.parquet"))
    if not data_files:
        raise MedsValidationError(f"{root}: no parquet files under {meds.data_subdirectory}/")
    columns: set[str] = set()
    for path in data_files:
        schema = pq.read_schema(path)
        try:
            meds.DataSchema.validate(schema.empty_table())
        except Exception as exc:
            raise MedsValidationError(f"{path}: {exc}") from exc
        columns |= set(schema.names)

    def optional(name: str) -> str:
        return name if name in columns else f"NULL::VARCHAR AS {name}"

    files = "[" + ", ".join(_sql_path(p) for p in data_files) + "]"
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {IMPORT_TABLE} AS
        SELECT subject_id::BIGINT AS subject_id, CAST(subject_id AS VARCHAR) AS patient_id,
               time::TIMESTAMP AS time, code,
               {
            "numeric_value::FLOAT AS numeric_value"
            if "numeric_value" in columns
            else "NULL::FLOAT AS numeric_value"
        },
               {optional("text_value")}, {optional("unit")}, {optional("visit_id")},
               {optional("event_type")}
        FROM read_parquet({files}, union_by_name = true)
        """
    )
    counts = {"events": con.execute(f"SELECT count(*) FROM {IMPORT_TABLE}").fetchone()[0]}
    splits = root / meds.subject_splits_filepath
    if splits.exists():
        _validate(splits, meds.SubjectSplitSchema)
        con.execute(
            f"CREATE OR REPLACE TABLE {IMPORT_SPLITS_TABLE} AS "
            f"SELECT subject_id::BIGINT AS subject_id, split FROM read_parquet({_sql_path(splits)})"
        )
        counts["subjects_with_split"] = con.execute(
            f"SELECT count(*) FROM {IMPORT_SPLITS_TABLE}"
        ).fetchone()[0]
    codes = root / meds.code_metadata_filepath
    if codes.exists():
        _validate(codes, meds.CodeMetadataSchema)
        con.execute(
            f"CREATE OR REPLACE TABLE {IMPORT_CODES_TABLE} AS "
            f"SELECT code, description, parent_codes FROM read_parquet({_sql_path(codes)})"
        )
    return counts
