"""Synthetic FHIR R4 cohort: the platform's embedded default dataset.

Every later stage (normalization to MEDS, the six prediction tasks, EHRMamba pretraining and
finetuning, count baselines) runs on it when no hospital data is configured, so it has to look
like real FHIR (Synthea-shaped Bundles or Bulk Data NDJSON, real SNOMED/LOINC/RxNorm/CVX codes)
and carry learnable, temporal signals for every task: risks that rise with age and disease, lab
trends that precede the diagnoses and deaths they predict.

Layout: ``catalog`` (codes), ``timeline`` (clinical simulation, renderer-agnostic),
``render_fhir`` (FHIR R4 resources), ``writer`` (files).
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from .catalog import CONDITION_GROUPS
from .render_fhir import References, render_patient
from .timeline import DATA_CUT_DATE, Timeline, simulate_patient
from .writer import CohortSummary, transaction_bundle, write_cohort

__all__ = [
    "CONDITION_GROUPS",
    "DATA_CUT_DATE",
    "CohortSummary",
    "Timeline",
    "generate_patient",
    "iter_cohort",
    "simulate_patient",
    "transaction_bundle",
    "write_cohort",
]


def generate_patient(index: int, seed: int, *, references: References = "relative") -> list[dict]:
    """All FHIR R4 resources of patient ``index`` of cohort ``seed``, Patient first.

    Deterministic in ``(index, seed)`` and independent of every other patient, so a cohort can be
    generated in any order or in parallel and give the same bytes. Returns independent plain
    dicts (safe to mutate). ``references`` picks ``Patient/<id>`` (default, standalone resources)
    or ``urn:uuid:<id>`` (for assembling a transaction Bundle).
    """
    resources = render_patient(simulate_patient(index, seed), references)
    return orjson.loads(orjson.dumps(resources))


def iter_cohort(
    n_patients: int, seed: int, *, references: References = "relative"
) -> Iterator[list[dict]]:
    """Patients ``0..n_patients-1`` of cohort ``seed``, one resource list per patient."""
    for index in range(n_patients):
        yield generate_patient(index, seed, references=references)
