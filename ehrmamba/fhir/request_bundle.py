"""Read ONE patient's FHIR Bundle as a client sends it (serving), with ingestion's own rules.

A request is parsed and sorted the way a file is at ingestion: the same JSON parser (simdjson),
the same entry classifier (:class:`ehrmamba.fhir.parse._Classifier`: which types land, which
entries are malformed) and, later, the same SQL validation (:mod:`ehrmamba.fhir.classify`, run by
:mod:`ehrmamba.fhir.event_chain`). What ingestion quarantines becomes a warning for the client;
what makes a record unusable (not JSON, not a Bundle, no or several patients) is a
:class:`RecordProblem` carrying the HTTP status and FHIR issue type to answer with.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import simdjson

from ehrmamba.fhir.parse import STAGE_SCHEMA, ParsedFile, _Classifier
from ehrmamba.fhir.resource_types import LANDED_TYPES
from ehrmamba.fhir.sources import FileFormat, SourceFile

# Bundle types that carry one patient's record: a client-assembled collection, the transaction
# Synthea writes (or a batch), and the searchset a server answers Patient/$everything with.
ACCEPTED_BUNDLE_TYPES: frozenset[str] = frozenset(
    {"collection", "transaction", "batch", "searchset"}
)

# The record's name inside the engine: urn:uuid references resolve within one source file.
REQUEST_SOURCE = "request"


class RecordProblem(ValueError):
    """Why a client's record cannot be scored, as an HTTP status and a FHIR issue type.

    ``code`` is a FHIR ``IssueType`` (``structure``, ``invalid``, ``required``, ``not-supported``,
    ``too-long``, ``code-invalid``, ...); ``expression`` names the offending element when known.
    The message describes the record's shape, never its clinical content.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 422,
        code: str = "invalid",
        expression: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.expression = expression


@dataclass
class PatientRecord:
    """One patient's landed candidate resources (``STAGE_SCHEMA`` rows), ready for the engine."""

    patient_id: str
    resources: pa.Table
    read_counts: dict[str, int] = field(default_factory=dict)
    skipped_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_ipc(self) -> bytes:
        """The resources as an Arrow IPC stream (cheap to send to another process)."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.resources.schema) as writer:
            writer.write_table(self.resources)
        return sink.getvalue().to_pybytes()

    @staticmethod
    def resources_from_ipc(data: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class _Rows:
    """The classifier's sink: collects candidate rows in memory instead of spilling chunks."""

    def __init__(self) -> None:
        self.positions: list[str] = []
        self.seqs: list[int] = []
        self.full_urls: list[str | None] = []
        self.types: list[str] = []
        self.resources: list[bytes] = []

    def add(self, position: str, seq: int, full_url: str | None, rtype: str, resource: bytes):
        self.positions.append(position)
        self.seqs.append(seq)
        self.full_urls.append(full_url)
        self.types.append(rtype)
        self.resources.append(resource)

    def table(self) -> pa.Table:
        n = len(self.types)
        return pa.table(
            [
                pa.array([REQUEST_SOURCE] * n, type=pa.string()),
                pa.array(self.positions, type=pa.string()),
                pa.array(self.seqs, type=pa.int64()),
                pa.array(self.full_urls, type=pa.string()),
                pa.array(self.types, type=pa.string()),
                pa.array(self.resources, type=pa.binary()).cast(pa.string()),
            ],
            schema=STAGE_SCHEMA,
        )


_SCALAR_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_error(body: bytes) -> RecordProblem:
    """A precise message for a body simdjson rejected (slow path, errors only)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordProblem(
            f"the body is not UTF-8 text (byte {exc.start}); FHIR JSON must be UTF-8",
            status=400,
            code="structure",
        )
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return RecordProblem(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            status=400,
            code="structure",
        )
    except RecursionError:
        return RecordProblem("invalid JSON: nested too deeply", status=400, code="structure")
    return RecordProblem("invalid JSON", status=400, code="structure")


def _patient_ids(rows: _Rows) -> list[tuple[str, object]]:
    """(position, id) of each Patient entry; ids are read from the minified resource."""
    out = []
    for position, rtype, resource in zip(rows.positions, rows.types, rows.resources, strict=True):
        if rtype == "Patient":
            out.append((position, orjson.loads(resource).get("id")))
    return out


def read_patient_bundle(body: bytes) -> PatientRecord:
    """Parse and check one client Bundle; raise :class:`RecordProblem` when it is unusable."""
    if not body or not body.strip():
        raise RecordProblem(
            "the request has no body; send a FHIR Bundle", status=400, code="required"
        )
    parser = simdjson.Parser()
    try:
        doc = parser.parse(body)
    except (ValueError, UnicodeDecodeError):
        raise _json_error(body) from None
    except RuntimeError as exc:  # valid JSON simdjson cannot hold: a number beyond 64 bits
        raise RecordProblem(
            f"the body cannot be read: {str(exc).split(': ', 1)[-1]}",
            status=400,
            code="structure",
        ) from None
    if not isinstance(doc, simdjson.Object):
        kind = "an array" if isinstance(doc, simdjson.Array) else _SCALAR_KINDS.get(type(doc))
        raise RecordProblem(
            f"not a FHIR resource: the body is {kind or 'null'}; send a FHIR Bundle", status=400
        )
    rtype = doc.get("resourceType")
    if rtype != "Bundle":
        what = f"a {rtype}" if isinstance(rtype, str) and rtype else "not a FHIR resource"
        raise RecordProblem(
            f"the body is {what}, not a Bundle; send one patient's record as a FHIR Bundle",
            status=400,
            expression="resourceType",
        )
    btype = doc.get("type")
    if not isinstance(btype, str):
        raise RecordProblem(
            "Bundle.type is missing", status=400, code="required", expression="type"
        )
    if btype not in ACCEPTED_BUNDLE_TYPES:
        raise RecordProblem(
            f"a {btype!r} Bundle is not a patient record; send a collection, transaction, "
            "batch or searchset (Patient/$everything) Bundle",
            code="not-supported",
            expression="type",
        )
    entries = doc.get("entry")
    if entries is not None and not isinstance(entries, simdjson.Array):
        raise RecordProblem("Bundle.entry is not a list", status=400, code="structure")

    rows = _Rows()
    parsed = ParsedFile(source=SourceFile(Path(REQUEST_SOURCE), FileFormat.JSON, 0, 0))
    classifier = _Classifier(parsed, rows, LANDED_TYPES)  # type: ignore[arg-type]
    if entries is not None:
        classifier.bundle_entries(entries, "")
    warnings = [f"{q.position}: {q.reason}" for q in parsed.quarantine]
    if btype == "searchset":
        links = doc.get("link")
        if isinstance(links, simdjson.Array) and any(
            isinstance(link, simdjson.Object) and link.get("relation") == "next" for link in links
        ):
            warnings.append("the searchset is paged (it has a next link): only this page was read")
    del doc

    patients = _patient_ids(rows)
    if not patients:
        raise RecordProblem(
            "the Bundle holds no Patient resource; a record needs its Patient",
            code="required",
            expression="entry",
        )
    ids = {pid for _, pid in patients}
    bad = [pos for pos, pid in patients if not isinstance(pid, str) or not pid]
    if bad:
        raise RecordProblem(
            f"the Patient at {bad[0]} has no id, so no resource can refer to it",
            code="required",
            expression=f"{bad[0]}.resource.id",
        )
    if len(ids) > 1:
        raise RecordProblem(
            f"the Bundle holds {len(ids)} patients; send one patient's record per request",
            code="invalid",
            expression="entry",
        )
    return PatientRecord(
        patient_id=str(next(iter(ids))),
        resources=rows.table(),
        read_counts=dict(Counter(parsed.read_counts)),
        skipped_counts=dict(Counter(parsed.skipped_counts)),
        warnings=warnings,
    )
