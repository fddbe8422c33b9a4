"""Write a synthetic cohort to disk as FHIR transaction Bundles or Bulk Data NDJSON.

Both layouts are what real sources deliver (a Synthea-style directory of Bundles, a ``$export``
directory of NDJSON), so the ingestion stage reads the synthetic default exactly like a real
hospital's data. Output is deterministic byte for byte (gzip without timestamps or file names),
and written into a staging directory first: a crash leaves the previous cohort untouched, and a
finished run replaces every cohort file of either layout, so no stale file of another size or
format is left behind for the ingestion to pick up.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import orjson
from tqdm import tqdm

from .render_fhir import render_patient
from .timeline import simulate_patient

Format = Literal["bundle", "ndjson"]

#: gzip level: 1 is several times faster than the default 9 for a modestly larger file.
COMPRESSLEVEL = 1
_COHORT_SUFFIXES = (".json.gz", ".ndjson.gz")


@dataclass
class CohortSummary:
    """What ``write_cohort`` wrote: patients, resources per type, and the files (sorted)."""

    n_patients: int
    resource_counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def transaction_bundle(resources: list[dict]) -> dict:
    """Wrap one patient's resources (``urn:uuid`` references) in a FHIR transaction Bundle.

    The shape Synthea writes and FHIR servers accept: each entry has ``fullUrl: urn:uuid:<id>``
    and ``request: POST <Type>``, so references between the entries resolve inside the Bundle.
    """
    entries = [
        {
            "fullUrl": f"urn:uuid:{r['id']}",
            "resource": r,
            "request": {"method": "POST", "url": r["resourceType"]},
        }
        for r in resources
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _bundle_bytes(resources: list[dict]) -> bytes:
    return orjson.dumps(transaction_bundle(resources))


def _gzip_writer(path: Path) -> tuple[BinaryIO, gzip.GzipFile]:
    raw = open(path, "wb")  # noqa: SIM115 - closed by the caller with the gzip stream
    # no file name and mtime 0 in the gzip header: same input, same bytes
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=COMPRESSLEVEL, mtime=0)
    return raw, gz


def write_cohort(
    out_dir: Path,
    n_patients: int,
    seed: int,
    fmt: Format = "bundle",
    progress: bool = False,
) -> CohortSummary:
    """Generate ``n_patients`` patients of cohort ``seed`` into ``out_dir``.

    ``fmt="bundle"``: one gzipped FHIR R4 transaction Bundle per patient,
    ``<out_dir>/<patient-id>.json.gz``, entries with ``fullUrl: urn:uuid:<id>`` and
    ``request: POST <Type>``, references inside as ``urn:uuid:<id>`` (like Synthea).
    ``fmt="ndjson"``: Bulk Data layout, ``<out_dir>/<Type>.000.ndjson.gz``, one resource per
    line, references as ``Patient/<id>`` and ``Encounter/<id>``.

    Files are written to a staging directory next to ``out_dir`` and moved in when complete;
    every ``*.json.gz`` / ``*.ndjson.gz`` already in ``out_dir`` that is not part of the new
    cohort is removed. Other files in ``out_dir`` are left alone.
    """
    if fmt not in ("bundle", "ndjson"):
        raise ValueError(f"fmt must be 'bundle' or 'ndjson', not {fmt!r}")
    if n_patients < 0:
        raise ValueError("n_patients must be >= 0")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    counts: Counter[str] = Counter()
    names: list[str] = []
    try:
        bar = tqdm(total=n_patients, disable=not progress, unit="patient", desc="synthetic FHIR")
        with bar:
            if fmt == "bundle":
                for index in range(n_patients):
                    resources = render_patient(simulate_patient(index, seed), "urn")
                    counts.update(r["resourceType"] for r in resources)
                    name = f"{resources[0]['id']}.json.gz"
                    data = gzip.compress(
                        _bundle_bytes(resources), compresslevel=COMPRESSLEVEL, mtime=0
                    )
                    (staging / name).write_bytes(data)
                    names.append(name)
                    bar.update(1)
            else:
                names = _write_ndjson(staging, n_patients, seed, counts, bar)
        out_dir.mkdir(parents=True, exist_ok=True)
        keep = set(names)
        for old in out_dir.iterdir():
            if old.name.endswith(_COHORT_SUFFIXES) and old.name not in keep and old.is_file():
                old.unlink()
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(out_dir / name for name in names)
    return CohortSummary(n_patients, dict(sorted(counts.items())), files)


def _write_ndjson(
    staging: Path, n_patients: int, seed: int, counts: Counter[str], bar: tqdm
) -> list[str]:
    writers: dict[str, tuple[BinaryIO, gzip.GzipFile]] = {}
    dumps = orjson.dumps
    try:
        for index in range(n_patients):
            resources = render_patient(simulate_patient(index, seed), "relative")
            chunks: dict[str, io.BytesIO] = {}
            for r in resources:
                rtype = r["resourceType"]
                buf = chunks.get(rtype)
                if buf is None:
                    buf = chunks[rtype] = io.BytesIO()
                buf.write(dumps(r))
                buf.write(b"\n")
                counts[rtype] += 1
            for rtype, buf in chunks.items():
                w = writers.get(rtype)
                if w is None:
                    w = writers[rtype] = _gzip_writer(staging / f"{rtype}.000.ndjson.gz")
                w[1].write(buf.getvalue())
            bar.update(1)
    finally:
        for raw, gz in writers.values():
            gz.close()
            raw.close()
    return sorted(f"{rtype}.000.ndjson.gz" for rtype in writers)
