"""Find the FHIR files under a path and tell Bundles from Bulk Data NDJSON by their names."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path


class FileFormat(enum.Enum):
    JSON = "json"  # one JSON document: a Bundle (Synthea), a single resource, or an array
    NDJSON = "ndjson"  # Bulk Data: one resource per line


_SUFFIXES = {
    ".json": FileFormat.JSON,
    ".json.gz": FileFormat.JSON,
    ".ndjson": FileFormat.NDJSON,
    ".ndjson.gz": FileFormat.NDJSON,
}

# Bulk Data exports from some servers (and the SMART sample data) ship an export log beside the
# resources; it is not FHIR and is ignored by name, not quarantined line by line.
_IGNORED_NAMES = ("log.ndjson", "log.ndjson.gz")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    format: FileFormat
    size_bytes: int
    mtime_ns: int

    @property
    def path_str(self) -> str:
        return str(self.path)


def file_format(path: Path) -> FileFormat | None:
    name = path.name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def discover(source: Path) -> tuple[list[SourceFile], list[Path]]:
    """The FHIR files under ``source`` (sorted, so runs are reproducible), and the ignored ones.

    ``source`` may be a single file or a directory, searched recursively. Hidden files and
    directories (``.cache``, editor swap files) are not looked at.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"FHIR source {source} does not exist")
    candidates = [source] if source.is_file() else sorted(_walk(source))
    files: list[SourceFile] = []
    ignored: list[Path] = []
    for path in candidates:
        fmt = file_format(path)
        if fmt is None or path.name.lower() in _IGNORED_NAMES:
            ignored.append(path)
            continue
        stat = path.stat()
        files.append(SourceFile(path.resolve(), fmt, stat.st_size, stat.st_mtime_ns))
    return files, ignored


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name
