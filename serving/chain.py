"""Compile the dbt FHIR-to-MEDS models into an event chain (build time, never per request).

``dbt seed`` loads the seeds the models read and ``dbt compile`` renders their SQL, both into a
throw-away DuckDB file; :class:`ehrmamba.fhir.event_chain.EventChain` keeps the result, which
the Bento carries beside the model so the running service needs neither dbt nor the project.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ehrmamba.fhir.event_chain import DEFAULT_TARGET, EventChain
from orchestration.dbt_project import run_dbt

# The compiled SQL names this catalog; the engine attaches an in-memory database under it.
CHAIN_DATABASE = "events"


def compile_event_chain(target: str = DEFAULT_TARGET) -> EventChain:
    """Seed and compile ``target`` and its ancestors; return the chain (about 20 s of dbt)."""
    with tempfile.TemporaryDirectory(prefix="ehrmamba-chain-") as tmp:
        db = Path(tmp) / f"{CHAIN_DATABASE}.duckdb"
        out = Path(tmp) / "target"
        vars_ = {"events_source": "fhir"}
        for args in (["seed", "--select", f"+{target}"], ["compile", "--select", f"+{target}"]):
            proc = run_dbt([*args, "--quiet"], duckdb_path=db, target_path=out, dbt_vars=vars_)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"dbt {args[0]} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
                )
        return EventChain.from_dbt_target(out, db, target)
