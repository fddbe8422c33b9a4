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
    env = dict(os.environ)
    # parsing never connects, but the profile must render: give it a harmless path
    env.setdefault("EHRMAMBA_DUCKDB_PATH", str(DBT_TARGET_DIR / "parse.duckdb"))
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [
            str(dbt),
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(target),
            "--vars",
            json.dumps({"events_source": events_source}),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=DBT_PROJECT_DIR,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{proc.stdout}\n{proc.stderr}")
    return path
