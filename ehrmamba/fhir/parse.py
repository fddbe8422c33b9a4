"""Parse FHIR files into rows ready for DuckDB, in a worker process.

This is the CPU-heavy part of ingestion: decompression (zlib-ng), JSON parsing (simdjson, C++) and
field validation (:mod:`ehrmamba.fhir.classify`, DuckDB SQL) run here, one file per task, in as
many processes as there are cores. The worker does as little Python per resource as it can (read
``resourceType``, take the minified JSON); the parent process only merges what workers hand it.

A file that is not clean JSON is not dropped: the parser falls back to a slow path that recovers
every entry before the damage and records the rest in quarantine with the reason in words.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.ipc
import simdjson
from zlib_ng import zlib_ng

from ehrmamba.fhir.classify import CLASSIFIED_SCHEMA, classify
from ehrmamba.fhir.sources import FileFormat, SourceFile

UNKNOWN_TYPE = "(unknown)"
EXCERPT_CHARS = 200

STAGE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("position", pa.string()),
        ("seq", pa.int64()),
        ("full_url", pa.string()),
        ("resource_type", pa.string()),
        ("resource", pa.string()),
    ]
)


@dataclass
class QuarantineRow:
    source_file: str
    position: str
    resource_type: str | None
    resource_id: str | None
    reason: str
    excerpt: str | None = None


@dataclass
class ParsedFile:
    """What a worker learned about one file: counts and quarantine; rows go to the task's chunks."""

    source: SourceFile
    read_counts: Counter[str] = field(default_factory=Counter)
    skipped_counts: Counter[str] = field(default_factory=Counter)
    quarantine: list[QuarantineRow] = field(default_factory=list)


@dataclass
class TaskResult:
    """One worker task: a run of consecutive files, their classified rows spilled to Arrow files."""

    files: list[ParsedFile] = field(default_factory=list)
    chunk_paths: list[Path] = field(default_factory=list)


class _ChunkWriter:
    """Collects candidate resources and spills them, classified, as Arrow IPC files.

    Classification is one SQL query per chunk, so chunks span many small files (a query costs
    milliseconds to plan); a Bundle file is never split across chunks, because its ``urn:uuid``
    references resolve within the file.
    """

    def __init__(self, result: TaskResult, spill_dir: Path, task_id: int, chunk_bytes: int):
        self.result = result
        self.spill_dir = spill_dir
        self.task_id = task_id
        self.chunk_bytes = chunk_bytes
        self.hold = False
        self.source_path = ""
        self._reset()

    def _reset(self) -> None:
        self.sources: list[str] = []
        self.positions: list[str] = []
        self.seqs: list[int] = []
        self.full_urls: list[str | None] = []
        self.types: list[str] = []
        self.resources: list[bytes] = []
        self.nbytes = 0

    def add(self, position: str, seq: int, full_url: str | None, rtype: str, resource: bytes):
        self.sources.append(self.source_path)
        self.positions.append(position)
        self.seqs.append(seq)
        self.full_urls.append(full_url)
        self.types.append(rtype)
        self.resources.append(resource)
        self.nbytes += len(resource)
        if self.nbytes >= self.chunk_bytes and not self.hold:
            self.flush()

    def start_file(self, source: SourceFile, atomic: bool) -> None:
        self.source_path = source.path_str
        self.hold = atomic

    def end_file(self) -> None:
        self.hold = False
        if self.nbytes >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.resources:
            return
        batch = pa.record_batch(
            [
                pa.array(self.sources, type=pa.string()),
                pa.array(self.positions, type=pa.string()),
                pa.array(self.seqs, type=pa.int64()),
                pa.array(self.full_urls, type=pa.string()),
                pa.array(self.types, type=pa.string()),
                # simdjson already validated UTF-8, so a zero-copy view is safe.
                pa.array(self.resources, type=pa.binary()).view(pa.string()),
            ],
            schema=STAGE_SCHEMA,
        )
        self._reset()
        classified = classify(batch)
        del batch
        path = self.spill_dir / f"{self.task_id:08d}-{len(self.result.chunk_paths):05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, CLASSIFIED_SCHEMA) as w:
            w.write_table(classified)
        self.result.chunk_paths.append(path)


def _excerpt(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:EXCERPT_CHARS]


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return zlib_ng.decompress(data, 47)  # 32 + 15: gzip or zlib header, auto-detected
    return data


def _iter_ndjson_lines(path: Path, block: int = 16 << 20):
    """Yield (line_number, bytes) streaming, so a multi-GB file never sits in memory whole."""
    decomp = zlib_ng.decompressobj(47) if path.name.endswith(".gz") else None
    pending = b""
    line_no = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block)
            if not chunk:
                break
            if decomp is not None:
                chunk = decomp.decompress(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                line_no += 1
                yield line_no, line
        if decomp is not None:
            pending += decomp.flush()
    if pending:
        yield line_no + 1, pending


class _Classifier:
    """Sorts one parsed JSON value into landed candidate, skipped or quarantined."""

    def __init__(self, parsed: ParsedFile, writer: _ChunkWriter, landed_types: frozenset[str]):
        self.parsed = parsed
        self.writer = writer
        self.landed_types = landed_types
        self.seq = 0

    def quarantine(self, position: str, reason: str, rtype=None, rid=None, excerpt=None) -> None:
        self.parsed.read_counts[rtype or UNKNOWN_TYPE] += 1
        self.parsed.quarantine.append(
            QuarantineRow(self.parsed.source.path_str, position, rtype, rid, reason, excerpt)
        )

    def resource(self, position: str, value, full_url: str | None) -> None:
        """``value`` is a simdjson Object/Array/scalar or a plain Python value (slow path)."""
        self.seq += 1
        if isinstance(value, simdjson.Object):
            rtype = value.get("resourceType")
            mini = None
        elif isinstance(value, dict):
            rtype = value.get("resourceType")
            mini = orjson.dumps(value)
        else:
            kind = type(value).__name__.lower().replace("csimdjson.", "")
            excerpt = value.mini if isinstance(value, simdjson.Array) else repr(value)
            self.quarantine(
                position,
                f"not a FHIR resource: a JSON {kind}, not an object",
                excerpt=_excerpt(excerpt),
            )
            return
        if not isinstance(rtype, str) or not rtype:
            raw = mini if mini is not None else value.mini
            self.quarantine(position, "not a FHIR resource: no resourceType", excerpt=_excerpt(raw))
            return
        self.parsed.read_counts[rtype] += 1
        if rtype not in self.landed_types:
            self.parsed.skipped_counts[rtype] += 1
            return
        if mini is None:
            mini = value.mini
        self.writer.add(position, self.seq, full_url, rtype, mini)

    def bundle_entries(self, entries, bundle_prefix: str, start: int = 0) -> None:
        """Entries of a Bundle; the common case (an object entry holding a typed resource) is
        handled inline, since this loop runs once per resource of every Bundle."""
        read = self.parsed.read_counts
        skipped = self.parsed.skipped_counts
        landed = self.landed_types
        add = self.writer.add
        obj = simdjson.Object
        for i, entry in enumerate(entries, start):
            if type(entry) is obj:
                resource = entry.get("resource")
                if type(resource) is obj:
                    rtype = resource.get("resourceType")
                    if type(rtype) is str and rtype:
                        self.seq += 1
                        read[rtype] += 1
                        if rtype in landed:
                            url = entry.get("fullUrl")
                            add(
                                f"{bundle_prefix}entry[{i}]",
                                self.seq,
                                url if type(url) is str else None,
                                rtype,
                                resource.mini,
                            )
                        else:
                            skipped[rtype] += 1
                        continue
            self._entry(f"{bundle_prefix}entry[{i}]", entry)

    def _entry(self, position: str, entry) -> None:
        """Any Bundle entry, including the odd ones: not an object, no resource, a delete."""
        if not isinstance(entry, (simdjson.Object, dict)):
            self.seq += 1
            self.quarantine(position, "Bundle entry is not a JSON object")
            return
        resource = entry.get("resource")
        full_url = entry.get("fullUrl")
        if not isinstance(full_url, str):
            full_url = None
        if resource is None:
            self.seq += 1
            request = entry.get("request")
            method = request.get("method") if isinstance(request, (simdjson.Object, dict)) else None
            if method == "DELETE":
                self.parsed.read_counts["(delete request)"] += 1
                self.parsed.skipped_counts["(delete request)"] += 1
            else:
                self.quarantine(position, "Bundle entry has no resource")
            return
        self.resource(position, resource, full_url)

    def document(self, doc, position: str = "") -> None:
        """A whole JSON document: a Bundle, a single resource, or a JSON array of resources."""
        if isinstance(doc, (simdjson.Array, list)):
            for i, item in enumerate(doc):
                self.resource(f"{position}[{i}]", item, None)
            return
        if isinstance(doc, (simdjson.Object, dict)) and doc.get("resourceType") == "Bundle":
            entries = doc.get("entry")
            if entries is None:
                return  # an empty Bundle is valid FHIR and holds nothing to land
            if not isinstance(entries, (simdjson.Array, list)):
                self.quarantine(position or "Bundle", "Bundle.entry is not a list")
                return
            self.bundle_entries(entries, position)
            return
        self.resource(position or "document", doc, None)


_ENTRY_ARRAY = re.compile(r'"entry"\s*:\s*\[')


def _salvage_document(text: str, classifier: _Classifier) -> None:
    """Recover what precedes the damage in a broken JSON document, quarantine the rest.

    A truncated export or a Bundle with one mangled entry should still land its good resources:
    walk ``Bundle.entry`` element by element with ``raw_decode`` and stop at the first error.
    """
    try:
        doc = json.loads(text, parse_int=_int_or_float)
    except json.JSONDecodeError as exc:
        whole_error = exc
    else:
        classifier.document(doc)
        return
    match = _ENTRY_ARRAY.search(text)
    recovered = 0
    position = "document"
    if (
        match
        and text.lstrip().startswith("{")
        and '"Bundle"' in text[: match.start()] + text[:4096]
    ):
        decoder = json.JSONDecoder(parse_int=_int_or_float)
        pos = match.end()
        index = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                break
            try:
                entry, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                whole_error = exc
                break
            classifier.bundle_entries([entry], "", start=index)
            index += 1
        recovered = index
        position = f"entry[{recovered}]"
    reason = (
        f"invalid JSON at line {whole_error.lineno} column {whole_error.colno} "
        f"(byte {whole_error.pos}): {whole_error.msg}"
    )
    if recovered:
        reason += f"; the {recovered} entries before it were recovered"
    classifier.quarantine(
        position, reason, excerpt=_excerpt(text[whole_error.pos : whole_error.pos + 80])
    )


def _is_big_number(exc: RuntimeError) -> bool:
    """simdjson refuses integers beyond 64 bits with a RuntimeError (not a ValueError)."""
    return "BIGINT" in str(exc)


def _int_or_float(digits: str) -> int | float:
    """JSON integers as Python ints, except those orjson (the raw layer's writer) cannot hold."""
    value = int(digits)
    return value if -(2**63) <= value < 2**64 else float(value)


def _parse_json_document(source: SourceFile, classifier: _Classifier) -> None:
    try:
        raw = _read_bytes(source.path)
    except (OSError, zlib_ng.error, EOFError) as exc:
        classifier.quarantine("file", f"cannot read file: {exc}")
        return
    if not raw.strip():
        classifier.quarantine("file", "empty file")
        return
    parser = simdjson.Parser()
    try:
        doc = parser.parse(raw)
    except UnicodeDecodeError:
        classifier.quarantine(
            "file",
            "not UTF-8 text (a binary file?); FHIR JSON must be UTF-8",
            excerpt=_excerpt(raw),
        )
        return
    except (ValueError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _is_big_number(exc):
            raise
        # invalid JSON (salvaged as far as it goes), or an integer beyond 64 bits, which the
        # standard library parses (as a float, see _int_or_float)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            classifier.quarantine("file", "not UTF-8 text (a binary file?)", excerpt=_excerpt(raw))
            return
        _salvage_document(text, classifier)
        return
    classifier.document(doc)
    del doc


def _parse_ndjson(source: SourceFile, classifier: _Classifier) -> None:
    parser = simdjson.Parser()
    any_content = False
    try:
        for line_no, line in _iter_ndjson_lines(source.path):
            if not line.strip():
                continue
            any_content = True
            position = f"line {line_no}"
            try:
                doc = parser.parse(line)
            except UnicodeDecodeError:
                classifier.quarantine(position, "not UTF-8 text", excerpt=_excerpt(line))
                continue
            except ValueError as exc:
                message = str(exc).split(":", 1)[-1].strip().split(".")[0]
                classifier.quarantine(position, f"invalid JSON: {message}", excerpt=_excerpt(line))
                continue
            except RuntimeError as exc:
                if not _is_big_number(exc):
                    raise
                # valid JSON with an integer beyond 64 bits (a FHIR decimal may have any
                # number of digits): the standard library parses it, as a float (the raw layer
                # serializes with orjson, which holds 64-bit integers at most)
                try:
                    doc = json.loads(line, parse_int=_int_or_float)
                except (ValueError, RecursionError) as slow_exc:
                    classifier.quarantine(
                        position, f"invalid JSON: {slow_exc}", excerpt=_excerpt(line)
                    )
                    continue
            if isinstance(doc, (simdjson.Object, dict)) and doc.get("resourceType") == "Bundle":
                classifier.document(doc, f"{position} ")
            else:
                classifier.resource(position, doc, None)
            del doc
    except (OSError, zlib_ng.error, EOFError) as exc:
        classifier.quarantine("file", f"cannot read file: {exc}")
        return
    if not any_content:
        classifier.quarantine("file", "empty file")


def parse_files(
    sources: list[SourceFile],
    spill_dir: Path,
    task_id: int,
    landed_types: frozenset[str],
    chunk_bytes: int = 64 << 20,
) -> TaskResult:
    """Parse a run of files; their classified rows go to Arrow files under ``spill_dir``.

    NDJSON is cut into chunks of ``chunk_bytes`` even within a file, so a multi-GB export never
    sits in memory at once; Bundle files are kept whole.
    """
    result = TaskResult()
    writer = _ChunkWriter(result, spill_dir, task_id, chunk_bytes)
    for source in sources:
        parsed = ParsedFile(source=source)
        classifier = _Classifier(parsed, writer, landed_types)
        writer.start_file(source, atomic=source.format is not FileFormat.NDJSON)
        if source.format is FileFormat.NDJSON:
            _parse_ndjson(source, classifier)
        else:
            _parse_json_document(source, classifier)
        writer.end_file()
        result.files.append(parsed)
    writer.flush()
    return result


def read_chunk(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()
