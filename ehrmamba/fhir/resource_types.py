"""Which FHIR resource types the pipeline lands, and how to tell an R5 resource from an R4 one.

Everything else a server exports (Claim, ExplanationOfBenefit, CarePlan, Provenance, ...) is
counted as skipped: read, accounted for, not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The clinical timeline the model reads, plus Medication, which requests and administrations
# reference instead of carrying a code (MIMIC-IV on FHIR does this).
LANDED_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Encounter",
        "Condition",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationStatement",
        "Medication",
        "Observation",
        "Immunization",
    }
)

# Types that legitimately belong to no patient; all other landed types must name one.
SUBJECT_OPTIONAL: frozenset[str] = frozenset({"Patient", "Medication"})


@dataclass(frozen=True)
class R5Marker:
    """A field whose presence (or list shape) means the resource was written to FHIR R5."""

    resource_type: str
    json_path: str
    kind: Literal["present", "array"]
    message: str


# Only shapes of fields the pipeline reads: a resource that differs from R4 elsewhere still lands.
R5_MARKERS: tuple[R5Marker, ...] = (
    R5Marker(
        "Encounter",
        "$.class",
        "array",
        "Encounter.class is a list of CodeableConcept (R4 has one Coding)",
    ),
    R5Marker(
        "Encounter",
        "$.actualPeriod",
        "present",
        "Encounter.actualPeriod (R4 has Encounter.period)",
    ),
    R5Marker(
        "MedicationRequest",
        "$.medication",
        "present",
        "MedicationRequest.medication is a CodeableReference "
        "(R4 has medicationCodeableConcept or medicationReference)",
    ),
    R5Marker(
        "MedicationAdministration",
        "$.medication",
        "present",
        "MedicationAdministration.medication is a CodeableReference "
        "(R4 has medicationCodeableConcept or medicationReference)",
    ),
    R5Marker(
        "MedicationAdministration",
        "$.occurenceDateTime",
        "present",
        "MedicationAdministration.occurence[x] (R4 has effective[x])",
    ),
    R5Marker(
        "Procedure",
        "$.occurrenceDateTime",
        "present",
        "Procedure.occurrenceDateTime (R4 has performed[x])",
    ),
    R5Marker(
        "Procedure",
        "$.occurrencePeriod",
        "present",
        "Procedure.occurrencePeriod (R4 has performed[x])",
    ),
    R5Marker(
        "Immunization",
        "$.administeredProduct",
        "present",
        "Immunization.administeredProduct (new in R5)",
    ),
)
