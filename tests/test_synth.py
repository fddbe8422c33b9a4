"""Tests of the synthetic FHIR cohort generator (``ehrmamba.synth``).

The cohort is the platform's default dataset, so besides determinism and FHIR validity these
tests pin down the clinical properties every later stage relies on: no event outside a life,
encounters that reference each other correctly, and temporal signals for every prediction task
that are strong enough to be learnable (checked as concrete inequalities that would fail if the
simulation lost them).
"""

from __future__ import annotations

import gzip
import itertools
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from ehrmamba.synth import (
    CONDITION_GROUPS,
    CohortSummary,
    generate_patient,
    iter_cohort,
    simulate_patient,
    transaction_bundle,
    write_cohort,
)
from ehrmamba.synth import catalog as C
from ehrmamba.synth.render_fhir import render_patient
from ehrmamba.synth.timeline import DATA_CUT, DAY, YEAR, Timeline

SEED = 11
DATETIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")
N_SIGNAL = 500
DATETIME_FIELDS = (
    "effectiveDateTime",
    "onsetDateTime",
    "abatementDateTime",
    "recordedDate",
    "authoredOn",
    "occurrenceDateTime",
    "performedDateTime",
)


@pytest.fixture(scope="module")
def timelines() -> list[Timeline]:
    return [simulate_patient(i, SEED) for i in range(N_SIGNAL)]


def _dt(s: str) -> datetime:
    return datetime.fromisoformat(s)


def _resource_times(r: dict) -> list[str]:
    out = [r[k] for k in DATETIME_FIELDS if k in r]
    for k in ("period", "performedPeriod"):
        if k in r:
            out += [r[k]["start"], r[k]["end"]]
    return out


def _read_bundles(files: list[Path]) -> list[dict]:
    return [orjson.loads(gzip.decompress(f.read_bytes())) for f in files]


# ---------------------------------------------------------------------------------------------
# determinism and layout
# ---------------------------------------------------------------------------------------------
def test_generate_patient_is_deterministic_and_order_independent() -> None:
    a = generate_patient(7, SEED)
    assert a == generate_patient(7, SEED)
    cohort = list(iter_cohort(9, SEED))
    assert len(cohort) == 9
    assert cohort[7] == a
    assert a[0]["resourceType"] == "Patient"
    assert generate_patient(7, SEED + 1) != a
    assert generate_patient(8, SEED)[0]["id"] != a[0]["id"]
    # the public API hands out independent copies
    a[1]["id"] = "changed"
    assert generate_patient(7, SEED)[1]["id"] != "changed"


def test_write_cohort_is_byte_identical(tmp_path: Path) -> None:
    s1 = write_cohort(tmp_path / "a", 12, SEED)
    s2 = write_cohort(tmp_path / "b", 12, SEED)
    s3 = write_cohort(tmp_path / "c", 12, SEED + 1)
    assert isinstance(s1, CohortSummary) and s1.n_patients == 12 and len(s1.files) == 12
    assert [f.name for f in s1.files] == [f.name for f in s2.files]
    assert all(
        f1.read_bytes() == f2.read_bytes() for f1, f2 in zip(s1.files, s2.files, strict=True)
    )
    assert s1.resource_counts == s2.resource_counts
    assert {f.name for f in s1.files}.isdisjoint({f.name for f in s3.files})
    for fmt in ("ndjson",):
        n1 = write_cohort(tmp_path / "n1", 6, SEED, fmt=fmt)
        n2 = write_cohort(tmp_path / "n2", 6, SEED, fmt=fmt)
        assert [f.read_bytes() for f in n1.files] == [f.read_bytes() for f in n2.files]


def test_bundles_are_transactions_with_internal_urn_references(tmp_path: Path) -> None:
    summary = write_cohort(tmp_path / "out", 8, SEED, progress=False)
    bundles = _read_bundles(summary.files)
    counts: Counter[str] = Counter()
    for f, b in zip(summary.files, bundles, strict=True):
        assert b["resourceType"] == "Bundle" and b["type"] == "transaction"
        entries = b["entry"]
        patient = entries[0]["resource"]
        assert patient["resourceType"] == "Patient"
        assert f.name == f"{patient['id']}.json.gz"
        full_urls = {e["fullUrl"] for e in entries}
        for e in entries:
            r = e["resource"]
            counts[r["resourceType"]] += 1
            assert e["fullUrl"] == f"urn:uuid:{r['id']}"
            assert e["request"] == {"method": "POST", "url": r["resourceType"]}
            for key in ("subject", "patient", "encounter"):
                if key in r:
                    ref = r[key]["reference"]
                    assert ref.startswith("urn:uuid:") and ref in full_urls
    assert counts == summary.resource_counts


def test_rewriting_leaves_no_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    write_cohort(out, 10, SEED)
    (out / "notes.txt").write_text("keep me")
    nd = write_cohort(out, 5, SEED, fmt="ndjson")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*(f.name for f in nd.files), "notes.txt"])
    assert not any(n.endswith(".json.gz") and not n.endswith(".ndjson.gz") for n in names)
    b = write_cohort(out, 4, SEED, progress=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f.name for f in b.files), "notes.txt"]
    )
    assert not list(tmp_path.glob(".*partial*"))


def test_ndjson_layout(tmp_path: Path) -> None:
    summary = write_cohort(tmp_path / "nd", 25, SEED, fmt="ndjson")
    assert {f.name for f in summary.files} == {
        f"{t}.000.ndjson.gz" for t in summary.resource_counts
    }
    ids: dict[str, set[str]] = defaultdict(set)
    refs: list[str] = []
    for f in summary.files:
        rtype = f.name.split(".")[0]
        lines = gzip.decompress(f.read_bytes()).splitlines()
        assert len(lines) == summary.resource_counts[rtype]
        for line in lines:
            r = orjson.loads(line)
            assert r["resourceType"] == rtype
            ids[rtype].add(r["id"])
            for key in ("subject", "patient", "encounter"):
                if key in r:
                    refs.append(r[key]["reference"])
    assert len(ids["Patient"]) == summary.n_patients == 25
    assert refs
    for ref in refs:
        rtype, rid = ref.split("/")
        assert rtype in ("Patient", "Encounter") and rid in ids[rtype]


# ---------------------------------------------------------------------------------------------
# FHIR validity and codes
# ---------------------------------------------------------------------------------------------
def test_resources_validate_as_fhir_r4b() -> None:
    seen: Counter[str] = Counter()
    patients = [generate_patient(i, SEED) for i in range(30)]
    for patient in patients:
        for r in patient:
            get_fhir_model_class(r["resourceType"]).model_validate(r)
            seen[r["resourceType"]] += 1
    assert set(seen) == {
        "Patient",
        "Encounter",
        "Condition",
        "Procedure",
        "MedicationRequest",
        "Observation",
        "Immunization",
    }
    # whole transaction Bundles validate too (smallest few patients, for speed)
    sizes = sorted((len(p), i) for i, p in enumerate(patients))
    for _, i in sizes[:4]:
        bundle = transaction_bundle(generate_patient(i, SEED, references="urn"))
        get_fhir_model_class("Bundle").model_validate(bundle)


def test_codes_systems_and_units() -> None:
    loinc = {m.code: m for m in C.MEASURES.values()}
    classes: Counter[str] = Counter()
    for i in range(40):
        for r in generate_patient(i, SEED):
            t = r["resourceType"]
            if t == "Encounter":
                assert r["class"]["system"] == C.ACT_CODE
                classes[r["class"]["code"]] += 1
                assert r["type"][0]["coding"][0]["system"] == C.SNOMED
            elif t == "Condition":
                coding = r["code"]["coding"][0]
                assert coding["system"] == C.SNOMED and coding["code"] in C.CONDITIONS
                assert coding["display"] == C.CONDITIONS[coding["code"]]
            elif t == "Procedure":
                assert r["code"]["coding"][0]["system"] == C.SNOMED
            elif t == "MedicationRequest":
                coding = r["medicationCodeableConcept"]["coding"][0]
                assert coding["system"] == C.RXNORM and coding["code"] in C.MEDICATIONS
                assert r["intent"] == "order" and r["status"] in ("active", "completed", "stopped")
            elif t == "Immunization":
                assert r["vaccineCode"]["coding"][0]["system"] == C.CVX
                assert r["status"] == "completed"
            elif t == "Observation":
                coding = r["code"]["coding"][0]
                assert coding["system"] == C.LOINC
                m = loinc[coding["code"]]
                if coding["code"] == "85354-9":
                    assert "valueQuantity" not in r
                    comps = {c["code"]["coding"][0]["code"]: c for c in r["component"]}
                    assert set(comps) == {"8480-6", "8462-4"}
                    sbp = comps["8480-6"]["valueQuantity"]["value"]
                    dbp = comps["8462-4"]["valueQuantity"]["value"]
                    assert 30 <= dbp < sbp <= 250
                else:
                    q = r["valueQuantity"]
                    assert q["system"] == C.UCUM and q["code"] == q["unit"] == m.unit
                    assert m.low <= q["value"] <= m.high
                assert r["category"][0]["coding"][0]["code"] == m.category
    assert set(classes) == {"AMB", "EMER", "IMP"}
    # the catalogue is a few hundred real codes, and the task value sets are in it
    n_codes = sum(len(d) for d in C.DISPLAY.values())
    assert 250 <= n_codes <= 600
    for group in CONDITION_GROUPS.values():
        assert group and all(C.CONDITIONS[c] == d for c, d in group.items())
    assert "38341003" in CONDITION_GROUPS["hypertension"]
    assert "13644009" in CONDITION_GROUPS["lipoid"]
    assert "89627008" in CONDITION_GROUPS["fluid_electrolyte"]


# ---------------------------------------------------------------------------------------------
# temporal sanity, on FHIR
# ---------------------------------------------------------------------------------------------
def test_no_event_outside_life_and_encounters_are_consistent(timelines: list[Timeline]) -> None:
    # one patient has one UTC offset, so its timestamps compare correctly as strings; the
    # format (seconds and offset) is checked on the patient's death and its encounter periods
    n_deceased = 0
    ages = []
    sizes = []
    for patient in (render_patient(tl) for tl in timelines[:300]):
        p = patient[0]
        birth = p["birthDate"]
        death = p.get("deceasedDateTime")
        n_deceased += death is not None
        if death is not None:
            assert DATETIME_RE.fullmatch(death) and death[:10] >= birth
        end_of_life = date.fromisoformat(death[:10]) if death else date(2025, 12, 31)
        ages.append((end_of_life - date.fromisoformat(birth)).days / 365.25)
        sizes.append(len(patient))
        encounters = {}
        for r in patient[1:]:
            for t in _resource_times(r):
                assert t[:10] >= birth, r
                assert t[:19] <= "2025-12-31T23:59:59"
                if death is not None:
                    assert t <= death, r
            if r["resourceType"] == "Encounter":
                start, end = r["period"]["start"], r["period"]["end"]
                assert DATETIME_RE.fullmatch(start) and DATETIME_RE.fullmatch(end)
                assert _dt(end) >= _dt(start)
                encounters[f"Encounter/{r['id']}"] = (start, end)
                assert r["subject"]["reference"] == f"Patient/{p['id']}"
            else:
                ref = r.get("subject", r.get("patient"))["reference"]
                assert ref == f"Patient/{p['id']}"
                start, end = encounters[r["encounter"]["reference"]]
                own = (
                    r.get("effectiveDateTime")
                    or r.get("recordedDate")
                    or r.get("authoredOn")
                    or r.get("occurrenceDateTime")
                    or r.get("performedDateTime")
                    or r["performedPeriod"]["start"]
                )
                assert start <= own <= end
        periods = sorted(encounters.values())
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(periods)), "overlapping encounters"
    assert 20 <= n_deceased <= 120
    assert min(ages) < 5 and max(ages) > 85
    assert min(sizes) < 60 and max(sizes) > 2000


# ---------------------------------------------------------------------------------------------
# signals, on the simulated timelines
# ---------------------------------------------------------------------------------------------
def _readings(tl: Timeline, key: str) -> list[tuple[int, float]]:
    return [(e.time, e.value) for e in tl.events if e.kind == "observation" and e.code == key]


def _first_dx(tl: Timeline, codes: dict[str, str]) -> tuple[int, bool] | None:
    """(time of first diagnosis, whether it was new, i.e. not known before the record)."""
    dx = [e for e in tl.events if e.kind == "condition" and e.code in codes]
    if not dx:
        return None
    e = min(dx, key=lambda e: e.time)
    return e.time, e.onset is None or e.onset >= tl.visits[0].start


def _before_dx_vs_controls(timelines: list[Timeline], group: str, key: str) -> tuple[float, float]:
    """Mean reading in the year before a new diagnosis vs. same-age readings of never-diagnosed."""
    cases: list[float] = []
    case_ages: list[float] = []
    controls: dict[int, list[float]] = defaultdict(list)
    for tl in timelines:
        dx = _first_dx(tl, CONDITION_GROUPS[group])
        readings = (
            _readings(tl, key)
            if key != "sbp"
            else [(e.time, e.value) for e in tl.events if e.code == "bp"]
        )
        if dx is None:
            for t, v in readings:
                controls[int((t - tl.person.birth) / YEAR) // 10].append(v)
        elif dx[1]:
            before = [v for t, v in readings if dx[0] - 365 * DAY <= t < dx[0]]
            if before:
                cases.append(statistics.fmean(before))
                case_ages.append((dx[0] - tl.person.birth) / YEAR)
    assert len(cases) >= 25, f"too few new {group} diagnoses with a prior {key}"
    matched = [
        statistics.fmean(controls[int(a) // 10]) for a in case_ages if controls[int(a) // 10]
    ]
    return statistics.fmean(cases), statistics.fmean(matched)


def test_rising_values_precede_condition_diagnoses(timelines: list[Timeline]) -> None:
    case, control = _before_dx_vs_controls(timelines, "hypertension", "sbp")
    assert case > control + 8, (case, control)
    case, control = _before_dx_vs_controls(timelines, "lipoid", "ldl")
    assert case > control + 12, (case, control)
    # fluid/electrolyte: sodium/potassium drift out of range in the year before the diagnosis
    out_before, out_other = [], []
    for tl in timelines:
        dx = _first_dx(tl, CONDITION_GROUPS["fluid_electrolyte"])
        for key, lo, hi in (("sodium", 135, 145), ("potassium", 3.5, 5.1)):
            for t, v in _readings(tl, key):
                out = not lo <= v <= hi
                if dx is not None and dx[1] and dx[0] - 365 * DAY <= t < dx[0]:
                    out_before.append(out)
                elif dx is None:
                    out_other.append(out)
    assert len(out_before) >= 30
    assert statistics.fmean(out_before) > 2.5 * statistics.fmean(out_other)
    # and the trend rises: last-year readings before diagnosis exceed those 1-3 years before
    deltas = []
    for tl in timelines:
        dx = _first_dx(tl, CONDITION_GROUPS["hypertension"])
        if dx and dx[1]:
            bp = [(e.time, e.value) for e in tl.events if e.code == "bp" and e.time < dx[0]]
            early = [v for t, v in bp if dx[0] - 3 * YEAR <= t < dx[0] - YEAR]
            late = [v for t, v in bp if dx[0] - YEAR <= t]
            if early and late:
                deltas.append(statistics.fmean(late) - statistics.fmean(early))
    assert len(deltas) >= 15 and statistics.fmean(deltas) > 3


def _eligible_rates(timelines: list[Timeline]) -> dict[str, float]:
    """Share of eligible encounters followed by a first diagnosis within 365 days."""
    rates = {}
    for group, codes in CONDITION_GROUPS.items():
        pos = n = 0
        for tl in timelines:
            dx = [
                min(e.time, e.onset) for e in tl.events if e.kind == "condition" and e.code in codes
            ]
            first = min(dx) if dx else None
            for v in tl.visits:
                if first is not None and first <= v.end:
                    continue
                n += 1
                pos += first is not None and first - v.end <= 365 * DAY
        rates[group] = pos / n
    return rates


def test_condition_task_prevalence(timelines: list[Timeline]) -> None:
    for group, rate in _eligible_rates(timelines).items():
        assert 0.012 < rate < 0.12, (group, rate)


def test_inpatient_stays_mortality_and_readmission(timelines: list[Timeline]) -> None:
    stays = [(tl, v) for tl in timelines for v in tl.visits if v.cls == "IMP"]
    los = [(v.end - v.start) / DAY for _, v in stays]
    assert len(stays) >= 150
    assert sum(x > 7 for x in los) >= 0.08 * len(los)
    assert sum(x < 1 for x in los) >= 0.03 * len(los)
    # admission labs (first 24 h) are worse in long stays
    lactate_long, lactate_short, wbc_long, wbc_short = [], [], [], []
    for tl, v in stays:
        if v.end - v.start < DAY:
            continue
        first = [
            e for e in tl.events if e.kind == "observation" and v.start <= e.time < v.start + DAY
        ]
        long = v.end - v.start > 7 * DAY
        for e in first:
            if e.code == "lactate":
                (lactate_long if long else lactate_short).append(e.value)
            elif e.code == "wbc":
                (wbc_long if long else wbc_short).append(e.value)
    assert statistics.fmean(lactate_long) > statistics.fmean(lactate_short) + 0.3
    assert statistics.fmean(wbc_long) > statistics.fmean(wbc_short) + 0.5

    # mortality: deaths in hospital and deaths within 30 days after an IMP/EMER discharge
    died_in_stay = died_after = discharges = 0
    cr_pos, cr_neg, hgb_pos, hgb_neg = [], [], [], []
    for tl in timelines:
        death = tl.person.death
        for v in tl.visits:
            if v.cls not in ("IMP", "EMER"):
                continue
            if death is not None and v.end >= death:
                died_in_stay += 1
                continue
            discharges += 1
            pos = death is not None and death - v.end <= 30 * DAY
            died_after += pos
            last = {}
            for e in tl.events:
                if e.kind == "observation" and e.time <= v.end and e.code in ("creatinine", "hgb"):
                    last[e.code] = e.value
            if "creatinine" in last and "hgb" in last:
                (cr_pos if pos else cr_neg).append(last["creatinine"])
                (hgb_pos if pos else hgb_neg).append(last["hgb"])
    assert died_in_stay >= 8
    assert died_after >= 15
    assert 0.015 < died_after / discharges < 0.12
    assert statistics.median(cr_pos) > statistics.median(cr_neg)
    assert statistics.fmean(hgb_pos) < statistics.fmean(hgb_neg) - 0.5

    # readmission within 30 days, more likely after recent admissions
    readmit = []
    for tl in timelines:
        imp = [v for v in tl.visits if v.cls == "IMP"]
        for i, v in enumerate(imp):
            if v.discharge == "exp":
                continue
            recent = sum(1 for w in imp[:i] if v.start - w.start < 180 * DAY)
            back = any(0 < w.start - v.end <= 30 * DAY for w in imp[i + 1 :])
            readmit.append((recent, back))
    rate = statistics.fmean(b for _, b in readmit)
    assert 0.05 < rate < 0.3
    frequent = [b for r, b in readmit if r >= 1]
    first_time = [b for r, b in readmit if r == 0]
    assert statistics.fmean(frequent) > statistics.fmean(first_time)


def test_risk_rises_with_age(timelines: list[Timeline]) -> None:
    by_band: dict[str, list[bool]] = defaultdict(list)
    for tl in timelines:
        end = tl.person.death if tl.person.death is not None else DATA_CUT
        age = (end - tl.person.birth) / YEAR
        band = "young" if age < 45 else "middle" if age < 70 else "old"
        by_band[band].append(tl.person.death is not None)
    young, old = statistics.fmean(by_band["young"]), statistics.fmean(by_band["old"])
    assert old > 4 * max(young, 0.005)
