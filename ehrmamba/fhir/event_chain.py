"""The dbt FHIR-to-MEDS models, compiled once, run on a few patients' records in memory.

Serving must map FHIR to events exactly as training did, and training's mapping is the dbt
project (``raw.fhir_resources`` -> staging -> intermediate -> ``marts.meds_events``). Running dbt
per request would cost seconds, so the models are compiled once (``dbt seed`` + ``dbt compile``
at Bento build time, see ``serving/chain.py``) into an :class:`EventChain`: the compiled SQL of
every model ``meds_events`` depends on, in dependency order, plus the seed tables they read. The
chain is folded into ONE query (each model a materialized CTE, its SQL unchanged but for the
relation names) and run by an :class:`EventEngine` on a private in-memory DuckDB whose
``raw.fhir_resources`` holds only the batch's records, validated by ingestion's own SQL
(:data:`ehrmamba.fhir.classify.CLASSIFY_SQL`). No disk, no subprocess, one query per batch.

DuckDB re-plans a query on every execution (also a prepared one), and planning this query costs
far more than running it on a few hundred resources; so the engine scores a whole batch of
records per execution, and batching pays for itself. The engine also skips DuckDB's optimizer:
on a few hundred rows an optimized plan saves less than optimizing costs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrmamba.fhir import store
from ehrmamba.fhir.classify import CLASSIFY_SQL
from ehrmamba.fhir.request_bundle import PatientRecord, RecordProblem

CHAIN_FORMAT = "ehrmamba.event_chain/1"
CHAIN_FILE = "chain.json"
SEEDS_DIR = "seeds"
DEFAULT_TARGET = "meds_events"
SOURCE_TABLE = "fhir_resources"


@dataclass(frozen=True)
class ChainModel:
    """One dbt model: its name, the relation dbt writes it to, and its compiled SQL."""

    name: str
    relation: str
    sql: str


@dataclass
class EventChain:
    """The compiled models from the raw FHIR table to ``target``, and the seeds they read."""

    database: str  # the DuckDB catalog name the compiled SQL refers to
    source_relation: str  # the raw table, e.g. "events"."raw"."fhir_resources"
    target: str
    models: list[ChainModel]
    seeds: dict[str, pa.Table] = field(default_factory=dict)  # relation -> rows
    dbt_version: str = ""

    # ------------------------------------------------------------------ from a dbt target
    @classmethod
    def from_manifest(
        cls,
        manifest: dict[str, Any],
        seed_tables: dict[str, pa.Table],
        target: str = DEFAULT_TARGET,
    ) -> EventChain:
        """The models ``target`` depends on, in dependency order, from a compiled manifest.

        ``seed_tables`` maps each seed's relation name to its rows as dbt loaded them.
        """
        nodes = manifest["nodes"]
        sources = manifest.get("sources", {})
        target_ids = [
            uid for uid, n in nodes.items() if n["resource_type"] == "model" and n["name"] == target
        ]
        if len(target_ids) != 1:
            raise ValueError(f"the manifest has no single model named {target!r}")
        order: list[str] = []
        seen: set[str] = set()

        def visit(uid: str) -> None:
            if uid in seen:
                return
            seen.add(uid)
            for dep in nodes.get(uid, {}).get("depends_on", {}).get("nodes", []):
                visit(dep)
            order.append(uid)

        visit(target_ids[0])
        models, source_relations, seed_relations = [], [], []
        for uid in order:
            if uid in sources:
                source_relations.append(sources[uid]["relation_name"])
                continue
            node = nodes[uid]
            kind = node["resource_type"]
            if kind == "seed":
                seed_relations.append(node["relation_name"])
            elif kind == "model":
                sql = node.get("compiled_code")
                if not sql:
                    raise ValueError(f"{node['name']} is not compiled: run `dbt compile` first")
                models.append(ChainModel(node["name"], node["relation_name"], sql))
            else:
                raise ValueError(f"{uid}: a {kind} cannot be part of the event chain")
        if len(source_relations) != 1 or not source_relations[0].endswith(f'"{SOURCE_TABLE}"'):
            raise ValueError(
                f"{target} must read exactly one source, raw.{SOURCE_TABLE}; "
                f"it reads {source_relations} (was the project compiled with events_source=fhir?)"
            )
        missing = sorted(set(seed_relations) - set(seed_tables))
        if missing:
            raise ValueError(f"seed tables missing: {missing}")
        return cls(
            database=json.loads(f"[{source_relations[0].split('.')[0]}]")[0],
            source_relation=source_relations[0],
            target=target,
            models=models,
            seeds={rel: seed_tables[rel] for rel in seed_relations},
            dbt_version=manifest.get("metadata", {}).get("dbt_version", ""),
        )

    @classmethod
    def from_dbt_target(
        cls, target_dir: Path | str, duckdb_path: Path | str, target: str = DEFAULT_TARGET
    ) -> EventChain:
        """From a ``dbt compile`` target directory and the DuckDB file ``dbt seed`` filled."""
        manifest = json.loads((Path(target_dir) / "manifest.json").read_text())
        seeds = {}
        with duckdb.connect(str(duckdb_path), read_only=True) as con:
            for node in manifest["nodes"].values():
                if node["resource_type"] == "seed":
                    rel = node["relation_name"]
                    try:
                        seeds[rel] = con.sql(f"SELECT * FROM {rel}").to_arrow_table()
                    except duckdb.CatalogException:
                        continue  # a seed the chain does not read need not be loaded
        return cls.from_manifest(manifest, seeds, target)

    # ------------------------------------------------------------------ persistence
    @property
    def version(self) -> str:
        """A hash of the SQL and the seed rows: two chains with equal versions map FHIR alike."""
        h = hashlib.sha256(self.query().encode())
        for rel in sorted(self.seeds):
            h.update(rel.encode())
            h.update(json.dumps(self.seeds[rel].to_pylist(), default=str).encode())
        return h.hexdigest()[:16]

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        (directory / SEEDS_DIR).mkdir(parents=True, exist_ok=True)
        seed_files = {}
        for i, (rel, table) in enumerate(sorted(self.seeds.items())):
            name = f"{i:02d}.parquet"
            pq.write_table(table, directory / SEEDS_DIR / name)
            seed_files[rel] = name
        meta = {
            "format": CHAIN_FORMAT,
            "version": self.version,
            "database": self.database,
            "source_relation": self.source_relation,
            "target": self.target,
            "dbt_version": self.dbt_version,
            "models": [vars(m) for m in self.models],
            "seeds": seed_files,
        }
        (directory / CHAIN_FILE).write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> EventChain:
        directory = Path(directory)
        meta = json.loads((directory / CHAIN_FILE).read_text())
        if meta.get("format") != CHAIN_FORMAT:
            raise ValueError(f"{directory}: not an event chain ({meta.get('format')!r})")
        chain = cls(
            database=meta["database"],
            source_relation=meta["source_relation"],
            target=meta["target"],
            models=[ChainModel(**m) for m in meta["models"]],
            seeds={
                rel: pq.read_table(directory / SEEDS_DIR / f) for rel, f in meta["seeds"].items()
            },
            dbt_version=meta.get("dbt_version", ""),
        )
        if chain.version != meta["version"]:
            raise ValueError(f"{directory}: the chain's content does not match its version")
        return chain

    # ------------------------------------------------------------------ the one query
    def query(self) -> str:
        """Every model as a materialized CTE (relations renamed), selecting the target."""
        names = {m.relation: f'"__chain__{m.name}"' for m in self.models}
        ctes = []
        for m in self.models:
            sql = m.sql
            for relation, cte in names.items():
                sql = sql.replace(relation, cte)
            ctes.append(f"{names[m.relation]} AS MATERIALIZED (\n{sql}\n)")
        query = "WITH " + ",\n".join(ctes) + f"\nSELECT * FROM {names[self.models[-1].relation]}"
        if self.models[-1].name != self.target:
            raise ValueError(f"the chain must end with {self.target}")
        return query


@dataclass
class RecordEvents:
    """One record's MEDS events (the columns of ``marts.meds_events``)."""

    patient_id: str
    events: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


_INSERT_SQL = f"""
INSERT INTO raw.{SOURCE_TABLE}
SELECT resource_type, id, version_id, content_hash, subject_id, last_updated, resource,
    source_file, full_url, now()
FROM _classified
WHERE error IS NULL AND source_file IN (SELECT unnest($files::VARCHAR[]))
-- a resource sent twice counts once, the newest version, as ingestion keeps it
QUALIFY row_number() OVER (
    PARTITION BY source_file, resource_type, id ORDER BY last_updated DESC NULLS LAST, seq DESC
) = 1
"""


class EventEngine:
    """FHIR records -> MEDS events through the compiled chain, on a private in-memory DuckDB.

    Not thread-safe: give each thread its own engine (they are cheap: a few MB).
    """

    def __init__(self, chain: EventChain, *, threads: int = 1) -> None:
        self.chain = chain
        self._query = chain.query()
        con = duckdb.connect(":memory:")
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = 'UTC'")  # as the dbt profile
        # Planning, not running, is the cost on a few records, and the optimizer is half of it
        # (about 50 of 100 ms for one Synthea patient); the unoptimized plan gives the same
        # rows (checked on all 489 Synthea records) and runs a batch of 8 20% faster.
        con.execute("PRAGMA disable_optimizer")
        con.execute(f"ATTACH ':memory:' AS {_quote(chain.database)}")
        con.execute(f"USE {_quote(chain.database)}")
        store.create_schema(con)
        for relation, table in chain.seeds.items():
            schema = relation.split(".")[-2]
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            con.register("_seed", table)
            con.execute(f"CREATE TABLE {relation} AS SELECT * FROM _seed")
            con.unregister("_seed")
        self.con = con

    def close(self) -> None:
        self.con.close()

    def events(self, records: Sequence[PatientRecord]) -> list[RecordEvents | RecordProblem]:
        """Each record's events, or the :class:`RecordProblem` that stops it, in input order."""
        if not records:
            return []
        con = self.con
        files = [f"request-{i}" for i in range(len(records))]
        batch = pa.concat_tables(
            [
                r.resources.set_column(0, "source_file", pa.array([f] * r.resources.num_rows))
                for f, r in zip(files, records, strict=True)
            ]
        )
        con.register("_fhir_chunk", batch)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE _classified AS {CLASSIFY_SQL}")
        finally:
            con.unregister("_fhir_chunk")
        out: list[RecordEvents | RecordProblem | None] = [None] * len(records)
        warnings: dict[str, list[str]] = {
            f: list(r.warnings) for f, r in zip(files, records, strict=True)
        }
        for f, position, error in con.execute(
            "SELECT source_file, position, error FROM _classified WHERE error IS NOT NULL "
            "ORDER BY source_file, seq"
        ).fetchall():
            warnings[f].append(f"{position}: {error}")
        landed = dict(
            con.execute(
                "SELECT source_file, list(DISTINCT subject_id ORDER BY subject_id) "
                "FROM _classified WHERE error IS NULL AND subject_id IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        patient_errors = dict(
            con.execute(
                "SELECT source_file, min(error) FROM _classified "
                "WHERE resource_type = 'Patient' AND error IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        usable = []
        for i, (f, record) in enumerate(zip(files, records, strict=True)):
            subjects = landed.get(f, [])
            if record.patient_id not in subjects:
                reason = patient_errors.get(f, "it was not landed")
                out[i] = RecordProblem(f"the Patient resource cannot be used: {reason}")
            elif len(subjects) > 1:
                out[i] = RecordProblem(
                    f"the Bundle holds resources of {len(subjects)} patients; "
                    "send one patient's record per request",
                    expression="entry",
                )
            else:
                usable.append(i)
        for group in self._groups([files[i] for i in usable]):
            frames = self._run(group)
            for f in group:
                i = files.index(f)
                pid = records[i].patient_id
                events = frames.get(meds_subject_id(pid))
                if events is None:
                    events = pd.DataFrame(columns=_EVENT_COLUMNS)
                out[i] = RecordEvents(pid, events.reset_index(drop=True), warnings[f])
        return out  # type: ignore[return-value]

    def _groups(self, files: list[str]) -> list[list[str]]:
        """Split the batch so that no two records in a run share a (type, id): the models join
        by resource id (as a warehouse may, where ids are unique), so two copies of one
        resource in one run would meet. The common case is one group."""
        if len(files) <= 1:
            return [files] if files else []
        clashes = self.con.execute(
            "SELECT list(DISTINCT source_file) FROM _classified "
            "WHERE error IS NULL AND source_file IN (SELECT unnest($files::VARCHAR[])) "
            "GROUP BY resource_type, id HAVING count(DISTINCT source_file) > 1",
            {"files": files},
        ).fetchall()
        if not clashes:
            return [files]
        conflicts: dict[str, set[str]] = {f: set() for f in files}
        for (members,) in clashes:
            for a in members:
                conflicts[a].update(m for m in members if m != a)
        groups: list[list[str]] = []
        for f in files:
            for group in groups:
                if not conflicts[f].intersection(group):
                    group.append(f)
                    break
            else:
                groups.append([f])
        return groups

    def _run(self, files: list[str]) -> dict[str, pd.DataFrame]:
        con = self.con
        con.execute(f"DELETE FROM raw.{SOURCE_TABLE}")
        con.execute(_INSERT_SQL, {"files": files})
        events = con.execute(self._query).df()
        con.execute(f"DELETE FROM raw.{SOURCE_TABLE}")
        return {int(sid): g for sid, g in events.groupby("subject_id", sort=False)}


def meds_subject_id(patient_id: str) -> int:
    """The MEDS ``subject_id`` the warehouse gives a FHIR patient id (the dbt macro
    ``stable_hash_bigint``: the first 15 hex digits of the id's MD5). ``meds_events`` carries
    only this key; the engine uses it to hand each record its own events."""
    return int(hashlib.md5(patient_id.encode()).hexdigest()[:15], 16)


_EVENT_COLUMNS = [
    "subject_id",
    "time",
    "code",
    "numeric_value",
    "text_value",
    "unit",
    "visit_id",
    "event_type",
]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
