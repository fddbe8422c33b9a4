"""The ``ehrmamba`` command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _ehrmamba(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ehrmamba.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "EHRMAMBA_HOME": str(env_home)},
    )


def test_ingest_prints_per_type_accounting(bulk_ndjson_10: Path, tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    proc = _ehrmamba("ingest", str(bulk_ndjson_10), "--db", str(db), "--quiet", env_home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line.strip()}
    # resource type, read, landed, new, updated, quarantined, skipped
    assert lines["Procedure"] == ["2056", "2056", "2056", "0", "0", "0"]
    assert lines["Device"] == ["16", "0", "0", "0", "0", "16"]
    assert lines["total"] == ["7160", "5745", "5745", "0", "0", "1415"]
    assert "13 files read (0 unchanged, 1 ignored)" in proc.stdout


def test_ingest_of_a_missing_path_says_so(tmp_path: Path) -> None:
    proc = _ehrmamba("ingest", str(tmp_path / "missing"), "--quiet", env_home=tmp_path)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
