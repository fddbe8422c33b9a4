"""Land a directory (or file) of FHIR into DuckDB ``raw.fhir_resources``.

Parsing runs in worker processes (one file per task, results spilled to Arrow files); the parent
stages their rows in DuckDB and merges them in batches of bounded size, so peak memory depends
on the batch, not on the dataset. Files already landed with the same size and modification time
are not read again, and the merge itself is idempotent: landing the same resource twice changes
nothing, a newer version replaces the older.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from ehrmamba.fhir import store
from ehrmamba.fhir.parse import ParsedFile, TaskResult, parse_files, read_chunk
from ehrmamba.fhir.resource_types import LANDED_TYPES
from ehrmamba.fhir.sources import SourceFile, discover

DEFAULT_BATCH_BYTES = 48 << 20  # staged Arrow bytes merged per transaction
DEFAULT_TASK_BYTES = 24 << 20  # JSON bytes per worker task (gzip sizes scaled by _GZIP_RATIO)
DEFAULT_CHUNK_BYTES = 64 << 20  # JSON bytes a worker classifies and spills at a time
_GZIP_RATIO = 12


@dataclass
class TypeCounts:
    read: int = 0
    landed: int = 0
    inserted: int = 0
    updated: int = 0
    quarantined: int = 0
    skipped: int = 0

    @property
    def balanced(self) -> bool:
        return self.read == self.landed + self.quarantined + self.skipped


@dataclass
class Progress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    resources_read: int


@dataclass
class IngestReport:
    """What one ingestion run did, per resource type; ``read = landed + quarantined + skipped``."""

    source: str
    files_found: int = 0
    files_read: int = 0
    files_unchanged: int = 0
    files_ignored: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    per_type: dict[str, TypeCounts] = field(default_factory=dict)

    def _total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.per_type.values())

    @property
    def read(self) -> int:
        return self._total("read")

    @property
    def landed(self) -> int:
        return self._total("landed")

    @property
    def inserted(self) -> int:
        return self._total("inserted")

    @property
    def updated(self) -> int:
        return self._total("updated")

    @property
    def quarantined(self) -> int:
        return self._total("quarantined")

    @property
    def skipped(self) -> int:
        return self._total("skipped")

    @property
    def balanced(self) -> bool:
        return all(c.balanced for c in self.per_type.values())

    def table(self) -> str:
        """A plain-text table, per resource type, for the command line and Dagster metadata."""
        header = ("resource type", "read", "landed", "new", "updated", "quarantined", "skipped")
        rows = [
            (name, c.read, c.landed, c.inserted, c.updated, c.quarantined, c.skipped)
            for name, c in sorted(self.per_type.items())
        ]
        rows.append(
            (
                "total",
                self.read,
                self.landed,
                self.inserted,
                self.updated,
                self.quarantined,
                self.skipped,
            )
        )
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

        def fmt(row) -> str:
            cells = [str(row[0]).ljust(widths[0])]
            cells += [str(v).rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
            return "  ".join(cells)

        lines = [fmt(header), "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows]
        return "\n".join(lines)

    def summary(self) -> str:
        rate = self.read / self.seconds if self.seconds else 0.0
        return (
            f"{self.files_read} files read ({self.files_unchanged} unchanged, "
            f"{len(self.files_ignored)} ignored), {self.read:,} resources in {self.seconds:.1f}s "
            f"({rate:,.0f}/s): {self.landed:,} landed ({self.inserted:,} new, "
            f"{self.updated:,} updated), {self.quarantined:,} quarantined, "
            f"{self.skipped:,} skipped"
        )


def _open(database: Path | str | duckdb.DuckDBPyConnection, threads, memory_limit):
    if isinstance(database, duckdb.DuckDBPyConnection):
        return database, False
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con, True


class _InlineExecutor(Executor):
    """Runs tasks in the calling process: for one worker or a single small file."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def plan_tasks(files: list[SourceFile], task_bytes: int) -> list[list[SourceFile]]:
    """Group consecutive files into worker tasks of about ``task_bytes`` of JSON each.

    Many small Bundles (Synthea writes one per patient) would otherwise cost one classification
    query each; one huge NDJSON file stays a task of its own.
    """
    tasks: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    weight = 0
    for source in files:
        current.append(source)
        weight += source.size_bytes * (_GZIP_RATIO if source.path.name.endswith(".gz") else 1)
        if weight >= task_bytes:
            tasks.append(current)
            current, weight = [], 0
    if current:
        tasks.append(current)
    return tasks


def _results_in_order(
    executor: Executor,
    tasks: list[list[SourceFile]],
    spill: Path,
    landed_types: frozenset[str],
    window: int,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[TaskResult]:
    """Results in file order (deterministic merges) with a bounded number of tasks in flight."""
    pending: deque[Future] = deque()
    it = iter(enumerate(tasks))

    def submit() -> None:
        nxt = next(it, None)
        if nxt is not None:
            task_id, sources = nxt
            pending.append(
                executor.submit(parse_files, sources, spill, task_id, landed_types, chunk_bytes)
            )

    for _ in range(window):
        submit()
    while pending:
        result = pending.popleft().result()
        submit()
        yield result


class _BatchLoader:
    """Stages parsed files in DuckDB and merges them, one transaction per batch.

    A file larger than a batch (MIMIC-IV on FHIR ships all chart events in one multi-GB file) is
    merged in several transactions, a batch of chunks at a time, so memory stays bounded by the
    batch; its manifest row is written with its last chunks. A crash in between leaves the file
    out of the manifest: the next run reads it again, and the idempotent merge changes nothing
    for the rows already landed.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, report: IngestReport, batch_bytes: int):
        self.con = con
        self.report = report
        self.batch_bytes = batch_bytes
        self.ingested_at = datetime.now(UTC)
        self.files: list[ParsedFile] = []
        self.chunks: list[pa.Table] = []
        self.staged_bytes = 0
        self.in_txn = False
        # quarantined rows per file merged by batches before the file's manifest row
        self.quarantined_by_file: Counter[str] = Counter()

    def _begin(self) -> None:
        if not self.in_txn:
            self.con.execute("BEGIN TRANSACTION")
            self.in_txn = True

    def add(self, result: TaskResult) -> None:
        self._begin()
        paths = [p.source.path_str for p in result.files]
        if paths:  # this run's quarantine of these files replaces the previous run's
            self.con.execute(
                "DELETE FROM raw.fhir_quarantine WHERE source_file IN "
                "(SELECT unnest($paths::VARCHAR[]))",
                {"paths": paths},
            )
        for path in result.chunk_paths:
            chunk = read_chunk(path)  # memory-mapped: the batch costs page cache, not heap
            self.chunks.append(chunk)
            self.staged_bytes += chunk.nbytes
            path.unlink()
            if self.staged_bytes >= self.batch_bytes:  # a file larger than a batch
                self.flush()
                self._begin()
        rows = [row for parsed in result.files for row in parsed.quarantine]
        if rows:
            table = pa.table(
                {
                    "source_file": [r.source_file for r in rows],
                    "position": [r.position for r in rows],
                    "resource_type": pa.array([r.resource_type for r in rows], pa.string()),
                    "resource_id": pa.array([r.resource_id for r in rows], pa.string()),
                    "reason": [r.reason for r in rows],
                    "excerpt": pa.array([r.excerpt for r in rows], pa.string()),
                }
            )
            self.con.register("_fhir_qchunk", table)
            self.con.execute(
                f"INSERT INTO {store.QUARANTINE_STAGE_TABLE} SELECT * FROM _fhir_qchunk"
            )
            self.con.unregister("_fhir_qchunk")
        self.files.extend(result.files)
        if self.staged_bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.in_txn:
            return
        con = self.con
        try:
            stage = pa.concat_tables(self.chunks) if self.chunks else store.empty_stage()
            con.register(store.STAGE_TABLE, stage)
            try:
                outcome = store.merge_stage(con, self.ingested_at)
            finally:
                con.unregister(store.STAGE_TABLE)
            self._account(outcome)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            self.in_txn = False
            self.files = []
            self.chunks = []
            self.staged_bytes = 0

    def _account(self, outcome: store.BatchOutcome) -> None:
        per_type = self.report.per_type
        read: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        manifest = []
        self.quarantined_by_file.update(outcome.quarantined_by_file)
        for parsed in self.files:
            read.update(parsed.read_counts)
            skipped.update(parsed.skipped_counts)
            n_read = sum(parsed.read_counts.values())
            n_skipped = sum(parsed.skipped_counts.values())
            n_quarantined = self.quarantined_by_file.pop(parsed.source.path_str, 0)
            manifest.append(
                (
                    parsed.source.path_str,
                    parsed.source.format.value,
                    parsed.source.size_bytes,
                    parsed.source.mtime_ns,
                    n_read,
                    n_read - n_skipped - n_quarantined,
                    n_quarantined,
                    n_skipped,
                    self.ingested_at,
                )
            )
        for name in set(read) | set(outcome.quarantined) | set(outcome.accepted):
            c = per_type.setdefault(name, TypeCounts())
            c.read += read[name]
            c.skipped += skipped[name]
            c.quarantined += outcome.quarantined[name]
            c.landed += outcome.accepted[name]
            c.inserted += outcome.inserted[name]
            c.updated += outcome.updated[name]
        if manifest:
            names = [
                "source_file",
                "format",
                "size_bytes",
                "mtime_ns",
                "rows_read",
                "rows_landed",
                "rows_quarantined",
                "rows_skipped",
                "ingested_at",
            ]
            table = pa.table(
                {n: list(col) for n, col in zip(names, zip(*manifest, strict=True), strict=True)}
            )
            self.con.register("_fhir_manifest", table)
            self.con.execute(
                "INSERT OR REPLACE INTO raw.fhir_ingested_files SELECT * FROM _fhir_manifest"
            )
            self.con.unregister("_fhir_manifest")


def ingest(
    source: Path | str,
    database: Path | str | duckdb.DuckDBPyConnection,
    *,
    workers: int | None = None,
    force: bool = False,
    landed_types: frozenset[str] = LANDED_TYPES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    task_bytes: int = DEFAULT_TASK_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    duckdb_threads: int | None = None,
    memory_limit: str | None = None,
    spill_dir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> IngestReport:
    """Land every FHIR resource under ``source`` into ``raw.fhir_resources``.

    ``force`` re-reads files that the manifest says are unchanged (the merge still adds nothing
    for identical content). Workers classify ``chunk_bytes`` of JSON at a time; the parent merges
    about ``batch_bytes`` of staged rows per transaction, also within one large file. ``workers``
    defaults to the number of cores; parser processes are spawned, so a script that calls this
    needs Python's ``if __name__ == "__main__":`` guard (notebooks and ``workers=1`` do not).
    """
    started = time.perf_counter()
    files, ignored = discover(Path(source))
    report = IngestReport(source=str(source), files_found=len(files))
    report.files_ignored = [str(p) for p in ignored]
    con, owned = _open(database, duckdb_threads, memory_limit)
    try:
        store.create_schema(con)
        store.create_stage(con)
        known = {} if force else store.known_files(con)
        todo = [f for f in files if known.get(f.path_str) != (f.size_bytes, f.mtime_ns)]
        report.files_unchanged = len(files) - len(todo)
        report.files_read = len(todo)
        bytes_total = sum(f.size_bytes for f in todo)
        tasks = plan_tasks(todo, task_bytes)
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
        spill_root = spill_dir or (
            Path(database).parent if not isinstance(database, duckdb.DuckDBPyConnection) else None
        )
        with tempfile.TemporaryDirectory(prefix="fhir-spill-", dir=spill_root) as tmp:
            executor: Executor = (
                ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
                if n_workers > 1
                else _InlineExecutor()
            )
            loader = _BatchLoader(con, report, batch_bytes)
            done_bytes = 0
            resources = 0
            try:
                files_done = 0
                for result in _results_in_order(
                    executor, tasks, Path(tmp), landed_types, 4 * n_workers, chunk_bytes
                ):
                    loader.add(result)
                    files_done += len(result.files)
                    done_bytes += sum(p.source.size_bytes for p in result.files)
                    resources += sum(sum(p.read_counts.values()) for p in result.files)
                    if progress is not None:
                        progress(
                            Progress(files_done, len(todo), done_bytes, bytes_total, resources)
                        )
                loader.flush()
            finally:
                if loader.in_txn:
                    con.execute("ROLLBACK")
                executor.shutdown(wait=True, cancel_futures=True)
        report.bytes_read = bytes_total
        con.execute("CHECKPOINT")
    finally:
        if owned:
            con.close()
    report.seconds = time.perf_counter() - started
    return report
