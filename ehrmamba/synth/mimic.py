"""Render a simulated ``Timeline`` in the shape of MIMIC-IV on FHIR (the ``mimic`` flavour).

The same clinical histories as the default FHIR flavour (``timeline``), so the six tasks keep
their temporal signals, written the way MIMIC-IV on FHIR delivers a hospital's record:

* only what a hospital sees: hospital stays (``MimicEncounter``), emergency department stays
  (``MimicEncounterED``) and ICU stays (``MimicEncounterICU``); ED and ICU stays of an admission
  are ``partOf`` it. Outpatient visits leave only their lab results (labevents without an
  encounter, as MIMIC's outpatient labs); adults only, from 2011 of the simulated calendar on;
* undated encounter diagnoses in ICD-9-CM before 2015-10-01 (of the simulated calendar) and
  ICD-10-CM after, every known chronic condition coded again at each stay; ICD-9/10-PCS
  procedures dated at midnight; labs with ``d_labitems`` ids, each draw with its specimen;
* ICU charting (``d_items``): vital signs every hour, assessments every two and four hours,
  urine output, line dates, ICU procedures and drips, read off the simulated physiology of the
  stay, so chart events are by far the largest file, as in MIMIC;
* medications through ``Medication`` resources (hospital requests, dispenses and
  administrations reference them; IV drugs a ``MimicMedicationMix``), ED dispenses and home
  medication reconciliation;
* every date shifted into the 2100s by a whole number of days per patient, as MIMIC does.

Deterministic in ``(seed, index)``: a patient renders the same in any order or process.
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_left
from collections import defaultdict
from datetime import date
from typing import Any, ClassVar

from . import catalog as C
from . import mimic_codes as M
from .render_fhir import format_datetime, new_id
from .timeline import (
    CONDITION,
    DAY,
    EPOCH_ORDINAL,
    HOUR,
    MEDICATION,
    MINUTE,
    OBSERVATION,
    PROCEDURE,
    YEAR,
    Event,
    Timeline,
    Visit,
)

#: Histories are kept from this date of the simulated calendar on (MIMIC-IV covers about a
#: decade of admissions).
WINDOW_START = date(2011, 1, 1)
ADULT_YEARS = 18.0
#: Per-patient shift into the future, in years (MIMIC's shifted years lie in 2100-2200).
SHIFT_YEARS = (110, 180)
#: Share of outpatient visits whose labs the hospital's laboratory ran (MIMIC sees only those).
OUTPATIENT_LAB_SHARE = 0.12
_WINDOW_T = (WINDOW_START.toordinal() - EPOCH_ORDINAL) * DAY
_ICD10_T = (date(*M.ICD10_FROM).toordinal() - EPOCH_ORDINAL) * DAY
_SALT = 0x6D696D6963  # "mimic": the MIMIC renderer's random stream differs from render_fhir's
_NS = uuid.UUID("6f9d7c52-3b7e-5a53-9a57-6d696d696331")

REFERENCE_FILES = ("MimicOrganization", "MimicLocation", "MimicMedication", "MimicMedicationMix")
PATIENT_FILES = tuple(stem for stem in M.FILES if stem not in REFERENCE_FILES)
_LAB_KEYS = frozenset(k for k, m in C.MEASURES.items() if m.category == "laboratory")
_SEVERE = frozenset({"91302008", "65710008", "22298006", "230690007", "74474003", "88805009"})
_OBSERVATION_STAYS = C.OBSERVATION_REASONS


def _uid(name: str) -> str:
    return str(uuid.uuid5(_NS, name))


ORGANIZATION_ID = _uid("organization")


def location_id(name: str) -> str:
    return _uid(f"location:{name}")


def medication_id(rxnorm: str) -> str:
    return _uid(f"medication:{rxnorm}")


def mix_id(rxnorm: str) -> str:
    return _uid(f"medication-mix:{rxnorm}")


def _meta(stem: str) -> dict[str, Any]:
    return {"profile": [M.profile(M.FILES[stem][1])]}


_META = {stem: _meta(stem) for stem in M.FILES}
_ORG_REF = {"reference": f"Organization/{ORGANIZATION_ID}"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _quantity(value: float, unit: str, system: str = M.UNITS) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
        q["system"] = system
        q["code"] = unit
    return q


def _plain(display: str) -> str:
    """'Essential hypertension (disorder)' -> 'Essential hypertension'."""
    return display.rsplit(" (", 1)[0] if display.endswith(")") else display


def reference_resources() -> dict[str, list[dict]]:
    """The resources that belong to no patient: the hospital, its units, the drug list."""
    org = {
        "resourceType": "Organization",
        "id": ORGANIZATION_ID,
        "meta": _META["MimicOrganization"],
        "active": True,
        "type": [_cc("http://terminology.hl7.org/CodeSystem/organization-type", "prov")],
        "name": "Beth Israel Deaconess Medical Center (synthetic)",
    }
    locations = [
        {
            "resourceType": "Location",
            "id": location_id(name),
            "meta": _META["MimicLocation"],
            "status": "active",
            "name": name,
            "physicalType": _cc(
                "http://terminology.hl7.org/CodeSystem/location-physical-type", "wa", "Ward"
            ),
            "managingOrganization": _ORG_REF,
        }
        for name in M.LOCATIONS
    ]
    medications = [
        {
            "resourceType": "Medication",
            "id": medication_id(rx),
            "meta": _META["MimicMedication"],
            "identifier": [{"system": M.identifier_system("medication-name"), "value": name}],
            "code": _cc(M.MEDICATION_NAME, name),
            "status": "active",
        }
        for rx, name in M.MEDICATION_NAMES.items()
    ]
    mixes = [
        {
            "resourceType": "Medication",
            "id": mix_id(rx),
            "meta": _META["MimicMedicationMix"],
            "identifier": [
                {
                    "system": M.identifier_system("medication-mix"),
                    "value": f"{M.MEDICATION_NAMES[rx]} / {M.MEDICATION_NAMES[diluent]}",
                }
            ],
            "status": "active",
            "ingredient": [
                {"itemReference": {"reference": f"Medication/{medication_id(rx)}"}},
                {"itemReference": {"reference": f"Medication/{medication_id(diluent)}"}},
            ],
        }
        for rx, diluent in M.MIXES.items()
    ]
    return {
        "MimicOrganization": [org],
        "MimicLocation": locations,
        "MimicMedication": medications,
        "MimicMedicationMix": mixes,
    }


def _age(tl: Timeline, t: float) -> float:
    return (t - tl.person.birth) / YEAR


def is_eligible(tl: Timeline) -> bool:
    """A MIMIC patient: an adult with at least one hospital or ED stay in the window."""
    return any(
        v.cls != "AMB" and v.start >= _WINDOW_T and _age(tl, v.start) >= ADULT_YEARS
        for v in tl.visits
    )


# --------------------------------------------------------------------------------------------
# constant parts shared by many resources (read-only)
# --------------------------------------------------------------------------------------------
_LAB_CATEGORY = [_cc(M.OBSERVATION_CATEGORY, "laboratory")]
_VITAL_CATEGORY = [_cc(M.HL7_OBS_CATEGORY, "vital-signs", "Vital Signs")]
_ENC_DX = [_cc(M.CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")]
_LAB_CODE = {k: _cc(M.D_LABITEMS, item, label) for k, (item, label, _, _) in M.LAB_ITEMS.items()}
_CHART = {
    k: (_cc(M.CHARTEVENTS_D_ITEMS, item, label), [_cc(M.OBSERVATION_CATEGORY, cat)], unit)
    for k, (item, label, unit, cat) in (M.CHART_HOURLY | M.CHART_4H).items()
}
_CHART_WEIGHT = (
    _cc(M.CHARTEVENTS_D_ITEMS, M.CHART_WEIGHT[0], M.CHART_WEIGHT[1]),
    [_cc(M.OBSERVATION_CATEGORY, M.CHART_WEIGHT[3])],
    M.CHART_WEIGHT[2],
)
_CHART_TEXT = [
    (_cc(M.CHARTEVENTS_D_ITEMS, item, label), [_cc(M.OBSERVATION_CATEGORY, cat)], values)
    for item, label, cat, values in M.CHART_TEXT
]
_CHART_ALARMS = [
    (
        _cc(M.CHARTEVENTS_D_ITEMS, item, label),
        [_cc(M.OBSERVATION_CATEGORY, "Alarms")],
        _quantity(value, unit),
    )
    for item, label, unit, value in M.CHART_ALARMS
]
_OUTPUT = (
    _cc(M.D_ITEMS, M.OUTPUT_URINE[0], M.OUTPUT_URINE[1]),
    [_cc(M.OBSERVATION_CATEGORY, M.OUTPUT_URINE[3])],
)
_DATETIME = [_cc(M.D_ITEMS, item, label) for item, label in M.DATETIME_ITEMS]
_DATETIME_CATEGORY = [_cc(M.OBSERVATION_CATEGORY, "Access Lines - Invasive")]
_ED_CLASS = _coding(C.ACT_CODE, "EMER", "emergency")
_ICU_CLASS = _coding(C.ACT_CODE, "ACUTE", "inpatient acute")
_TYPE_HOSP = [_cc(C.SNOMED, *M.ENCOUNTER_TYPE_HOSP)]
_TYPE_STAY = [_cc(C.SNOMED, *M.ENCOUNTER_TYPE_STAY)]
_TRIAGE = _cc(C.SNOMED, *M.ED_TRIAGE_SNOMED)
_VITALS_PROC = _cc(C.SNOMED, *M.ED_VITALS_SNOMED)
_LOINC = {k: _cc(C.LOINC, m.code, m.display) for k, m in C.MEASURES.items()}
_CHIEF_COMPLAINT = _cc(C.LOINC, "8661-1", "Chief complaint - Reported")
_UCUM = {"temperature": "[degF]", "heart_rate": "/min", "resp_rate": "/min", "spo2": "%"}


class _Vitals:
    """A stay's simulated vital signs by key, read at any time as the nearest measurement."""

    DEFAULTS: ClassVar[dict[str, float]] = {
        "heart_rate": 80.0,
        "resp_rate": 16.0,
        "spo2": 97.0,
        "sbp": 125.0,
        "dbp": 75.0,
        "temperature": 36.9,
    }

    def __init__(self, events: list[Event]) -> None:
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for ev in events:
            if ev.kind != OBSERVATION:
                continue
            if ev.code == "bp":
                series["sbp"].append((ev.time, ev.value))
                series["dbp"].append((ev.time, ev.value2))
            elif ev.code in self.DEFAULTS:
                series[ev.code].append((ev.time, ev.value))
        self.times = {k: [t for t, _ in v] for k, v in series.items()}
        self.values = {k: [x for _, x in v] for k, v in series.items()}

    def at(self, key: str, t: float) -> float:
        times = self.times.get(key)
        if not times:
            return self.DEFAULTS[key]
        i = bisect_left(times, t)
        if i == len(times) or (i > 0 and t - times[i - 1] <= times[i] - t):
            i -= 1
        return float(self.values[key][i])


class _Patient:
    """Renders one patient; ``render()`` returns resources per file stem."""

    def __init__(self, tl: Timeline) -> None:
        self.tl = tl
        self.rng = random.Random(tl.id_seed ^ _SALT)
        r = self.rng
        self.shift = r.randint(SHIFT_YEARS[0] * 365, SHIFT_YEARS[1] * 365) * DAY
        self.tz = tl.person.tz
        self.out: dict[str, list[dict]] = {stem: [] for stem in PATIENT_FILES}
        # resource ids: a random UUID prefix per patient and a counter (unique, and much faster
        # than a random UUID per resource for the hundreds of chart events of a stay)
        self._id_prefix = new_id(r)[:24]
        self._n_id = 0
        self.pid = self.new_id()
        self.subj = {"reference": f"Patient/{self.pid}"}
        self.number = 10_000_000 + tl.index
        self.n_hadm = 0
        self.n_stay = 0
        self.n_row = 0
        self._dt: dict[int, str] = {}
        by_visit: dict[int, list[Event]] = defaultdict(list)
        for ev in tl.events:
            by_visit[ev.visit].append(ev)
        self.by_visit = by_visit
        self.conditions = sorted(
            (ev.time, ev.code, ev.end) for ev in tl.events if ev.kind == CONDITION
        )
        self.home_meds = sorted(
            (ev.time, ev.code)
            for ev in tl.events
            if ev.kind == MEDICATION and ev.code in M.CHRONIC_RXNORM
        )
        self.weights = sorted(
            (ev.time, ev.value)
            for ev in tl.events
            if ev.kind == OBSERVATION and ev.code == "weight"
        )

    # ----------------------------------------------------------------------------- helpers
    def dt(self, t: float) -> str:
        t = int(t)
        s = self._dt.get(t)
        if s is None:
            s = self._dt[t] = format_datetime(t + self.shift, self.tz)
        return s

    def day(self, t: float) -> str:
        """Midnight of the local day of ``t`` (MIMIC's chart dates)."""
        return self.dt(int(t) // DAY * DAY)

    def new_id(self) -> str:
        self._n_id += 1
        return f"{self._id_prefix}{self._n_id:012x}"

    def row_id(self) -> str:
        self.n_row += 1
        return f"{self.number}-{self.n_row}"

    def emit(self, stem: str, resource: dict) -> dict:
        self.out[stem].append(resource)
        return resource

    def icd10(self, t: float) -> bool:
        return t >= _ICD10_T

    def dx_coding(self, snomed: str, t: float) -> dict[str, Any]:
        icd9, icd10 = M.DIAGNOSES[snomed]
        display = _plain(C.CONDITIONS[snomed])
        if self.icd10(t):
            return _cc(M.DIAGNOSIS_ICD10, icd10, display)
        return _cc(M.DIAGNOSIS_ICD9, icd9, display)

    def active_conditions(self, t: float) -> list[str]:
        """Conditions recorded before ``t`` and not resolved at ``t``, oldest first."""
        return [
            code for when, code, end in self.conditions if when < t and (end is None or end > t)
        ]

    def home_medications(self, t: float) -> list[str]:
        """Long-term drugs prescribed in the two years before ``t``."""
        return list(
            dict.fromkeys(code for when, code in self.home_meds if t - 2 * YEAR <= when < t)
        )

    def weight(self, t: float) -> float:
        before = [w for when, w in self.weights if when <= t]
        return float(before[-1]) if before else 75.0

    # ----------------------------------------------------------------------------- patient
    def render(self) -> dict[str, list[dict]]:
        tl = self.tl
        p = tl.person
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.pid,
            "meta": _META["MimicPatient"],
            "extension": [
                {
                    "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                    "valueCode": "M" if p.gender == "male" else "F",
                }
            ],
            "identifier": [{"system": M.identifier_system("patient"), "value": str(self.number)}],
            "name": [{"use": "official", "family": f"Patient_{self.number}"}],
            "gender": p.gender,
            "birthDate": self.dt(p.birth)[:10],
            "maritalStatus": _cc(M.MARITAL_STATUS, self.rng.choice("MSWD")),
            "managingOrganization": _ORG_REF,
        }
        if p.death is not None:
            patient["deceasedDateTime"] = self.dt(p.death)[:10]  # a date, like MIMIC's dod
        self.emit("MimicPatient", patient)
        prev_end = -float("inf")
        for vi, v in enumerate(tl.visits):
            if v.start >= _WINDOW_T and _age(tl, v.start) >= ADULT_YEARS:
                events = self.by_visit.get(vi, [])
                if v.cls == "AMB":
                    # outpatient labs, as far as the hospital's laboratory ran them
                    if self.rng.random() < OUTPATIENT_LAB_SHARE:
                        self.labs(events, None)
                elif v.cls == "EMER":
                    self.emergency(v, events)
                else:
                    self.admission(v, events, prev_end)
            prev_end = max(prev_end, v.end)
        return self.out

    # ----------------------------------------------------------------------------- labs
    def labs(self, events: list[Event], encounter: dict | None) -> None:
        """Lab results, one specimen per draw (time and fluid)."""
        draws: dict[tuple[int, str], list[Event]] = defaultdict(list)
        for ev in events:
            if ev.kind == OBSERVATION and ev.code in _LAB_KEYS:
                draws[(ev.time, M.LAB_ITEMS[ev.code][3])].append(ev)
        r = self.rng
        for (t, fluid), draw in draws.items():
            group = list({ev.code: ev for ev in reversed(draw)}.values())[::-1]  # a test once
            spec_id = self.new_id()
            self.emit(
                "MimicSpecimenLab",
                {
                    "resourceType": "Specimen",
                    "id": spec_id,
                    "meta": _META["MimicSpecimenLab"],
                    "identifier": [
                        {"system": M.identifier_system("specimen-lab"), "value": self.row_id()}
                    ],
                    "type": _cc(M.LAB_FLUID, fluid),
                    "subject": self.subj,
                    "collection": {"collectedDateTime": self.dt(t)},
                },
            )
            spec = {"reference": f"Specimen/{spec_id}"}
            issued = self.dt(t + int(r.uniform(30, 180)) * MINUTE)
            effective = self.dt(t)
            for ev in group:
                item = M.LAB_ITEMS[ev.code]
                res: dict[str, Any] = {
                    "resourceType": "Observation",
                    "id": self.new_id(),
                    "meta": _META["MimicObservationLabevents"],
                    "identifier": [
                        {
                            "system": M.identifier_system("observation-labevents"),
                            "value": self.row_id(),
                        }
                    ],
                    "status": "final",
                    "category": _LAB_CATEGORY,
                    "code": _LAB_CODE[ev.code],
                    "subject": self.subj,
                    "effectiveDateTime": effective,
                    "issued": issued,
                    "valueQuantity": _quantity(ev.value, item[2]),
                    "specimen": spec,
                }
                if encounter is not None:
                    res["encounter"] = encounter
                self.emit("MimicObservationLabevents", res)

    # ----------------------------------------------------------------------------- ED
    def emergency(self, v: Visit, events: list[Event]) -> None:
        """An ED stay that ends in the ED (treat and release, or death)."""
        disposition = "EXPIRED" if v.discharge == "exp" else "HOME"
        ed = self.ed_stay(v.start, v.end, events, disposition, None)
        self.labs(events, None)  # labs of an ED-only stay have no hospital admission in MIMIC
        codes = [ev.code for ev in events if ev.kind == CONDITION]
        active = self.active_conditions(v.start)
        codes += self.rng.sample(active, min(len(active), self.rng.randint(0, 2)))
        self.diagnoses("MimicConditionED", codes, v.start, ed)
        for ev in events:
            if ev.kind == MEDICATION:
                self.ed_dispense(ev.code, ev.time, ed)

    def ed_stay(
        self,
        start: float,
        end: float,
        events: list[Event],
        disposition: str,
        part_of: str | None,
    ) -> dict:
        r = self.rng
        self.n_stay += 1
        eid = self.new_id()
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": eid,
            "meta": _META["MimicEncounterED"],
            "identifier": [
                {
                    "system": M.identifier_system("encounter-ed"),
                    "value": str(30_000_000 + self.tl.index * 64 + self.n_stay),
                    "assigner": _ORG_REF,
                }
            ],
            "status": "finished",
            "class": _ED_CLASS,
            "type": _TYPE_STAY,
            "subject": self.subj,
            "period": {"start": self.dt(start), "end": self.dt(end)},
            "hospitalization": {
                "admitSource": _cc(M.ADMIT_SOURCE, "AMBULANCE" if r.random() < 0.4 else "WALK IN"),
                "dischargeDisposition": _cc(M.DISCHARGE_DISPOSITION, disposition),
            },
            "location": [
                {
                    "location": {"reference": f"Location/{location_id('Emergency Department')}"},
                    "period": {"start": self.dt(start), "end": self.dt(end)},
                }
            ],
            "serviceProvider": _ORG_REF,
        }
        if part_of is not None:
            enc["partOf"] = {"reference": f"Encounter/{part_of}"}
        self.emit("MimicEncounterED", enc)
        ref = {"reference": f"Encounter/{eid}"}
        vitals = _Vitals(events)
        reason = next((ev.code for ev in events if ev.kind == CONDITION), None)
        # triage: a procedure, the chief complaint and the first vital signs
        triage = self.ed_procedure(_TRIAGE, start, ref)
        if reason is not None:
            self.emit(
                "MimicObservationED",
                self.ed_observation(
                    "MimicObservationED",
                    _CHIEF_COMPLAINT,
                    start,
                    ref,
                    triage,
                    None,
                    valueString=_plain(C.CONDITIONS[reason]).lower(),
                ),
            )
        self.ed_vitals("MimicObservationED", start, ref, triage, vitals, noise=0.0)
        # then a vital signs row every one to two hours
        t = start + r.uniform(0.5, 1.5) * HOUR
        while t < end - 15 * MINUTE:
            proc = self.ed_procedure(_VITALS_PROC, t, ref)
            self.ed_vitals("MimicObservationVitalSignsED", t, ref, proc, vitals, noise=1.0)
            t += r.uniform(1.0, 2.0) * HOUR
        # medication reconciliation: the home medications
        for rx in self.home_medications(start):
            key = next((k for k, meds in C.CHRONIC_MEDICATIONS.items() if rx in meds), "")
            etc = M.ETC_CLASSES.get(key, M.ETC_OTHER)
            self.emit(
                "MimicMedicationStatementED",
                {
                    "resourceType": "MedicationStatement",
                    "id": self.new_id(),
                    "meta": _META["MimicMedicationStatementED"],
                    "status": "unknown",
                    "medicationCodeableConcept": {
                        "coding": [
                            _coding(M.MEDICATION_GSN, M.placeholder_gsn(rx)),
                            _coding(M.MEDICATION_ETC, etc[0], etc[1]),
                        ],
                        "text": M.MEDICATION_NAMES[rx],
                    },
                    "subject": self.subj,
                    "context": ref,
                    "dateAsserted": self.dt(start + 20 * MINUTE),
                },
            )
        return ref

    def ed_procedure(self, code: dict, t: float, encounter: dict) -> dict:
        pid = self.new_id()
        self.emit(
            "MimicProcedureED",
            {
                "resourceType": "Procedure",
                "id": pid,
                "meta": _META["MimicProcedureED"],
                "status": "completed",
                "code": code,
                "subject": self.subj,
                "encounter": encounter,
                "performedDateTime": self.dt(t),
            },
        )
        return {"reference": f"Procedure/{pid}"}

    def ed_observation(
        self,
        stem: str,
        code: dict,
        t: float,
        encounter: dict,
        part_of: dict,
        category: list | None,
        **value: Any,
    ) -> dict:
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.new_id(),
            "meta": _META[stem],
            "partOf": [part_of],
            "status": "final",
        }
        if category is not None:
            res["category"] = category
        res |= {"code": code, "subject": self.subj, "encounter": encounter}
        res["effectiveDateTime"] = self.dt(t)
        res |= value
        return res

    def ed_vitals(
        self, stem: str, t: float, encounter: dict, part_of: dict, vitals: _Vitals, noise: float
    ) -> None:
        g = self.rng.gauss
        values = {
            "temperature": round((vitals.at("temperature", t) + noise * g(0, 0.15)) * 1.8 + 32, 1),
            "heart_rate": round(vitals.at("heart_rate", t) + noise * g(0, 5)),
            "resp_rate": round(vitals.at("resp_rate", t) + noise * g(0, 1.5)),
            "spo2": min(100, round(vitals.at("spo2", t) + noise * g(0, 1))),
        }
        for key, value in values.items():
            self.emit(
                stem,
                self.ed_observation(
                    stem,
                    _LOINC[key],
                    t,
                    encounter,
                    part_of,
                    _VITAL_CATEGORY,
                    valueQuantity=_quantity(value, _UCUM[key], C.UCUM),
                ),
            )
        sbp = round(vitals.at("sbp", t) + noise * g(0, 7))
        dbp = round(min(vitals.at("dbp", t) + noise * g(0, 5), sbp - 10))
        self.emit(
            stem,
            self.ed_observation(
                stem,
                _LOINC["bp"],
                t,
                encounter,
                part_of,
                _VITAL_CATEGORY,
                component=[
                    {"code": _LOINC["sbp"], "valueQuantity": _quantity(sbp, "mm[Hg]", C.UCUM)},
                    {"code": _LOINC["dbp"], "valueQuantity": _quantity(dbp, "mm[Hg]", C.UCUM)},
                ],
            ),
        )

    def ed_dispense(self, rx: str, t: float, encounter: dict) -> None:
        self.emit(
            "MimicMedicationDispenseED",
            {
                "resourceType": "MedicationDispense",
                "id": self.new_id(),
                "meta": _META["MimicMedicationDispenseED"],
                "status": "completed",
                "medicationCodeableConcept": {
                    "coding": [_coding(M.MEDICATION_GSN, M.placeholder_gsn(rx))],
                    "text": M.MEDICATION_NAMES[rx],
                },
                "subject": self.subj,
                "context": encounter,
                "whenHandedOver": self.dt(t),
            },
        )

    def diagnoses(self, stem: str, snomed_codes: list[str], t: float, encounter: dict) -> None:
        """Encounter diagnoses in the ICD version of the stay's date, each code once."""
        seen: set[str] = set()
        for snomed in snomed_codes:
            code = self.dx_coding(snomed, t)
            key = code["coding"][0]["code"]
            if key in seen:
                continue
            seen.add(key)
            self.emit(
                stem,
                {
                    "resourceType": "Condition",
                    "id": self.new_id(),
                    "meta": _META[stem],
                    "category": _ENC_DX,
                    "code": code,
                    "subject": self.subj,
                    "encounter": encounter,
                },
            )

    # ----------------------------------------------------------------------------- hospital
    def admission(self, v: Visit, events: list[Event], prev_end: float) -> None:
        r = self.rng
        self.n_hadm += 1
        hid = self.new_id()
        hosp = {"reference": f"Encounter/{hid}"}
        reason = v.reason or ""
        from_ed = v.admit_source == "emd"
        if reason in _OBSERVATION_STAYS:
            klass = "EU OBSERVATION" if from_ed else "DIRECT OBSERVATION"
            priority = "UR"
        elif from_ed:
            klass = r.choices(("EW EMER.", "URGENT", "DIRECT EMER."), (0.7, 0.2, 0.1))[0]
            priority = "EM"
        elif reason in M.SURGICAL_ELECTIVE:
            klass = "ELECTIVE" if r.random() < 0.6 else "SURGICAL SAME DAY ADMISSION"
            priority = "EL"
        else:
            klass = "URGENT" if r.random() < 0.7 else "OBSERVATION ADMIT"
            priority = "UR"
        service, ward = M.SERVICE_BY_REASON.get(reason, M.DEFAULT_SERVICE)
        admit_source = {"emd": "EMERGENCY ROOM", "gp": "PHYSICIAN REFERRAL"}.get(
            v.admit_source or "", "CLINIC REFERRAL"
        )
        icu = self.icu_period(v, events)
        locations = []
        if icu is not None:
            unit = M.ICU_UNITS.get(reason, M.MICU)
            locations.append((unit, icu[0], icu[1]))
        locations.append((ward, icu[1] if icu else v.start, v.end))
        self.emit(
            "MimicEncounter",
            {
                "resourceType": "Encounter",
                "id": hid,
                "meta": _META["MimicEncounter"],
                "identifier": [
                    {
                        "system": M.identifier_system("encounter-hosp"),
                        "value": str(20_000_000 + self.tl.index * 64 + self.n_hadm),
                        "assigner": _ORG_REF,
                    }
                ],
                "status": "finished",
                "class": _coding(M.ADMISSION_CLASS, klass),
                "type": _TYPE_HOSP,
                "serviceType": _cc(M.SERVICES, service),
                "priority": _cc(M.ACT_PRIORITY, priority),
                "subject": self.subj,
                "period": {"start": self.dt(v.start), "end": self.dt(v.end)},
                "hospitalization": {
                    "admitSource": _cc(M.ADMIT_SOURCE, admit_source),
                    "dischargeDisposition": _cc(M.DISCHARGE_DISPOSITION, M.DISCHARGE[v.discharge]),
                },
                "location": [
                    {
                        "location": {"reference": f"Location/{location_id(name)}"},
                        "period": {"start": self.dt(a), "end": self.dt(b)},
                    }
                    for name, a, b in locations
                ],
                "serviceProvider": _ORG_REF,
            },
        )
        if from_ed:
            ed_in = max(v.start - r.uniform(2, 6) * HOUR, prev_end + 30 * MINUTE)
            if ed_in <= v.start - 30 * MINUTE:
                ed_out = min(v.start + r.uniform(10, 60) * MINUTE, v.end)
                first = [ev for ev in events if ev.time <= v.start + 2 * HOUR]
                ed = self.ed_stay(ed_in, ed_out, first, "ADMITTED", hid)
                self.diagnoses("MimicConditionED", [reason] if reason else [], ed_in, ed)
        self.labs(events, hosp)
        codes = [ev.code for ev in events if ev.kind == CONDITION]
        self.diagnoses("MimicCondition", codes + self.active_conditions(v.start), v.start, hosp)
        self.procedures(v, events, hosp)
        self.medications(v, events, hosp, icu)
        self.microbiology(v, events, hosp)
        if icu is not None:
            self.icu_stay(v, events, hid, icu)

    def icu_period(self, v: Visit, events: list[Event]) -> tuple[int, int] | None:
        r = self.rng
        icu_proc = next(
            (ev for ev in events if ev.kind == PROCEDURE and ev.code == "305351004"), None
        )
        died = v.discharge == "exp"
        p = 1.0 if icu_proc else 0.75 if died else 0.6 if v.reason in _SEVERE else 0.15
        if v.end - v.start > 7 * DAY:
            p += 0.1
        if r.random() >= p:
            return None
        start = icu_proc.time if icu_proc else v.start + r.uniform(1, 6) * HOUR
        if died:
            end = v.end
        else:
            # MIMIC's ICU stays last about two days (median), within a longer hospital stay
            typical = r.lognormvariate(0.7, 0.6) * DAY
            length = max(12 * HOUR, min((v.end - start) * r.uniform(0.3, 0.8), typical))
            end = min(start + length, v.end - HOUR)
        if end - start < 4 * HOUR:
            return None
        return int(start), int(end)

    def procedures(self, v: Visit, events: list[Event], hosp: dict) -> None:
        icd10 = self.icd10(v.start)
        billed: set[tuple[int, str]] = set()
        for ev in events:
            if ev.kind != PROCEDURE or ev.code not in M.PROCEDURES:
                continue
            if (ev.time // DAY, ev.code) in billed:  # a code is billed once a day
                continue
            billed.add((ev.time // DAY, ev.code))
            icd9, icd10_code = M.PROCEDURES[ev.code]
            display = _plain(C.PROCEDURES[ev.code])
            system, code = (M.PROCEDURE_ICD10, icd10_code) if icd10 else (M.PROCEDURE_ICD9, icd9)
            self.emit(
                "MimicProcedure",
                {
                    "resourceType": "Procedure",
                    "id": self.new_id(),
                    "meta": _META["MimicProcedure"],
                    "identifier": [
                        {"system": M.identifier_system("procedure"), "value": self.row_id()}
                    ],
                    "status": "completed",
                    "code": _cc(system, code, display),
                    "subject": self.subj,
                    "encounter": hosp,
                    "performedDateTime": self.day(ev.time),
                },
            )

    def medications(
        self, v: Visit, events: list[Event], hosp: dict, icu: tuple[int, int] | None
    ) -> None:
        """Orders of the stay and the continued home medications: request, dispense and
        administrations (those during an ICU stay are charted by the ICU instead)."""
        r = self.rng
        orders = [(ev.time, ev.code, False) for ev in events if ev.kind == MEDICATION]
        orders += [
            (v.start + r.uniform(2, 6) * HOUR, rx, True) for rx in self.home_medications(v.start)
        ]
        for t, rx, home in orders:
            t = min(t, v.end - MINUTE)
            iv = rx in M.IV_DRUGS
            med_id = mix_id(rx) if iv and rx in M.MIXES else medication_id(rx)
            med_ref = {"reference": f"Medication/{med_id}"}
            stop = v.end if home else min(v.end, t + r.uniform(1, 5) * DAY)
            rid = self.new_id()
            route = "IV" if iv else "PO/NG"
            every = 24 if home else (8 if iv else 12)
            self.emit(
                "MimicMedicationRequest",
                {
                    "resourceType": "MedicationRequest",
                    "id": rid,
                    "meta": _META["MimicMedicationRequest"],
                    "identifier": [
                        {
                            "system": M.identifier_system("medication-request"),
                            "value": self.row_id(),
                        }
                    ],
                    "status": "completed" if v.discharge != "exp" else "stopped",
                    "intent": "order",
                    "medicationReference": med_ref,
                    "subject": self.subj,
                    "encounter": hosp,
                    "authoredOn": self.dt(t),
                    "dosageInstruction": [
                        {
                            "timing": {"code": _cc(M.MEDICATION_FREQUENCY, f"Q{every}H")},
                            "route": _cc(M.MEDICATION_ROUTE, route),
                        }
                    ],
                    "dispenseRequest": {
                        "validityPeriod": {"start": self.dt(t), "end": self.dt(stop)}
                    },
                },
            )
            request = {"reference": f"MedicationRequest/{rid}"}
            self.emit(
                "MimicMedicationDispense",
                {
                    "resourceType": "MedicationDispense",
                    "id": self.new_id(),
                    "meta": _META["MimicMedicationDispense"],
                    "identifier": [
                        {
                            "system": M.identifier_system("medication-dispense"),
                            "value": self.row_id(),
                        }
                    ],
                    "status": "completed",
                    "medicationCodeableConcept": _cc(M.MEDICATION_NAME, M.MEDICATION_NAMES[rx]),
                    "subject": self.subj,
                    "context": hosp,
                    "authorizingPrescription": [request],
                    "whenHandedOver": self.dt(min(t + r.uniform(15, 90) * MINUTE, v.end)),
                },
            )
            ta = t + r.uniform(20, 60) * MINUTE
            for _ in range(4):
                if ta >= stop:
                    break
                if icu is None or not icu[0] <= ta < icu[1]:
                    self.emit(
                        "MimicMedicationAdministration",
                        {
                            "resourceType": "MedicationAdministration",
                            "id": self.new_id(),
                            "meta": _META["MimicMedicationAdministration"],
                            "identifier": [
                                {
                                    "system": M.identifier_system("medication-administration"),
                                    "value": self.row_id(),
                                }
                            ],
                            "status": "completed",
                            "medicationReference": med_ref,
                            "subject": self.subj,
                            "context": hosp,
                            "effectiveDateTime": self.dt(ta),
                            "request": request,
                        },
                    )
                ta += every * HOUR

    def microbiology(self, v: Visit, events: list[Event], hosp: dict) -> None:
        r = self.rng
        reason = v.reason or ""
        cultured = any(ev.kind == PROCEDURE and ev.code == "117010004" for ev in events)
        if reason not in M.INFECTIOUS_ADMISSIONS and not cultured:
            return
        tests = [M.MICRO_BLOOD] * (2 if reason == "91302008" else 1)
        if reason in ("91302008", "68566005") or cultured:
            tests.append(M.MICRO_URINE)
        for code, name, specimen_type in tests:
            t = v.start + r.uniform(0.5, 4) * HOUR
            spec_id = self.new_id()
            self.emit(
                "MimicSpecimen",
                {
                    "resourceType": "Specimen",
                    "id": spec_id,
                    "meta": _META["MimicSpecimen"],
                    "identifier": [
                        {"system": M.identifier_system("specimen-micro"), "value": self.row_id()}
                    ],
                    "type": _cc(M.SPEC_TYPE, specimen_type),
                    "subject": self.subj,
                    "collection": {"collectedDateTime": self.dt(t)},
                },
            )
            positive = r.random() < (0.5 if reason == "91302008" else 0.3)
            test_id = self.new_id()
            self.emit(
                "MimicObservationMicroTest",
                {
                    "resourceType": "Observation",
                    "id": test_id,
                    "meta": _META["MimicObservationMicroTest"],
                    "status": "final",
                    "category": _LAB_CATEGORY,
                    "code": _cc(M.MICRO_TEST, code, name),
                    "subject": self.subj,
                    "encounter": hosp,
                    "effectiveDateTime": self.dt(t),
                    "valueString": "POSITIVE" if positive else "NO GROWTH",
                    "specimen": {"reference": f"Specimen/{spec_id}"},
                },
            )
            if not positive:
                continue
            org_code, org_name = r.choice(M.ORGANISMS)
            org_id = self.new_id()
            t_result = self.dt(t + r.uniform(1, 3) * DAY)
            susc_ids = [self.new_id() for _ in range(r.randint(2, len(M.ANTIBIOTICS)))]
            self.emit(
                "MimicObservationMicroOrg",
                {
                    "resourceType": "Observation",
                    "id": org_id,
                    "meta": _META["MimicObservationMicroOrg"],
                    "status": "final",
                    "category": [_cc(M.HL7_OBS_CATEGORY, "laboratory", "Laboratory")],
                    "code": _cc(M.MICRO_ORGANISM, org_code, org_name),
                    "subject": self.subj,
                    "effectiveDateTime": t_result,
                    "valueString": org_name,
                    "hasMember": [{"reference": f"Observation/{s}"} for s in susc_ids],
                    "derivedFrom": [{"reference": f"Observation/{test_id}"}],
                },
            )
            for sid, (ab_code, ab_name) in zip(susc_ids, M.ANTIBIOTICS, strict=False):
                interpretation = r.choices("SRI", (0.7, 0.25, 0.05))[0]
                self.emit(
                    "MimicObservationMicroSusc",
                    {
                        "resourceType": "Observation",
                        "id": sid,
                        "meta": _META["MimicObservationMicroSusc"],
                        "status": "final",
                        "category": [_cc(M.HL7_OBS_CATEGORY, "laboratory", "Laboratory")],
                        "code": _cc(M.MICRO_ANTIBIOTIC, ab_code, ab_name),
                        "subject": self.subj,
                        "effectiveDateTime": t_result,
                        "valueCodeableConcept": _cc(M.INTERPRETATION, interpretation),
                        "derivedFrom": [{"reference": f"Observation/{org_id}"}],
                    },
                )

    # ----------------------------------------------------------------------------- ICU
    def icu_stay(self, v: Visit, events: list[Event], hid: str, icu: tuple[int, int]) -> None:
        r = self.rng
        g = r.gauss
        start, end = icu
        self.n_stay += 1
        eid = self.new_id()
        unit = M.ICU_UNITS.get(v.reason or "", M.MICU)
        self.emit(
            "MimicEncounterICU",
            {
                "resourceType": "Encounter",
                "id": eid,
                "meta": _META["MimicEncounterICU"],
                "identifier": [
                    {
                        "system": M.identifier_system("encounter-icu"),
                        "value": str(30_000_000 + self.tl.index * 64 + self.n_stay),
                        "assigner": _ORG_REF,
                    }
                ],
                "status": "finished",
                "class": _ICU_CLASS,
                "type": _TYPE_STAY,
                "subject": self.subj,
                "period": {"start": self.dt(start), "end": self.dt(end)},
                "location": [
                    {
                        "location": {"reference": f"Location/{location_id(unit)}"},
                        "period": {"start": self.dt(start), "end": self.dt(end)},
                    }
                ],
                "partOf": {"reference": f"Encounter/{hid}"},
                "serviceProvider": _ORG_REF,
            },
        )
        ref = {"reference": f"Encounter/{eid}"}
        vitals = _Vitals(events)
        vent = [
            (ev.time, ev.end or ev.time + DAY)
            for ev in events
            if ev.kind == PROCEDURE and ev.code == "40617009"
        ]
        afib = "49436004" in self.active_conditions(end)
        creatinine = [
            (ev.time, ev.value)
            for ev in events
            if ev.kind == OBSERVATION and ev.code == "creatinine"
        ]
        self.chart(
            ref, start, _CHART_WEIGHT, valueQuantity=_quantity(round(self.weight(start), 1), "kg")
        )
        hour = int(start) // HOUR * HOUR + HOUR
        n = 0
        while hour < end:
            on_vent = any(a <= hour < b for a, b in vent)
            hr = vitals.at("heart_rate", hour) + g(0, 4)
            sbp = vitals.at("sbp", hour) + g(0, 6)
            dbp = min(vitals.at("dbp", hour) + g(0, 4), sbp - 10)
            hourly = {
                "heart_rate": round(hr),
                "resp_rate": round(vitals.at("resp_rate", hour) + g(0, 1.5)),
                "spo2": min(100, round(vitals.at("spo2", hour) + g(0, 1))),
                "sbp": round(sbp),
                "dbp": round(dbp),
                "mbp": round((sbp + 2 * dbp) / 3),
            }
            for key, value in hourly.items():
                self.chart(ref, hour, _CHART[key], valueQuantity=_quantity(value, _CHART[key][2]))
            if n % 4 == 0:
                temp = (vitals.at("temperature", hour) + g(0, 0.15)) * 1.8 + 32
                self.chart(
                    ref,
                    hour,
                    _CHART["temperature"],
                    valueQuantity=_quantity(round(temp, 1), _CHART["temperature"][2]),
                )
                gcs = (3, 1, 5) if on_vent else (4, 5, 6)
                for key, value in zip(("gcs_eye", "gcs_verbal", "gcs_motor"), gcs, strict=True):
                    self.chart(ref, hour, _CHART[key], valueQuantity={"value": value})
            if n % 2 == 0:
                for i, (code, category, values) in enumerate(_CHART_TEXT):
                    if i == 0:
                        text = M.AFIB_RHYTHM if afib else values[int(hr > 100)]
                    elif i == 2 and on_vent:
                        text = M.VENT_DEVICE
                    else:
                        text = values[0] if r.random() < 0.6 else r.choice(values)
                    self.chart(ref, hour, (code, category, None), valueString=text)
                for code, category, value in _CHART_ALARMS:
                    self.chart(ref, hour, (code, category, None), valueQuantity=value)
                cr = [c for t, c in creatinine if t <= hour]
                factor = 0.45 if cr and cr[-1] > 2.0 else 1.0
                self.icu_observation(
                    "MimicObservationOutputevents",
                    _OUTPUT[0],
                    _OUTPUT[1],
                    ref,
                    hour,
                    valueQuantity=_quantity(round(max(5.0, g(70, 25)) * factor), "ml"),
                )
            if n % 24 == 1:
                self.icu_observation(
                    "MimicObservationDatetimeevents",
                    r.choice(_DATETIME),
                    _DATETIME_CATEGORY,
                    ref,
                    hour,
                    valueDateTime=self.day(start),
                )
            if n % 24 == 2:
                self.icu_procedure(M.ICU_PROC_DAILY, hour, hour + 30 * MINUTE, ref)
            hour += HOUR
            n += 1
        for item in M.ICU_PROC_AT_ADMISSION:
            self.icu_procedure(
                item, start + 30 * MINUTE, end if item[2] != "Imaging" else start + HOUR, ref
            )
        for ev in events:
            if ev.kind == PROCEDURE and ev.code in M.ICU_PROCEDURES and start <= ev.time < end:
                self.icu_procedure(
                    M.ICU_PROCEDURES[ev.code], ev.time, min(ev.end or ev.time + HOUR, end), ref
                )
        drips = {M.ICU_MAINTENANCE: start + 30 * MINUTE}  # one series per drug
        for ev in events:
            icu_drug = ev.kind == MEDICATION and ev.code in M.ICU_MEDICATIONS
            if icu_drug and start - 2 * HOUR <= ev.time < end and ev.code not in drips:
                drips[ev.code] = max(ev.time, start)
        for rx, t0 in drips.items():
            item, label, unit, low, high, every, category = M.ICU_MEDICATIONS[rx]
            t = t0
            while t < min(end, t0 + 3 * DAY):
                t_end = min(t + min(every, 2) * HOUR, end)
                self.emit(
                    "MimicMedicationAdministrationICU",
                    {
                        "resourceType": "MedicationAdministration",
                        "id": self.new_id(),
                        "meta": _META["MimicMedicationAdministrationICU"],
                        "identifier": [
                            {
                                "system": M.identifier_system("medication-administration-icu"),
                                "value": self.row_id(),
                            }
                        ],
                        "status": "completed",
                        "category": _cc(M.MEDADMIN_CATEGORY_ICU, category),
                        "medicationCodeableConcept": _cc(M.MEDICATION_ICU, item, label),
                        "subject": self.subj,
                        "context": ref,
                        "effectivePeriod": {"start": self.dt(t), "end": self.dt(t_end)},
                        "dosage": {
                            "dose": _quantity(round(r.uniform(low, high), 2), unit),
                        },
                    },
                )
                t += every * HOUR

    def chart(self, encounter: dict, t: float, item: tuple, **value: Any) -> None:
        self.icu_observation("MimicObservationChartevents", item[0], item[1], encounter, t, **value)

    def icu_observation(
        self, stem: str, code: dict, category: list, encounter: dict, t: float, **value: Any
    ) -> None:
        res = {
            "resourceType": "Observation",
            "id": self.new_id(),
            "meta": _META[stem],
            "status": "final",
            "category": category,
            "code": code,
            "subject": self.subj,
            "encounter": encounter,
            "effectiveDateTime": self.dt(t),
            "issued": self.dt(t + 5 * MINUTE),
        }
        res |= value
        self.emit(stem, res)

    def icu_procedure(
        self, item: tuple[str, str, str], start: float, end: float, encounter: dict
    ) -> None:
        code, label, category = item
        self.emit(
            "MimicProcedureICU",
            {
                "resourceType": "Procedure",
                "id": self.new_id(),
                "meta": _META["MimicProcedureICU"],
                "identifier": [
                    {"system": M.identifier_system("procedure-icu"), "value": self.row_id()}
                ],
                "status": "completed",
                "category": _cc(M.PROCEDURE_CATEGORY, category),
                "code": _cc(M.D_ITEMS, code, label),
                "subject": self.subj,
                "encounter": encounter,
                "performedPeriod": {"start": self.dt(start), "end": self.dt(max(start, end))},
            },
        )


def render_mimic_patient(tl: Timeline) -> dict[str, list[dict]] | None:
    """Patient ``tl`` as MIMIC-IV on FHIR resources per file stem; None when the patient would
    not be in MIMIC (a child, or no hospital or ED stay in the window). Treat the output as
    read-only: constant parts are shared between resources."""
    if not is_eligible(tl):
        return None
    return _Patient(tl).render()
