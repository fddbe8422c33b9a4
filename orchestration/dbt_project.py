"""The dbt project as Dagster sees it: where it lives, and a manifest that is never stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT_TARGET_DIR = DBT_PROJECT_DIR / "target"
EVENT_SOURCES = ("fhir", "meds")


def manifest_path(events_source: str = "fhir") -> Path:
    return DBT_TARGET_DIR / events_source / "manifest.json"


def _newest_source_mtime() -> float:
    newest = 0.0
    for sub in ("models", "macros", "seeds", "tests", "dbt_project.yml", "profiles.yml"):
        path = DBT_PROJECT_DIR / sub
        paths = [path] if path.is_file() else path.rglob("*")
        for p in paths:
            if p.is_file():
                newest = max(newest, p.stat().st_mtime)
    return newest


def ensure_manifest(events_source: str = "fhir") -> Path:
    """Run ``dbt parse`` when the manifest is missing or older than any project file.

    Dagster builds the asset graph from the manifest at import time; a fresh clone has none and
    an edited model makes it stale, so both are fixed here instead of by a manual step. Each
    events source has its own manifest: with MEDS input the FHIR staging models do not exist.
    """
    if events_source not in EVENT_SOURCES:
        raise ValueError(f"events_source must be one of {EVENT_SOURCES}, not {events_source!r}")
    target = DBT_TARGET_DIR / events_source
    path = manifest_path(events_source)
    if path.exists() and path.stat().st_mtime >= _newest_source_mtime():
        return path
    # parsing never connects, but the profile must render: give it a harmless path
    proc = run_dbt(
        ["parse", "--quiet"],
        duckdb_path=Path(os.environ.get("EHRMAMBA_DUCKDB_PATH") or DBT_TARGET_DIR / "parse.duckdb"),
        target_path=target,
        dbt_vars={"events_source": events_source},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{proc.stdout}\n{proc.stderr}")
    return path


def run_dbt(
    args: list[str],
    *,
    duckdb_path: Path,
    target_path: Path,
    dbt_vars: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run this project's dbt (of this interpreter's environment) against one DuckDB file.

    For scripts and tests; Dagster runs dbt through ``DbtCliResource`` with the same profile.
    """
    command = [
        str(Path(sys.executable).with_name("dbt")),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_path),
    ]
    if dbt_vars:
        command += ["--vars", json.dumps(dbt_vars)]
    return subprocess.run(
        command,
        env={**os.environ, "EHRMAMBA_DUCKDB_PATH": str(duckdb_path)},
        capture_output=True,
        text=True,
        cwd=DBT_PROJECT_DIR,
    )
