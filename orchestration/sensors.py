"""Sensors: new or changed FHIR files start ingestion; downstream assets follow their upstream.

``fhir_landing`` watches the configured FHIR source directory (``EHRMAMBA_FHIR_SOURCE``). Each
tick lists its FHIR files with the ingestion's own discovery rules and compares
``(path, size, mtime)`` with the cursor, the listing of the previous tick. New or changed files
request one run of ``raw/fhir_resources`` and everything downstream of it, keyed by the change
set, so the same change never runs twice. Ingestion itself reads only the files its manifest has
not seen with that size and mtime: a change to one file lands only that file. Files still being
written (modified in the last ``SETTLE_SECONDS``) wait for a later tick.

``follow_upstream`` evaluates the assets' automation conditions (``orchestration/policies.py``):
when ingestion or dbt updates an asset outside such a run, what derives from it follows.
"""

import base64
import hashlib
import json
import time
import zlib
from pathlib import Path

import dagster as dg

from ehrmamba.fhir.sources import discover
from orchestration.assets.ingestion import RAW_FHIR
from orchestration.resources import PlatformSettings

REFRESH_JOB = "ehrmamba_fhir_refresh"
SETTLE_SECONDS = 30
POLL_INTERVAL_S = 60

Listing = dict[str, list[int]]  # path -> [size, mtime_ns]

fhir_refresh_job = dg.define_asset_job(
    REFRESH_JOB,
    selection=dg.AssetSelection.assets(RAW_FHIR).downstream(),
    description="Land new or changed FHIR files and rebuild everything that depends on them "
    "(reference seeds are not re-run).",
    executor_def=dg.in_process_executor,  # one DuckDB writer at a time
)


def encode_cursor(listing: Listing) -> str:
    """The listing as a compact cursor (thousands of Synthea bundles stay a few KB)."""
    raw = json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(raw, 9)).decode()


def decode_cursor(cursor: str | None) -> Listing:
    return json.loads(zlib.decompress(base64.b64decode(cursor))) if cursor else {}


def list_source(source: Path, now: float | None = None) -> tuple[Listing, list[str]]:
    """FHIR files that have settled, and the paths still being written."""
    files, _ignored = discover(source)
    cutoff_ns = int(((now or time.time()) - SETTLE_SECONDS) * 1e9)
    settled: Listing = {}
    writing: list[str] = []
    for f in files:
        if f.mtime_ns > cutoff_ns:
            writing.append(f.path_str)
        else:
            settled[f.path_str] = [f.size_bytes, f.mtime_ns]
    return settled, writing


def change_set_key(changed: Listing) -> str:
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()
    return f"fhir-{digest[:20]}"


@dg.sensor(
    job=fhir_refresh_job,
    minimum_interval_seconds=POLL_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="New or changed FHIR files in EHRMAMBA_FHIR_SOURCE (by path, size and mtime) "
    "start ingestion and everything downstream.",
)
def fhir_landing(context: dg.SensorEvaluationContext, platform: PlatformSettings):
    settings = platform.settings()
    source = settings.fhir_source
    if source is None:
        return dg.SkipReason(
            "EHRMAMBA_FHIR_SOURCE is not set: the synthetic cohort has no landing directory"
        )
    if not source.exists():
        return dg.SkipReason(f"FHIR source {source} does not exist")
    previous = decode_cursor(context.cursor)
    settled, writing = list_source(source)
    # a file still being written keeps its previous state, so it is compared again next tick
    current = {**settled, **{p: previous[p] for p in writing if p in previous}}
    changed = {p: st for p, st in settled.items() if previous.get(p) != st}
    removed = sorted(set(previous) - set(current) - set(writing))
    if not changed:
        note = f"; {len(writing)} file(s) still being written" if writing else ""
        note += f"; {len(removed)} file(s) removed (their rows stay landed)" if removed else ""
        return dg.SensorResult(
            skip_reason=f"{len(settled)} FHIR file(s), none new or changed{note}",
            cursor=encode_cursor(current),
        )
    new = sum(1 for p in changed if p not in previous)
    context.log.info(f"{new} new and {len(changed) - new} changed FHIR file(s) under {source}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=change_set_key(changed),
                tags={
                    "ehrmamba/trigger": "fhir_landing",
                    "ehrmamba/new_files": str(new),
                    "ehrmamba/changed_files": str(len(changed) - new),
                },
            )
        ],
        cursor=encode_cursor(current),
    )


follow_upstream = dg.AutomationConditionSensorDefinition(
    "follow_upstream",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Materializes assets whose automation condition says so (derived data follows "
    "its upstream; see orchestration/policies.py).",
)


def fhir_landing_definitions() -> dg.Definitions:
    """The landing sensor and its job: only when FHIR comes from files (not a server or MEDS)."""
    return dg.Definitions(jobs=[fhir_refresh_job], sensors=[fhir_landing])


def automation_definitions() -> dg.Definitions:
    return dg.Definitions(sensors=[follow_upstream])
