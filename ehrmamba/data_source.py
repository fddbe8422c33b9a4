"""Where the platform's FHIR comes from: the user's files, or the embedded synthetic cohort."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ehrmamba.settings import Settings

_MARKER = ".cohort.json"  # hidden: FHIR discovery skips dot files, so it is never ingested


def resolve_fhir_source(settings: Settings, progress: bool = False) -> Path:
    """Return the FHIR source path, generating the default synthetic cohort on first use.

    The cohort is written to a temporary sibling and renamed when complete, so an interrupted
    generation is never mistaken for a finished one.
    """
    if settings.fhir_source is not None:
        if not settings.fhir_source.exists():
            raise FileNotFoundError(f"EHRMAMBA_FHIR_SOURCE={settings.fhir_source} does not exist")
        return settings.fhir_source
    target = settings.synth_dir
    if (target / _MARKER).exists():
        return target
    from ehrmamba.synth import write_cohort

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    summary = write_cohort(
        partial, settings.synth_patients, settings.synth_seed, fmt="bundle", progress=progress
    )
    (partial / _MARKER).write_text(
        json.dumps(
            {
                "patients": settings.synth_patients,
                "seed": settings.synth_seed,
                "resource_counts": dict(summary.resource_counts),
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
