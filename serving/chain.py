"""Compile the dbt FHIR-to-MEDS models into an event chain (build time, never per request).

``dbt seed`` loads the seeds the models read and ``dbt compile`` renders their SQL, both into a
throw-away DuckDB file; :class:`ehrmamba.fhir.event_chain.EventChain` keeps the result, which
the Bento carries beside the model so the running service needs neither dbt nor the project.

Both commands run in one child process through dbt's programmatic runner on one parsed
manifest: parsing is most of dbt's cost here, and two CLI processes would parse twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ehrmamba.fhir.event_chain import DEFAULT_TARGET, EventChain
from orchestration.dbt_project import DBT_PROJECT_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
# The compiled SQL names this catalog; the engine attaches an in-memory database under it.
CHAIN_DATABASE = "events"


def _failure(command: str, result) -> RuntimeError:
    detail = result.exception or [
        f"{r.node.name}: {r.message}"
        for r in getattr(result.result, "results", [])
        if r.status in ("error", "fail")
    ]
    return RuntimeError(f"dbt {command} failed: {detail}")


def _seed_and_compile(target: str, out: Path) -> None:
    """``dbt seed`` and ``dbt compile`` of ``+target`` on one parse: the seeds into the DuckDB
    file the profile names (``EHRMAMBA_DUCKDB_PATH``), the compiled project into ``out``."""
    from dbt.cli.main import dbtRunner

    flags = [
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(out),
        "--vars",
        json.dumps({"events_source": "fhir"}),
        "--log-level",
        "none",
    ]
    parsed = dbtRunner().invoke(["parse", *flags])
    if not parsed.success:
        raise _failure("parse", parsed)
    runner = dbtRunner(manifest=parsed.result)
    for command in ("seed", "compile"):
        result = runner.invoke([command, "--select", f"+{target}", *flags])
        if not result.success:
            raise _failure(command, result)


def compile_event_chain(target: str = DEFAULT_TARGET) -> EventChain:
    """Seed and compile ``target`` and its ancestors; return the chain (about 10 s of dbt).

    dbt runs in a child process: dbt-duckdb keeps its connection to the seeded file open for
    the life of the process, and the chain reads that file afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="ehrmamba-chain-") as tmp:
        db = Path(tmp) / f"{CHAIN_DATABASE}.duckdb"
        out = Path(tmp) / "target"
        proc = subprocess.run(
            [sys.executable, "-m", "serving.chain", target, str(out)],
            cwd=REPO_ROOT,
            env={**os.environ, "EHRMAMBA_DUCKDB_PATH": str(db)},
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling the event chain failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        return EventChain.from_dbt_target(out, db, target)


if __name__ == "__main__":
    _seed_and_compile(sys.argv[1], Path(sys.argv[2]))
