"""Clinical simulation of one synthetic patient: a timeline of dataclass events, no FHIR.

The simulation and the rendering are kept apart so that one simulated history can be written
as FHIR R4 (``render_fhir``) or, later, in other shapes (a MIMIC flavour) without re-deciding
anything clinical. Every random draw comes from generators seeded by ``(seed, index)`` only, so a
patient is the same whatever order, process or machine generates it.

How a history is built (and why it is learnable):

1. Demographics, a record window (a few months to decades before the data cut), person-level
   risk factors (BMI trajectory, smoking, blood-pressure and lipid offsets, frailty).
2. True onset ages of chronic diseases drawn from age-dependent hazards that rise with the risk
   factors and with diseases already present (diabetes raises hypertension, CKD and CAD...).
3. A death time from a Gompertz hazard multiplied by the chronic burden. Most deaths are
   preceded by a terminal decline (months of rising creatinine, falling haemoglobin and
   albumin, more admissions) and end in hospital or within weeks of a discharge.
4. A forward walk through time that emits visits: well-child/wellness visits, chronic
   follow-ups, acute outpatient problems (Zipf-distributed), emergency visits and admissions
   whose rates rise with age, chronic burden and the terminal decline; readmissions are planned
   at discharge from the number of recent admissions, comorbidity and discharge labs.
5. Labs and vitals are read off latent trajectories: systolic pressure ramps up over the years
   before hypertension starts, LDL/triglycerides before a lipid disorder, sodium/potassium
   drift out of range before a fluid/electrolyte disorder, admission lactate/WBC follow the
   admission severity that also sets the length of stay. Diagnoses are recorded when a visit
   observes them (a high reading, an abnormal panel), so the codes follow the measurements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np

from . import catalog as C

DAY = 86_400
HOUR = 3_600
MINUTE = 60
YEAR = 365.25 * DAY
INF = float("inf")

#: The reference "data cut": histories end here, so output never depends on today's date.
DATA_CUT_DATE = date(2025, 12, 31)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
#: 23:59:59 local time on the data cut date, in seconds since 1970-01-01 00:00 local time.
DATA_CUT = (DATA_CUT_DATE.toordinal() - EPOCH_ORDINAL + 1) * DAY - 1

CONDITION = "condition"
PROCEDURE = "procedure"
MEDICATION = "medication"
OBSERVATION = "observation"
IMMUNIZATION = "immunization"


@dataclass(slots=True)
class Person:
    """Who the patient is. Times are integer seconds since 1970-01-01 in local wall time."""

    gender: str
    birth: int
    death: int | None
    tz: str
    given: str
    family: str
    city: str
    state: str


@dataclass(slots=True)
class Visit:
    """One encounter: class (AMB, EMER, IMP), SNOMED type, period and hospital details."""

    cls: str
    type_code: str
    start: int
    end: int
    reason: str | None = None
    admit_source: str | None = None
    discharge: str | None = None


@dataclass(slots=True)
class Event:
    """One clinical fact inside a visit.

    ``code`` is a SNOMED code (condition, procedure), an RxNorm code (medication), a CVX code
    (immunization) or a key of ``catalog.MEASURES`` (observation). ``value``/``value2`` hold an
    observation's value (``value2``: diastolic pressure of the blood-pressure panel). For a
    condition, ``time`` is when it was recorded, ``onset`` when it began and ``end`` when it
    resolved; for a procedure, ``end`` closes its performed period.
    """

    kind: str
    time: int
    code: str
    visit: int
    value: float | None = None
    value2: float | None = None
    end: int | None = None
    onset: int | None = None
    status: str | None = None


@dataclass(slots=True)
class Timeline:
    """A patient's whole simulated history, in time order of visits."""

    index: int
    seed: int
    id_seed: int
    person: Person
    visits: list[Visit]
    events: list[Event]


# ---------------------------------------------------------------------------------------------
# Static tables
# ---------------------------------------------------------------------------------------------
_AGES = np.arange(111, dtype=np.float64)
_CHILD_BMI = (
    13.5,
    17.2,
    16.5,
    16.0,
    15.7,
    15.5,
    15.6,
    15.8,
    16.1,
    16.6,
    17.1,
    17.7,
    18.3,
    18.9,
    19.5,
    20.1,
    20.6,
    21.1,
    21.6,
    22.0,
    22.4,
)
_HEIGHT_FRAC = (
    0.29,
    0.43,
    0.50,
    0.55,
    0.59,
    0.63,
    0.67,
    0.705,
    0.74,
    0.77,
    0.80,
    0.83,
    0.865,
    0.90,
    0.935,
    0.96,
    0.98,
    0.99,
    0.995,
    1.0,
    1.0,
)
_WELL_CHILD_MONTHS = (0.1, 1, 2, 4, 6, 9, 12, 15, 18, 24, 30, 36)
# (age in months, CVX, first calendar year the vaccine is given)
_CHILD_VACCINES = (
    (0, "08", 1991),
    (2, "08", 1991),
    (6, "08", 1991),
    (2, "20", 1991),
    (4, "20", 1991),
    (6, "20", 1991),
    (15, "20", 1991),
    (48, "20", 1991),
    (2, "10", 1991),
    (4, "10", 1991),
    (6, "10", 1991),
    (48, "10", 1991),
    (2, "49", 1991),
    (4, "49", 1991),
    (12, "49", 1991),
    (2, "PCV", 2000),
    (4, "PCV", 2000),
    (6, "PCV", 2000),
    (12, "PCV", 2000),
    (2, "116", 2006),
    (4, "116", 2006),
    (12, "03", 1980),
    (48, "03", 1980),
    (12, "21", 1995),
    (48, "21", 1995),
    (12, "83", 2006),
    (18, "83", 2006),
    (132, "115", 2005),
    (132, "114", 2005),
    (192, "114", 2005),
    (132, "HPV", 2006),
    (138, "HPV", 2006),
)
_GIVEN_M = (
    "James",
    "John",
    "Robert",
    "Michael",
    "William",
    "David",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kevin",
    "Brian",
    "Luis",
    "Carlos",
    "Wei",
    "Omar",
    "Kwame",
)
_GIVEN_F = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Nancy",
    "Lisa",
    "Betty",
    "Margaret",
    "Sandra",
    "Ashley",
    "Emily",
    "Michelle",
    "Laura",
    "Maria",
    "Sofia",
    "Mei",
    "Aisha",
    "Fatima",
    "Ana",
)
_FAMILY = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Nguyen",
    "Chen",
    "Patel",
    "Kim",
    "Okafor",
    "Schmidt",
    "Rossi",
    "Novak",
    "Cohen",
    "Murphy",
)
# (city, state, UTC offset)
_PLACES = (
    ("Boston", "MA", "-05:00"),
    ("Worcester", "MA", "-05:00"),
    ("Hartford", "CT", "-05:00"),
    ("Providence", "RI", "-05:00"),
    ("Albany", "NY", "-05:00"),
    ("Pittsburgh", "PA", "-05:00"),
    ("Chicago", "IL", "-06:00"),
    ("Milwaukee", "WI", "-06:00"),
    ("Denver", "CO", "-07:00"),
    ("Portland", "OR", "-08:00"),
)


_BOUNDS = {k: (m.low, m.high, m.decimals) for k, m in C.MEASURES.items()}


def _normal_stream(gen: np.random.Generator) -> Iterator[float]:
    while True:
        yield from gen.standard_normal(2048).tolist()


def _ramp(t: float, start: float, length: float) -> float:
    """0 before ``start``, rising linearly to 1 at ``start + length``, 1 after."""
    if t <= start:
        return 0.0
    if t >= start + length:
        return 1.0
    return (t - start) / length


def _interp(table: tuple[float, ...], age: float) -> float:
    i = int(age)
    if i >= len(table) - 1:
        return table[-1]
    f = age - i
    return table[i] * (1.0 - f) + table[i + 1] * f


class _Ctx:
    """Latent physiology at one moment, from which that moment's labs and vitals are drawn."""

    __slots__ = (
        "a1c",
        "age",
        "alb",
        "bmi",
        "bnp",
        "bun",
        "cr",
        "glu",
        "hdl",
        "height",
        "hgb",
        "hr_add",
        "k",
        "ldl",
        "na",
        "p_term",
        "sbp",
        "tg",
        "tsh",
    )


class _Sim:
    """Simulates one patient. Only ``run()`` is meant to be called."""

    def __init__(self, index: int, seed: int) -> None:
        ss = np.random.SeedSequence([seed, index])
        w = [int(x) for x in ss.generate_state(4, dtype=np.uint64)]
        self.index = index
        self.seed = seed
        self.rng = random.Random((w[0] << 64) | w[1])
        self.id_seed = (w[2] << 64) | w[3]
        # measurement noise comes from a block-generated normal stream (much faster than
        # random.gauss for the ~1000 draws a patient needs)
        self._normal = _normal_stream(np.random.Generator(np.random.PCG64(ss.spawn(1)[0])))
        self.visits: list[Visit] = []
        self.events: list[Event] = []
        self.vi = -1  # index of the current visit

    # -----------------------------------------------------------------------------------------
    # small helpers
    # -----------------------------------------------------------------------------------------
    def age(self, t: float) -> float:
        return (t - self.birth) / YEAR

    def ts(self, age: float) -> float:
        return self.birth + age * YEAR

    def gauss(self, mu: float, sd: float) -> float:
        return mu + sd * next(self._normal)

    def _exp1(self) -> float:
        return -math.log(1.0 - self.rng.random())

    def _invert(self, h: np.ndarray, e: float, start_age: float = 0.0) -> float:
        """Age at which the cumulative hazard ``h`` (per year of age) first exceeds ``e``."""
        cum = np.cumsum(h)
        if start_age > 0.0:
            i0 = min(int(start_age), len(h) - 1)
            e += (cum[i0 - 1] if i0 else 0.0) + h[i0] * (start_age - i0)
        i = int(np.searchsorted(cum, e))
        if i >= len(cum):
            return INF
        prev = float(cum[i - 1]) if i else 0.0
        hi = float(h[i])
        return i + ((e - prev) / hi if hi > 0 else 0.0)

    def _hazard(
        self,
        log_h50: float,
        slope: float,
        min_age: float,
        mods: tuple[tuple[float, float], ...] = (),
        factor: np.ndarray | None = None,
    ) -> np.ndarray:
        h = np.exp(log_h50 + slope * (_AGES - 50.0))
        if min_age > 0:
            h[: int(min_age)] = 0.0
        if factor is not None:
            h *= factor
        for onset_age, mult in mods:
            if onset_age < 110:
                h[math.ceil(onset_age) :] *= mult
        return h

    def _onset(
        self,
        log_h50: float,
        slope: float,
        min_age: float,
        mods: tuple[tuple[float, float], ...] = (),
        factor: np.ndarray | None = None,
    ) -> float:
        return self._invert(self._hazard(log_h50, slope, min_age, mods, factor), self._exp1())

    def add(
        self,
        kind: str,
        t: float,
        code: str,
        value: float | None = None,
        value2: float | None = None,
        end: float | None = None,
        onset: float | None = None,
        status: str | None = None,
    ) -> None:
        self.events.append(
            Event(
                kind,
                int(t),
                code,
                self.vi,
                value,
                value2,
                None if end is None else int(end),
                None if onset is None else int(onset),
                status,
            )
        )

    def obs(self, t: float, key: str, value: float) -> None:
        low, high, dec = _BOUNDS[key]
        v = low if value < low else high if value > high else value
        self.events.append(
            Event(OBSERVATION, int(t), key, self.vi, round(v, dec) if dec else round(v))
        )

    # -----------------------------------------------------------------------------------------
    # 1. person, risk factors, disease onsets, death
    # -----------------------------------------------------------------------------------------
    def _person(self) -> None:
        r = self.rng
        self.male = r.random() < 0.49
        u = r.random()
        bands = ((0.15, 0, 18), (0.36, 18, 40), (0.62, 40, 60), (0.84, 60, 75), (1.0, 75, 96))
        lo, hi = next((b[1], b[2]) for b in bands if u <= b[0])
        a_cut = r.uniform(lo, hi)
        birth_day = DATA_CUT_DATE.toordinal() - EPOCH_ORDINAL - int(a_cut * 365.25)
        self.birth = birth_day * DAY
        u = r.random()
        span = (
            r.uniform(0.3, 3) if u < 0.22 else r.uniform(3, 15) if u < 0.65 else r.uniform(15, 45)
        )
        self.record_start = max(
            self.birth + r.randint(2, 5) * DAY + 9 * HOUR, int(DATA_CUT - span * YEAR)
        )
        place = r.choice(_PLACES)
        self.place = place
        self.given = r.choice(_GIVEN_M if self.male else _GIVEN_F)
        self.family = r.choice(_FAMILY)

        # person-level risk factors and persistent lab offsets
        g = r.gauss
        self.bmi20 = min(max(g(23.8, 3.9), 16.5), 42.0)
        self.bmi_slope = g(0.11, 0.09)
        self.adult_height = g(176.5, 7.0) if self.male else g(163.0, 6.5)
        self.smoker = r.random() < 0.2
        self.sbp_off = g(0.0, 9.0)
        self.ldl_off = g(0.0, 18.0)
        self.hdl_off = g(0.0, 7.0)
        self.tg_off = g(0.0, 25.0)
        self.frailty = g(0.0, 0.35)
        self.engagement = r.uniform(0.35, 1.0)
        self.flu_propensity = r.uniform(0.15, 0.9)
        self.na_off = g(0.0, 1.3)
        self.k_off = g(0.0, 0.15)
        self.cr_fac = math.exp(g(0.0, 0.1))
        self.hgb_off = g(0.0, 0.7)
        self.plt_fac = math.exp(g(0.0, 0.15))
        self.wbc_fac = math.exp(g(0.0, 0.15))
        self.mcv_off = g(0.0, 3.0)
        self.alt_fac = math.exp(g(0.0, 0.25))
        self.los_off = g(0.0, 0.15)

    def bmi_at(self, age: float) -> float:
        if age < 20:
            return _interp(_CHILD_BMI, age) * (0.55 + 0.45 * self.bmi20 / 23.8)
        b = self.bmi20 + self.bmi_slope * (min(age, 55.0) - 20.0) - 0.06 * max(age - 68.0, 0.0)
        return min(max(b, 15.0), 60.0)

    def height_at(self, age: float) -> float:
        if age < 20:
            return self.adult_height * _interp(_HEIGHT_FRAC, age)
        return self.adult_height - 0.12 * max(age - 65.0, 0.0)

    def _onsets(self) -> None:
        """True disease onset ages (years; ``INF`` = never), sampled in dependency order."""
        r = self.rng
        bmi = np.array([self.bmi_at(a + 0.5) for a in _AGES])
        obese_f = np.exp(0.12 * (bmi - 27.0))
        male = self.male
        self.smoke_start = r.uniform(14, 25) if self.smoker else INF
        o: dict[str, float] = {}
        o["diabetes"] = self._onset(math.log(0.0075), 0.045, 20, factor=obese_f)
        o["htn"] = self._onset(
            math.log(0.055) + 0.06 * self.sbp_off,
            0.05,
            18,
            ((o["diabetes"], 1.5),),
            np.exp(0.05 * (bmi - 27.0)),
        )
        o["lipid"] = self._onset(
            math.log(0.065) + 0.035 * self.ldl_off + 0.01 * self.tg_off,
            0.035,
            20,
            ((o["diabetes"], 1.6), (o["htn"], 1.3)),
            np.exp(0.04 * (bmi - 27.0)),
        )
        o["ckd"] = self._onset(math.log(0.0028), 0.075, 30, ((o["diabetes"], 3.0), (o["htn"], 2.5)))
        o["htn"] = min(o["htn"], o["ckd"] + r.uniform(0.5, 4.0) if r.random() < 0.5 else INF)
        smoke = ((self.smoke_start, 2.0),) if self.smoker else ()
        o["cad"] = self._onset(
            math.log(0.0035 * (1.8 if male else 1.0)),
            0.07,
            30,
            ((o["diabetes"], 2.0), (o["htn"], 1.5), (o["lipid"], 1.6), *smoke),
        )
        o["afib"] = self._onset(math.log(0.0012), 0.09, 30, ((o["htn"], 1.6),))
        o["hf"] = self._onset(
            math.log(0.0011),
            0.085,
            30,
            (
                (o["htn"], 2.0),
                (o["cad"], 3.0),
                (o["diabetes"], 1.6),
                (o["afib"], 2.0),
                (o["ckd"], 1.5),
            ),
        )
        o["copd"] = self._onset(math.log(0.011 if self.smoker else 0.0012), 0.06, 35)
        asthma_f = np.where((_AGES >= 1) & (_AGES < 15), 6.0, 0.8)
        o["asthma"] = self._onset(math.log(0.0012), 0.0, 1, factor=asthma_f)
        o["cancer"] = self._onset(
            math.log(0.0045), 0.065, 25, ((self.smoke_start + 15, 1.8),) if self.smoker else ()
        )
        o["osteoarthritis"] = self._onset(
            math.log(0.009), 0.06, 35, factor=np.exp(0.05 * (bmi - 27.0))
        )
        o["osteoporosis"] = self._onset(math.log(0.004 if not male else 0.001), 0.09, 45)
        o["depression"] = self._onset(math.log(0.007), 0.0, 12)
        o["anxiety"] = self._onset(math.log(0.006), -0.01, 10)
        o["hypothyroid"] = self._onset(math.log(0.001 if male else 0.004), 0.02, 20)
        o["gerd"] = self._onset(math.log(0.005), 0.01, 18)
        o["dementia"] = self._onset(math.log(0.0003), 0.13, 60)
        o["osa"] = self._onset(math.log(0.002), 0.02, 25, factor=np.exp(0.1 * (bmi - 27.0)))
        o["gout"] = self._onset(
            math.log(0.0015 * (3.0 if male else 1.0)), 0.03, 30, ((o["ckd"], 2.0),)
        )
        rhin_f = np.where((_AGES >= 3) & (_AGES < 30), 5.0, 1.0)
        o["allergic_rhinitis"] = self._onset(math.log(0.0016), 0.0, 3, factor=rhin_f)
        o["epilepsy"] = self._onset(math.log(0.0004), 0.0, 0)
        o["ra"] = self._onset(math.log(0.0003 if male else 0.0008), 0.01, 25)
        o["alcohol"] = self._onset(math.log(0.0025 if male else 0.0009), -0.02, 18)
        o["stroke"] = self._onset(
            math.log(0.0014),
            0.085,
            35,
            ((o["afib"], 3.0), (o["htn"], 2.0), (o["diabetes"], 1.5), *smoke),
        )
        o["fe"] = self._onset(
            math.log(0.026),
            0.06,
            1,
            (
                (o["ckd"], 3.0),
                (o["hf"], 3.0),
                (o["diabetes"], 1.5),
                (o["dementia"], 2.0),
                (o["htn"], 1.4),
                (o["copd"], 1.3),
                (o["cancer"], 2.0),
            ),
        )
        self.onset_age = o
        self.onset = {k: (self.ts(a) if a < INF else INF) for k, a in o.items()}

    def _death(self) -> None:
        o = self.onset_age
        mods = (
            (o["hf"], 2.8),
            (o["copd"], 2.0),
            (o["ckd"], 1.8),
            (o["cancer"], 4.0),
            (o["cancer"] + 5, 0.4),
            (o["dementia"], 2.5),
            (o["diabetes"], 1.4),
            (o["stroke"], 1.6),
            (o["cad"], 1.4),
            (o["afib"], 1.3),
        )
        h = self._hazard(-5.9 + self.frailty, 0.088, 0, mods)
        h[0] += 0.002
        start_age = self.age(self.record_start)
        death_age = self._invert(h, self._exp1(), start_age)
        death = self.ts(death_age) if death_age < INF else INF
        if death >= DATA_CUT:
            self.death = None
            return
        if death <= self.record_start + 2 * DAY:
            self.record_start = max(self.birth + HOUR, int(death - 30 * DAY))
        self.death = int(death)

    # -----------------------------------------------------------------------------------------
    # 2. latent trajectories
    # -----------------------------------------------------------------------------------------
    def _plan_signals(self) -> None:
        r = self.rng
        on = self.onset
        self.htn_ramp = r.uniform(1.0, 4.0) * YEAR
        self.htn_amp = r.uniform(12.0, 30.0)
        self.htn_treat = r.uniform(0.4, 0.8)
        self.lip_ramp = r.uniform(1.5, 4.0) * YEAR
        u = r.random()
        self.lip_type = "13644009" if u < 0.45 else "55822004" if u < 0.85 else "302870006"
        self.dm_ramp = r.uniform(2.0, 6.0) * YEAR
        self.ckd_rate = r.uniform(0.03, 0.3)
        self.diag: dict[str, float] = {}  # key -> time recorded
        self.meds: dict[str, list[str]] = {}  # chronic key -> rxnorm codes
        # fluid/electrolyte episodes: (time, prodrome length, SNOMED code)
        self.fe_eps: list[tuple[float, float, str]] = []
        t = on["fe"]
        while t < DATA_CUT:
            self.fe_eps.append(
                (
                    t,
                    r.uniform(0.25, 1.5) * YEAR if not self.fe_eps else r.uniform(0.05, 0.4) * YEAR,
                    self._fe_type(t),
                )
            )
            t += (self._exp1() / 0.3) * YEAR + 30 * DAY
        # cancer treatment window
        self.cancer_type = None
        if on["cancer"] < INF:
            u = r.random()
            if self.smoker and u < 0.45:
                self.cancer_type = "254637007"
            elif not self.male and u < 0.7:
                self.cancer_type = "254837009"
            elif self.male and u < 0.7:
                self.cancer_type = "399068003"
            else:
                self.cancer_type = "363406005"

    def _fe_type(self, t: float) -> str:
        on = self.onset
        age = self.age(t)
        if on["ckd"] <= t:
            opts = (
                ("14140009", 5),
                ("89627008", 2),
                ("34095006", 1.5),
                ("28560003", 0.5),
                ("39355002", 0.5),
            )
        elif on["hf"] <= t:
            opts = (
                ("89627008", 4.5),
                ("43339004", 2.5),
                ("14140009", 1.5),
                ("34095006", 1),
                ("28560003", 0.5),
            )
        elif age > 75 or on["dementia"] <= t:
            opts = (("34095006", 4.5), ("39355002", 2), ("89627008", 2), ("28560003", 1.5))
        elif age < 12:
            opts = (("34095006", 6), ("28560003", 2), ("89627008", 1))
        else:
            opts = (
                ("34095006", 3.5),
                ("43339004", 2.5),
                ("89627008", 2.5),
                ("28560003", 1),
                ("14140009", 0.5),
            )
        return self.rng.choices([c for c, _ in opts], [w for _, w in opts])[0]

    def p_term(self, t: float) -> float:
        if self.term_len <= 0:
            return 0.0
        return self.term_scale * _ramp(t, self.death - self.term_len, self.term_len)

    def ctx(self, t: float) -> _Ctx:
        """The patient's latent physiology at time ``t``."""
        c = _Ctx()
        on = self.onset
        age = self.age(t)
        c.age = age
        c.p_term = pt = self.p_term(t) if self.death is not None else 0.0
        c.bmi = self.bmi_at(age) * (1.0 - 0.07 * pt)
        c.height = self.height_at(age)
        adult = age >= 18
        # systolic pressure: age, BMI, personal offset; ramps up before hypertension starts
        if adult:
            sbp = 106 + 0.32 * (age - 18) + 0.55 * (c.bmi - 25) + (4 if self.male else 0)
            sbp += self.sbp_off
        else:
            sbp = 92 + 1.3 * age + 0.3 * self.sbp_off
        th = on["htn"]
        if t > th - self.htn_ramp:
            add = self.htn_amp * _ramp(t, th - self.htn_ramp, self.htn_ramp) ** 1.2
            d = self.diag.get("htn")
            if d is not None and t > d:
                add -= self.htn_treat * self.htn_amp * min(1.0, (t - d) / (90 * DAY))
            sbp += add
        if on["ckd"] <= t:
            sbp += 4
        c.sbp = sbp - 16 * pt
        # lipids: LDL / triglycerides climb before a lipid disorder starts
        ldl = 80 + 1.0 * min(max(age - 15, 0.0), 45.0) + self.ldl_off
        tg = 88 + 3.5 * (c.bmi - 25) + self.tg_off + 0.5 * age
        hdl = (56 if not self.male else 46) - 0.45 * (c.bmi - 25) + self.hdl_off
        tl = on["lipid"]
        if t > tl - self.lip_ramp:
            rr = _ramp(t, tl - self.lip_ramp, self.lip_ramp)
            if self.lip_type == "13644009":
                ldl += 70 * rr
            elif self.lip_type == "55822004":
                ldl += 50 * rr
                tg += 110 * rr
            else:
                tg += 260 * rr
                hdl -= 6 * rr
        d = self.diag.get("lipid")
        if d is not None and t > d:
            f = min(1.0, (t - d) / (90 * DAY))
            ldl *= 1.0 - 0.38 * f
            tg *= 1.0 - 0.25 * f
        # glycaemia
        a1c = 5.0 + 0.006 * age + 0.03 * (c.bmi - 25)
        tdm = on["diabetes"]
        if t > tdm - self.dm_ramp:
            a1c += 2.1 * _ramp(t, tdm - self.dm_ramp, self.dm_ramp) ** 1.5
            d = self.diag.get("diabetes")
            if d is not None and t > d:
                a1c -= 0.9 * min(1.0, (t - d) / (120 * DAY))
        if on["diabetes"] <= t:
            tg += 35
        c.a1c = a1c
        c.glu = 28.7 * a1c - 46.7
        c.ldl, c.tg, c.hdl = ldl, tg, hdl
        # kidney: creatinine rises before CKD is diagnosed and keeps rising with its stage
        tc = on["ckd"]
        if t < tc - 2 * YEAR:
            crm = 1.0
        elif t < tc:
            crm = 1.0 + 0.45 * _ramp(t, tc - 2 * YEAR, 2 * YEAR)
        else:
            crm = 1.45 + self.ckd_rate * (t - tc) / YEAR
        crm *= 1.0 + 1.1 * pt
        if adult:
            cr0 = (0.95 if self.male else 0.74) * (1 + 0.004 * max(age - 40, 0.0))
        else:
            cr0 = 0.25 + 0.035 * age
        bun_m = 1.0
        na = 140.0 + self.na_off - 3.5 * pt
        k = 4.2 + self.k_off + (0.06 * (crm - 1) if crm > 1.3 else 0.0)
        hr_add = 10 * pt
        # fluid / electrolyte prodromes: values drift out of range before the diagnosis
        for te, ln, code in self.fe_eps:
            if t < te - ln or t > te + 120 * DAY:
                continue
            x = (
                ((t - te + ln) / ln) ** 1.4
                if t <= te
                else 0.9 * max(0.0, 1 - (t - te) / (45 * DAY))
            )
            if code == "89627008":
                na -= 12 * x
            elif code == "39355002":
                na += 11 * x
                bun_m += 0.4 * x
            elif code == "14140009":
                k += 1.9 * x
            elif code == "43339004":
                k -= 1.25 * x
            elif code == "34095006":
                na += 5 * x
                bun_m += 0.9 * x
                crm *= 1 + 0.35 * x
                hr_add += 10 * x
            else:  # hypovolemia
                bun_m += 0.7 * x
                crm *= 1 + 0.3 * x
                hr_add += 14 * x
                c.sbp -= 12 * x
        c.cr = cr0 * crm * self.cr_fac
        c.bun = (14.0 if adult else 10.0) * bun_m * crm**0.8
        c.na, c.k, c.hr_add = na, k, hr_add
        # blood, albumin, heart
        hgb = (15.0 if self.male and adult else 13.4 if adult else 12.4) + self.hgb_off
        hgb -= 0.55 * (crm - 1.0)
        cancer_active = on["cancer"] <= t < on["cancer"] + 3 * YEAR
        if cancer_active:
            hgb -= 1.1
        hgb -= 2.6 * pt
        c.hgb = hgb
        alb = 4.3 - 0.01 * max(age - 50, 0.0) - 1.3 * pt
        if cancer_active:
            alb -= 0.4
        if on["hf"] <= t:
            alb -= 0.25
        c.alb = alb
        bnp = 25.0 * math.exp(0.025 * (age - 50))
        if on["hf"] <= t:
            bnp *= 14.0
        c.bnp = bnp * (1 + 3 * pt)
        th = on["hypothyroid"]
        c.tsh = 1.8 if t < th else (9.0 if "hypothyroid" not in self.diag else 2.6)
        return c

    # -----------------------------------------------------------------------------------------
    # 3. measurement panels
    # -----------------------------------------------------------------------------------------
    def vitals(
        self,
        t: float,
        c: _Ctx,
        full: bool,
        sev: float = 0.0,
        infect: bool = False,
        resp: bool = False,
    ) -> None:
        g = self.gauss
        age = c.age
        s = max(sev, 0.0)
        if full or age < 20:
            self.obs(t, "height", c.height + g(0, 0.4))
        h_m = c.height / 100.0
        weight = c.bmi * h_m * h_m * math.exp(g(0, 0.012))
        self.obs(t, "weight", weight)
        if age < 3:
            self.obs(t, "head", 35 + 13 * (1 - math.exp(-1.6 * age)) + g(0, 0.5))
        elif age >= 2:
            self.obs(t, "bmi", weight / (h_m * h_m))
        if age >= 3:
            sbp = c.sbp + g(0, 10.0) - 6 * s * (1.0 if infect else 0.4)
            dbp = 0.52 * sbp + 12 + g(0, 5.0)
            sbp = round(min(max(sbp, 60), 250))
            dbp = round(min(max(dbp, 30), 150, sbp - 10))
            self.events.append(Event(OBSERVATION, int(t), "bp", self.vi, sbp, dbp))
        hr0 = 130 if age < 1 else 105 if age < 5 else 88 if age < 12 else 74
        self.obs(t, "heart_rate", hr0 + c.hr_add + 9 * s + (8 if infect else 0) + g(0, 7))
        if full or infect or sev > 0:
            rr0 = 32 if age < 1 else 24 if age < 5 else 18 if age < 12 else 15
            self.obs(t, "resp_rate", rr0 + 2.5 * s * (1.6 if resp else 1.0) + g(0, 1.5))
        if full or infect or sev > 0:
            temp = 36.8 + g(0, 0.22) + ((0.9 * max(s, 0.4) + g(0, 0.4)) if infect else 0.0)
            self.obs(t, "temperature", temp)
        if sev > 0:
            self.obs(t, "pain", 2.5 + 1.5 * s + g(0, 2.0))
        if sev > 0 or self.onset["copd"] <= t or self.onset["hf"] <= t:
            spo2 = 97.8 - (3.0 if self.onset["copd"] <= t else 0.0) - 3.0 * c.p_term
            spo2 -= s * (3.5 if resp else 1.2)
            self.obs(t, "spo2", min(spo2 + g(0, 1.0), 100))

    def labs(
        self,
        t: float,
        c: _Ctx,
        panels: tuple[str, ...],
        sev: float = 0.0,
        infect: bool = False,
        mi: bool = False,
    ) -> None:
        g = self.gauss
        ex = math.exp
        s = max(sev, 0.0)
        on = self.onset
        for p in panels:
            if p == "bmp":
                na = c.na + g(0, 1.5) - 1.2 * s
                self.obs(t, "sodium", na)
                self.obs(t, "potassium", c.k + g(0, 0.22) + 0.12 * s)
                self.obs(t, "chloride", na - 38 + g(0, 1.8))
                self.obs(t, "co2", 25.5 - 2.2 * s - (1.5 if c.cr > 2 else 0) + g(0, 1.6))
                self.obs(t, "bun", c.bun * (1 + 0.3 * s) * ex(g(0, 0.15)))
                cr = c.cr * (1 + 0.22 * s) * ex(g(0, 0.06))
                self.obs(t, "creatinine", cr)
                self.obs(t, "glucose", c.glu * (1 + 0.12 * s) * ex(g(0, 0.09)))
                self.obs(t, "calcium", 9.4 - 0.25 * s - (0.3 if c.alb < 3.3 else 0) + g(0, 0.3))
                if c.age >= 18:
                    egfr = 175 * cr**-1.154 * c.age**-0.203 * (0.742 if not self.male else 1.0)
                    self.obs(t, "egfr", egfr)
            elif p == "cbc":
                hgb = c.hgb - 0.35 * s + g(0, 0.45)
                mcv = 90 + self.mcv_off + g(0, 1.5) - (5 if c.hgb < 11 else 0)
                wbc = 7.0 * self.wbc_fac * ex(g(0, 0.15)) + (
                    4.5 * max(s, 0.3) if infect else 1.2 * s
                )
                self.obs(t, "wbc", wbc + 2.5 * c.p_term)
                self.obs(t, "rbc", hgb / 3.0 * (90 / mcv) + g(0, 0.1))
                self.obs(t, "hgb", hgb)
                self.obs(t, "hct", hgb * 2.95 + g(0, 1.0))
                self.obs(t, "mcv", mcv)
                self.obs(t, "platelets", 255 * self.plt_fac * ex(g(0, 0.12)) * (1 - 0.12 * s))
                self.obs(t, "rdw", 42 + g(0, 2.5) + (3 if c.hgb < 11.5 else 0))
            elif p == "lipid":
                ldl = c.ldl * ex(g(0, 0.07))
                tg = c.tg * ex(g(0, 0.15))
                hdl = c.hdl * ex(g(0, 0.07))
                self.obs(t, "cholesterol", ldl + hdl + tg / 5)
                self.obs(t, "triglycerides", tg)
                self.obs(t, "hdl", hdl)
                self.obs(t, "ldl", ldl)
            elif p == "liver":
                alb = c.alb - 0.3 * s + g(0, 0.2)
                self.obs(t, "albumin", alb)
                self.obs(t, "protein", alb + 2.9 + g(0, 0.3))
                self.obs(t, "bilirubin", 0.6 * ex(g(0, 0.35)) + 0.3 * s)
                self.obs(t, "alp", 75 * ex(g(0, 0.25)))
                self.obs(t, "alt", 22 * self.alt_fac * ex(g(0, 0.3)) * (1 + 0.3 * s))
                self.obs(t, "ast", 23 * ex(g(0, 0.3)) * (1 + 0.4 * s))
            elif p == "a1c":
                self.obs(t, "a1c", c.a1c + g(0, 0.15))
            elif p == "lactate":
                lac = 1.0 * ex(g(0, 0.2)) + 0.9 * s**1.5 + (0.6 * s if infect else 0) + c.p_term
                self.obs(t, "lactate", lac)
            elif p == "crp":
                crp = (
                    3 * ex(g(0, 0.7)) + 18 * s + (55 * max(s, 0.2) * ex(g(0, 0.4)) if infect else 0)
                )
                self.obs(t, "crp", crp)
            elif p == "procalcitonin":
                pct = 0.05 * ex(g(0, 0.4)) + (1.2 * s * s * ex(g(0, 0.5)) if infect else 0.05 * s)
                self.obs(t, "procalcitonin", pct)
            elif p == "bnp":
                self.obs(t, "bnp", c.bnp * ex(g(0, 0.3)) * (1 + 0.6 * s))
            elif p == "troponin":
                tro = 0.01 * ex(g(0, 0.5)) + 0.02 * s + (4.0 * ex(g(0, 0.8)) if mi else 0.0)
                self.obs(t, "troponin", tro)
            elif p == "coag":
                warf = "11289" in self.meds.get("afib", ())
                inr = (2.5 + g(0, 0.4)) if warf else (1.0 + g(0, 0.07) + 0.1 * s)
                self.obs(t, "pt", 11.8 * inr + g(0, 0.4))
                self.obs(t, "inr", inr)
            elif p == "tsh":
                self.obs(t, "tsh", c.tsh * ex(g(0, 0.45)))
            elif p == "magnesium":
                self.obs(t, "magnesium", 2.0 + g(0, 0.18))
            elif p == "ferritin":
                self.obs(t, "ferritin", (25 if c.hgb < 11.5 else 120) * ex(g(0, 0.6)))
            elif p == "uacr":
                bad = on["diabetes"] <= t or on["ckd"] <= t
                self.obs(t, "uacr", 12 * ex(g(0, 0.7)) * (8 if bad else 1))

    # -----------------------------------------------------------------------------------------
    # 4. visits
    # -----------------------------------------------------------------------------------------
    def _open(
        self,
        cls: str,
        type_code: str,
        start: float,
        end: float,
        reason: str | None = None,
        admit_source: str | None = None,
    ) -> Visit:
        v = Visit(cls, type_code, int(start), int(end), reason, admit_source)
        self.visits.append(v)
        self.vi = len(self.visits) - 1
        return v

    def condition(
        self, t: float, code: str, onset: float | None = None, resolve_days: float | None = None
    ) -> None:
        end = None
        if resolve_days is not None:
            e = (t if onset is None else onset) + resolve_days * DAY
            if e < self.limit:
                end = e
        self.add(
            CONDITION,
            t,
            code,
            end=end,
            onset=t if onset is None else onset,
            status="active" if end is None else "resolved",
        )

    def _managed(self, t: float) -> list[str]:
        return [k for k in self.diag if k in C.CHRONIC_MEDICATIONS or k in ("htn", "lipid")]

    def _diagnose(self, t: float, key: str, code: str) -> None:
        """Record a chronic diagnosis now (onset: true onset if before the record began)."""
        if key in self.diag:
            return
        self.diag[key] = t
        true_on = self.onset.get(key, t)
        onset = true_on if true_on < self.record_start else t
        self.condition(t, code, onset=min(onset, t))
        meds = C.CHRONIC_MEDICATIONS.get(key)
        if key == "lipid" and self.lip_type == "302870006":
            meds = C.CHRONIC_MEDICATIONS["hypertriglyceridemia"]
        if meds and (
            key not in ("depression", "anxiety", "osteoarthritis") or self.rng.random() < 0.6
        ):
            w = C.zipf_weights(len(meds), 1.2)
            chosen = self.rng.choices(meds, w)[0]
            self.meds[key] = [chosen]
            if key in ("hf", "copd", "diabetes") and len(meds) > 1 and self.rng.random() < 0.5:
                self.meds[key].append(meds[1] if chosen != meds[1] else meds[0])
            for m in self.meds[key]:
                self.add(MEDICATION, t + 5 * MINUTE, m, status="chronic")

    def _generic_diagnoses(self, t: float, c: _Ctx, cls: str) -> None:
        """Diseases already present (true onset passed) get recorded at some visit."""
        on = self.onset
        r = self.rng
        first = t <= self.record_start + DAY
        p = 1.0 if first else (0.55 if cls == "AMB" else 0.35)
        for key, code in _GENERIC_CHRONIC:
            if key in self.diag or on[key] > t:
                continue
            if (first and on[key] < self.record_start) or r.random() < p:
                if key == "copd":
                    code = "87433001" if r.random() < 0.3 else code
                    self.add(PROCEDURE, t + 10 * MINUTE, "127783003", end=t + 25 * MINUTE)
                if key == "asthma" and c.age < 12:
                    code = "233678006"
                if key == "depression" and r.random() < 0.35:
                    code = "370143000"
                if key == "osteoarthritis" and r.random() < 0.4:
                    code = "239872002"
                if key == "hf" and r.random() < 0.3:
                    code = "84114007"
                self._diagnose(t, key, code)
        if cls == "AMB" and "mi" in self.diag and "mi_history" not in self.diag:
            self.diag["mi_history"] = t
            self.condition(t, "399211009")
        if first:
            # pre-existing task conditions are known at the first visit
            if on["htn"] < self.record_start and "htn" not in self.diag:
                self._diagnose(t, "htn", self._htn_code())
            if on["lipid"] < self.record_start and "lipid" not in self.diag:
                self._diagnose(t, "lipid", self.lip_type)
            if on["diabetes"] < self.record_start and "diabetes" not in self.diag:
                self._diagnose(t, "diabetes", "44054006")
            if on["ckd"] < self.record_start and "ckd" not in self.diag:
                self._diagnose(t, "ckd", "433144002")
            if self.fe_eps and self.fe_eps[0][0] < self.record_start:
                te, _, code = self.fe_eps[0]
                self.diag["fe"] = t
                self.condition(t, code, onset=te, resolve_days=self.rng.uniform(10, 40))
            if self.smoker and c.age >= self.smoke_start:
                self.diag["smoker"] = t
                self.condition(t, "449868002", onset=self.ts(self.smoke_start))

    def _htn_code(self) -> str:
        return "38341003" if self.rng.random() < 0.2 else "59621000"

    def _observed_diagnoses(self, t: float, measured: dict[str, float], cls: str) -> None:
        """Diagnoses triggered by what this visit measured (the codes follow the values)."""
        r = self.rng
        on = self.onset
        sbp = measured.get("sbp")
        if sbp is not None and "htn" not in self.diag:
            if t >= on["htn"]:
                p = (0.8 if sbp >= 135 else 0.25) * (1.0 if cls == "AMB" else 0.3)
                if r.random() < p:
                    self._diagnose(t, "htn", self._htn_code())
            if "htn" not in self.diag and sbp >= 138:
                self._recheck(t, "bp")
        na, k = measured.get("sodium"), measured.get("potassium")
        if na is not None and (na < 134 or na > 146 or k < 3.4 or k > 5.2):
            self._recheck(t, "bmp")
        if "ldl" in measured and "lipid" not in self.diag:
            high = (
                measured["ldl"] > 160
                or measured["triglycerides"] > 250
                or measured["cholesterol"] > 240
            )
            if r.random() < (0.85 if high else 0.3 if t >= on["lipid"] else 0.0):
                self._diagnose(t, "lipid", self.lip_type)
            elif measured["ldl"] > 135 or measured["triglycerides"] > 190:
                self._recheck(t, "lipid")
        a1c = measured.get("a1c")
        if a1c is not None and "diabetes" not in self.diag:
            if a1c >= 6.5 and t >= on["diabetes"] and r.random() < 0.9:
                self._diagnose(t, "diabetes", "44054006")
            elif 5.7 <= a1c < 6.5 and "prediabetes" not in self.diag and r.random() < 0.5:
                self.diag["prediabetes"] = t
                self.condition(t, "15777000")
        egfr = measured.get("egfr")
        if egfr is not None and t >= on["ckd"]:
            if "ckd" not in self.diag and egfr < 60 and r.random() < 0.7:
                self._diagnose(t, "ckd", "433144002")
            elif "ckd" in self.diag:
                if egfr < 30 and "ckd4" not in self.diag:
                    self.diag["ckd4"] = t
                    self.condition(t, "431857002")
                if egfr < 15 and "ckd5" not in self.diag:
                    self.diag["ckd5"] = t
                    self.condition(t, "433146000")
                    self.condition(t, "46177005")
        hgb = measured.get("hgb")
        low_hgb = hgb is not None and hgb < (12.0 if self.male else 11.0)
        if low_hgb and "anemia" not in self.diag and r.random() < 0.3:
            code = "87522002" if r.random() < 0.4 else "271737000"
            self._diagnose(t, "anemia", code)
        bmi = measured.get("bmi")
        obese = bmi is not None and bmi >= 30 and cls == "AMB" and self.age(t) >= 18
        if obese and "obesity" not in self.diag and r.random() < 0.5:
            self.diag["obesity"] = t
            self.condition(t, "408512008" if bmi >= 40 else "162864005")

    def _recheck(self, t: float, what: str) -> None:
        """An abnormal reading brings the patient back within weeks (one recheck at a time)."""
        if t > self.recheck_until:
            when = t + self.rng.uniform(14, 75) * DAY
            self.recheck_until = when
            self.planned.append((when, "recheck", what))

    def _measure(
        self,
        t: float,
        c: _Ctx,
        full: bool,
        panels: tuple[str, ...],
        sev: float = 0.0,
        infect: bool = False,
        resp: bool = False,
        mi: bool = False,
    ) -> dict[str, float]:
        n0 = len(self.events)
        self.vitals(t, c, full, sev, infect, resp)
        self.labs(t + 20 * MINUTE, c, panels, sev, infect, mi)
        out: dict[str, float] = {}
        for ev in self.events[n0:]:
            if ev.code == "bp":
                out["sbp"] = ev.value
            else:
                out[ev.code] = ev.value
        return out

    def _renew(self, t: float, p: float) -> None:
        r = self.rng
        for meds in self.meds.values():
            for m in meds:
                if r.random() < p:
                    self.add(MEDICATION, t, m, status="chronic")

    def _immunize(self, t: float, age: float, well: bool) -> None:
        r = self.rng
        d = date.fromordinal(EPOCH_ORDINAL + int(t // DAY))
        year, month = d.year, d.month
        months = age * 12
        if well and age < 18:
            for i, (m, cvx, first_year) in enumerate(_CHILD_VACCINES):
                if i in self.vax_done or months < m - 0.5 or months > m + 30 or year < first_year:
                    continue
                self.vax_done.add(i)
                if cvx == "PCV":
                    cvx = "100" if year < 2010 else "133"
                elif cvx == "HPV":
                    cvx = "62" if year < 2016 else "165"
                self.add(IMMUNIZATION, t + 15 * MINUTE, cvx)
        season = year if month >= 9 else year - 1
        if age >= 0.5 and (month >= 9 or month <= 3) and season not in self.flu_done:
            self.flu_done.add(season)
            p = self.flu_propensity * (1.2 if age >= 65 else 1.0)
            if season >= 1995 and r.random() < p:
                cvx = "150" if year >= 2014 else "140" if r.random() < 0.6 else "141"
                self.add(IMMUNIZATION, t + 16 * MINUTE, cvx)
        if well and age >= 19:
            if t - self.last_td > 10 * YEAR and r.random() < 0.5:
                self.last_td = t
                self.add(IMMUNIZATION, t + 17 * MINUTE, "115" if year >= 2005 else "113")
            if age >= 50 and not self.zoster and year >= 2006 and r.random() < 0.35:
                self.zoster = True
                self.add(IMMUNIZATION, t + 18 * MINUTE, "187" if year >= 2018 else "121")
            if "diabetes" in self.diag and age < 60 and not self.hepb and r.random() < 0.3:
                self.hepb = True
                self.add(IMMUNIZATION, t + 18 * MINUTE, "43")
            if age >= 65 and not self.pneumo and r.random() < 0.5:
                self.pneumo = True
                self.add(IMMUNIZATION, t + 19 * MINUTE, "215" if year >= 2022 else "33")
        if 2021 <= year <= 2023 and age >= 12 and self.covid_doses < 3 and r.random() < 0.35:
            self.covid_doses += 1
            self.add(IMMUNIZATION, t + 20 * MINUTE, "208" if r.random() < 0.6 else "207")

    def _amb_time(self, t: float) -> int:
        """Snap a visit to office hours on the day of ``t`` (or the next day)."""
        day = int(t // DAY)
        s = day * DAY + 8 * HOUR + int(self.rng.random() * 9 * HOUR)
        if s <= self.t:
            s = max(int(self.t) + HOUR, (day + 1) * DAY + 8 * HOUR)
        return s

    def wellness(self, t0: float) -> None:
        r = self.rng
        t = self._amb_time(t0)
        if t >= self.loop_end - 4 * HOUR:
            return
        age = self.age(t)
        code = "410620009" if age < 18 else ("162673000" if r.random() < 0.7 else "185349003")
        v = self._open("AMB", code, t, t + r.randint(20, 45) * MINUTE)
        c = self.ctx(t)
        on = self.onset
        panels: list[str] = []
        if age >= 18:
            risk = any(on[k] <= t for k in ("htn", "diabetes", "ckd", "hf")) or bool(self.meds)
            if r.random() < 0.3 + 0.25 * (age > 50) + 0.25 * risk:
                panels.append("bmp")
            if r.random() < 0.25 + 0.2 * (age > 60):
                panels.append("cbc")
            if age >= 20 and r.random() < (0.65 if age >= 40 else 0.35) + 0.2 * risk:
                panels.append("lipid")
            dm = "diabetes" in self.diag or "prediabetes" in self.diag
            if dm or r.random() < 0.2 + 0.3 * (c.bmi >= 30 or age >= 45):
                panels.append("a1c")
            if r.random() < (0.6 if on["hypothyroid"] <= t else 0.08):
                panels.append("tsh")
            if r.random() < 0.15:
                panels.append("liver")
            if "diabetes" in self.diag and r.random() < 0.5:
                panels.append("uacr")
        elif age >= 9 and r.random() < 0.1:
            panels.append("lipid")
        measured = self._measure(t, c, True, tuple(panels))
        self._generic_diagnoses(t, c, "AMB")
        self._observed_diagnoses(t, measured, "AMB")
        pt = t + 25 * MINUTE
        if r.random() < 0.3:
            self.add(PROCEDURE, t + 5 * MINUTE, "5880005", end=t + 15 * MINUTE)
        d = self.diag
        metabolic = "obesity" in d and ("prediabetes" in d or "htn" in d)
        if metabolic and "metabolic" not in d and r.random() < 0.15:
            d["metabolic"] = t
            self.condition(pt, "237602007")
        if self.meds and r.random() < 0.8:
            self.add(PROCEDURE, pt, "430193006", end=pt + 5 * MINUTE)
        if age >= 12 and r.random() < 0.5:
            self.add(PROCEDURE, pt, "171207006", end=pt + 5 * MINUTE)
        if age >= 18 and r.random() < 0.35:
            self.add(PROCEDURE, pt, "710824005", end=pt + 10 * MINUTE)
        if age >= 14 and r.random() < 0.25:
            self.add(PROCEDURE, pt, "428211000124100", end=pt + 5 * MINUTE)
        if not self.male and 15 <= age <= 50 and r.random() < 0.15:
            self.add(PROCEDURE, pt, "866148006", end=pt + 5 * MINUTE)
        if (
            not self.male
            and 50 <= age <= 75
            and t - self.last_mammo > 2 * YEAR
            and r.random() < 0.6
        ):
            self.last_mammo = t
            self.add(PROCEDURE, pt + 40 * MINUTE, "71651007", end=pt + 60 * MINUTE)
            v.end = max(v.end, int(pt + 61 * MINUTE))
        if 50 <= age <= 75 and t - self.last_colo > 10 * YEAR and r.random() < 0.25:
            self.last_colo = t
            self.add(PROCEDURE, pt + 40 * MINUTE, "73761001", end=pt + 80 * MINUTE)
            v.end = max(v.end, int(pt + 81 * MINUTE))
        self._renew(t + 30 * MINUTE, 0.7)
        self._immunize(t, age, True)
        self._close()

    def followup(self, t0: float, recheck: str | None = None) -> None:
        r = self.rng
        t = self._amb_time(t0)
        if t >= self.loop_end - 4 * HOUR:
            return
        self._open("AMB", "390906007", t, t + r.randint(15, 35) * MINUTE)
        c = self.ctx(t)
        d = self.diag
        panels: list[str] = []
        if recheck == "bmp" or (recheck == "bp" and r.random() < 0.5):
            panels.append("bmp")
        elif recheck == "lipid":
            panels.append("lipid")
        kidney_risk = "ckd" in d or "hf" in d or "diabetes" in d
        wants_bmp = ("htn" in d and r.random() < 0.5) or kidney_risk
        if wants_bmp and not panels and r.random() < 0.85:
            panels.append("bmp")
        if ("ckd" in d or "anemia" in d or "cancer" in d) and r.random() < 0.6:
            panels.append("cbc")
        p_lipid = 0.4 if ("lipid" in d or "cad" in d or "diabetes" in d) else 0.2
        if (not panels or panels[0] != "lipid") and r.random() < p_lipid:
            panels.append("lipid")
        if "diabetes" in d and r.random() < 0.8:
            panels.append("a1c")
        if "diabetes" in d and r.random() < 0.3:
            panels.append("uacr")
        if "hf" in d and r.random() < 0.6:
            panels.append("bnp")
        if "afib" in d and "11289" in self.meds.get("afib", ()):
            panels.append("coag")
        if "hypothyroid" in d and r.random() < 0.3:
            panels.append("tsh")
        if "anemia" in d and r.random() < 0.3:
            panels.append("ferritin")
        if r.random() < 0.1:
            panels.append("liver")
        measured = self._measure(t, c, False, tuple(panels))
        if "diabetes" in d and t - d["diabetes"] > 3 * YEAR:
            for code in _DIABETIC_COMPLICATIONS:
                if code not in d and r.random() < 0.03:
                    d[code] = t
                    self.condition(t, code)
        self._generic_diagnoses(t, c, "AMB")
        self._observed_diagnoses(t, measured, "AMB")
        if "ckd5" in d:
            self.add(PROCEDURE, t + 20 * MINUTE, "302497006", end=t + 30 * MINUTE)
        if r.random() < 0.4:
            self.add(PROCEDURE, t + 20 * MINUTE, "430193006", end=t + 25 * MINUTE)
        self._renew(t + 25 * MINUTE, 0.6)
        self._immunize(t, c.age, False)
        self._close()

    def sick_visit(self, t0: float) -> None:
        r = self.rng
        t = self._amb_time(t0)
        if t >= self.loop_end - 4 * HOUR:
            return
        age = self.age(t)
        year = date.fromordinal(EPOCH_ORDINAL + int(t // DAY)).year
        opts = [
            (i, w)
            for i, w in enumerate(_ACUTE_WEIGHTS)
            if C.ACUTE_PROBLEMS[i][1] <= age <= C.ACUTE_PROBLEMS[i][2]
            and (C.ACUTE_PROBLEMS[i][0] != "840539006" or year >= 2020)
        ]
        i = r.choices([o[0] for o in opts], [o[1] for o in opts])[0]
        code, _, _, meds, procs, days = C.ACUTE_PROBLEMS[i]
        self._open("AMB", "185345009", t, t + r.randint(15, 40) * MINUTE, reason=code)
        c = self.ctx(t)
        infect = code in _INFECTIOUS
        panels: list[str] = []
        if r.random() < 0.12 + 0.15 * (age > 60):
            panels.append("cbc")
        if r.random() < 0.08 + 0.2 * (age > 60) + 0.4 * (c.na < 134 or c.k > 5.2 or c.k < 3.4):
            panels.append("bmp")
        self.vitals(t, c, False, 0.2 if infect else 0.0, infect)
        measured: dict[str, float] = {}
        if panels:
            measured = self._measure_labs_only(t + 20 * MINUTE, c, tuple(panels), infect)
        self.condition(t, code, resolve_days=days * r.uniform(0.6, 1.5))
        for p in procs:
            self.add(PROCEDURE, t + 10 * MINUTE, p, end=t + 20 * MINUTE)
        for m in meds:
            if r.random() < 0.75:
                self.add(MEDICATION, t + 25 * MINUTE, m, status="completed")
        self._generic_diagnoses(t, c, "AMB")
        self._observed_diagnoses(t, measured, "AMB")
        self._immunize(t, age, False)
        self._close()

    def _measure_labs_only(
        self,
        t: float,
        c: _Ctx,
        panels: tuple[str, ...],
        infect: bool,
        sev: float = 0.0,
        mi: bool = False,
    ) -> dict[str, float]:
        n0 = len(self.events)
        self.labs(t, c, panels, sev, infect, mi)
        return {ev.code: ev.value for ev in self.events[n0:]}

    def _close(self) -> None:
        """End the current visit after its last event (labs, orders, procedures) and move on."""
        v = self.visits[self.vi]
        last = v.end
        for ev in reversed(self.events):
            if ev.visit != self.vi:
                break
            last = max(last, ev.time, ev.end if ev.kind == PROCEDURE and ev.end else 0)
        if last > v.end:
            v.end = min(int(last) + 5 * MINUTE, max(v.end, int(self.limit)))
        self.t = v.end

    def _clamp(self) -> None:
        """Keep the current (hospital) visit's events inside its period, then move on."""
        v = self.visits[self.vi]
        last = v.end - MINUTE
        for ev in reversed(self.events):
            if ev.visit != self.vi:
                break
            if ev.time > last:
                ev.time = last
            if ev.kind == PROCEDURE and ev.end is not None and ev.end > v.end:
                ev.end = v.end
        self.t = v.end

    def _cap(self, final: bool) -> float:
        """Latest end of a visit: death/data cut, or just before the planned final encounter."""
        if final or self.final_mode is None:
            return self.limit
        return self.loop_end - HOUR

    def emergency(
        self, t0: float, reason: str | None = None, fe: str | None = None, final: bool = False
    ) -> None:
        r = self.rng
        if final:
            t = max(int(t0), int(self.t) + HOUR)
        else:
            day = int(t0 // DAY)
            t = max(day * DAY + int(r.random() * DAY), int(self.t) + HOUR)
            if t >= self.loop_end - HOUR:
                return
        age = self.age(t)
        c = self.ctx(t)
        if reason is None:
            opts = [(i, w) for i, w in enumerate(_ED_WEIGHTS) if C.ED_PROBLEMS[i][1] <= age]
            if "asthma" in self.diag and r.random() < 0.3:
                reason = "195967001"
            i = r.choices([o[0] for o in opts], [o[1] for o in opts])[0]
            if reason is None:
                reason = C.ED_PROBLEMS[i][0]
        entry = _ED_BY_CODE.get(reason, (reason, 0, (), ()))
        hours = r.uniform(2.0, 8.0)
        end = min(t + hours * HOUR, self._cap(final))
        if end <= t + 30 * MINUTE:
            return
        type_code = "183478001" if reason == "195967001" else "50849002"
        self._open("EMER", type_code, t, end, reason=reason)
        infect = reason in _INFECTIOUS
        sev = max(0.0, r.gauss(0.1, 0.4) + 0.8 * c.p_term)
        panels = []
        if fe is not None or r.random() < (0.8 if age > 50 else 0.4) or c.p_term > 0:
            panels += ["cbc", "bmp"]
        if reason in ("29857009", "267036007", "271594007"):
            panels.append("troponin")
            if self.onset["hf"] <= t:
                panels.append("bnp")
        if (infect and r.random() < 0.5) or c.p_term > 0.3:
            panels.append("lactate")
        measured = self._measure(
            t + 10 * MINUTE,
            c,
            False,
            tuple(panels),
            sev,
            infect,
            reason in ("267036007", "195967001"),
        )
        self.add(
            CONDITION,
            t + 30 * MINUTE,
            reason,
            end=end if reason != "195967001" else None,
            onset=t,
            status="resolved" if reason != "195967001" else "active",
        )
        if reason == "195967001":
            self.diag.setdefault("asthma", t)
            self.add(MEDICATION, t + 40 * MINUTE, "435", status="completed")
            self.add(MEDICATION, t + 40 * MINUTE, "8640", status="completed")
        if fe is not None:
            self.condition(t + 60 * MINUTE, fe, onset=t, resolve_days=r.uniform(7, 30))
            self.add(MEDICATION, t + 70 * MINUTE, _FE_TREATMENT[fe], status="completed")
        for p in entry[3]:
            if r.random() < 0.8:
                self.add(PROCEDURE, t + 45 * MINUTE, p, end=t + 70 * MINUTE)
        for m in entry[2]:
            if r.random() < 0.7:
                self.add(MEDICATION, t + 50 * MINUTE, m, status="completed")
        if r.random() < 0.3:
            self.add(
                MEDICATION,
                t + 55 * MINUTE,
                r.choice(("313782", "5640", "26225")),
                status="completed",
            )
        self._generic_diagnoses(t, c, "EMER")
        self._observed_diagnoses(t, measured, "EMER")
        self.visits[self.vi].discharge = (
            "exp" if self.death is not None and end >= self.death else "home"
        )
        self._clamp()

    def _admission_reason(self, t: float, age: float) -> str:
        on = self.onset
        d = self.diag
        w = {
            "233604007": 1.0 + 0.03 * max(age - 60, 0) + (1.5 if on["copd"] <= t else 0),
            "91302008": 0.45
            + 0.025 * max(age - 65, 0)
            + (1.0 if on["cancer"] <= t else 0)
            + (0.3 if on["diabetes"] <= t else 0),
            "88805009": 3.0 if "hf" in d else 0.0,
            "195951007": 2.5 if "copd" in d else 0.0,
            "14669001": 1.0 if on["ckd"] <= t else 0.1,
            "68566005": 0.35 + 0.02 * max(age - 70, 0),
            "128045006": 0.35 + (0.4 if on["diabetes"] <= t else 0),
            "359817006": (0.8 if on["osteoporosis"] <= t else 0.0) + 0.01 * max(age - 70, 0),
            "22298006": 0.5 if "cad" in d else 0.02,
            "74474003": 0.3 + (0.4 if "afib" in d else 0),
            "29857009": 0.8 + (0.6 if on["cad"] <= t else 0),
            "271594007": 0.2 + 0.01 * max(age - 60, 0),
            "74400008": 0.5 if 5 <= age <= 50 else 0.05,
            "76581006": 0.3 if age > 30 else 0.02,
            "239873007": 0.5 if "osteoarthritis" in d and 50 <= age <= 85 else 0.0,
            "65710008": 0.3 if on["copd"] <= t else 0.03,
        }
        keys = list(w)
        return self.rng.choices(keys, [w[k] for k in keys])[0]

    def _n_major(self, t: float) -> int:
        on = self.onset
        return sum(1 for k in _MAJOR if on[k] <= t)

    def inpatient(
        self,
        t0: float,
        reason: str | None = None,
        final: str | None = None,
        fe: str | None = None,
        end_at: float | None = None,
    ) -> None:
        """An admission. ``final``: "death" (dies in the stay) or "discharge" (dies soon after)."""
        r = self.rng
        g = self.gauss
        if end_at is None:
            day = int(t0 // DAY)
            t = max(day * DAY + int(r.random() * DAY), int(self.t) + HOUR)
            if t >= self.loop_end - 2 * HOUR:
                return
        else:
            t = max(int(t0), int(self.t) + HOUR)
            if end_at - t < 3 * HOUR:
                t = max(int(self.t) + 10 * MINUTE, int(end_at - 3 * HOUR))
        age = self.age(t)
        c = self.ctx(t)
        if reason is None:
            reason = self._admission_reason(t, age)
        mu, los_mu, infect, meds, procs = C.ADMISSION_REASONS[reason]
        n_major = self._n_major(t)
        sev = (
            mu
            + 0.012 * (age - 60)
            + 0.12 * n_major
            + 0.5 * self.frailty
            + 1.2 * c.p_term
            + g(0, 0.6)
        )
        if final is not None:
            sev += g(0.5, 0.5)
        if reason in C.OBSERVATION_REASONS and final is None:
            los = r.uniform(6, 40) * HOUR if r.random() < 0.8 else r.uniform(1, 4) * DAY
        else:
            los = math.exp(math.log(2.4) + los_mu + 0.7 * sev + self.los_off + g(0, 0.45)) * DAY
            los = min(max(los, 0.25 * DAY), 60 * DAY)
        end = t + los if end_at is None else end_at
        end = min(end, self._cap(end_at is not None))
        if end <= t + HOUR:
            return
        if final is None and self.death is not None and end >= self.death:
            final = "death"  # a sudden death during the stay
        if reason in _SURGICAL:
            type_code, source = "305408004", "gp" if reason == "239873007" else "emd"
        elif final is None and r.random() < 0.25:  # direct admission from clinic or GP
            type_code, source = "32485007", "outp" if r.random() < 0.5 else "gp"
        else:
            type_code, source = "183452005", "emd"
        v = self._open("IMP", type_code, t, end, reason=reason, admit_source=source)
        los_d = (end - t) / DAY
        resp = reason in ("233604007", "195951007", "65710008", "88805009")
        mi = reason == "22298006"
        # first hours: full vitals and admission labs, abnormal in proportion to severity
        panels = ["cbc", "bmp"]
        if infect or sev > 0.5:
            if r.random() < (0.85 if reason == "91302008" else 0.55):
                panels.append("lactate")
            if r.random() < 0.6:
                panels.append("crp")
        if reason == "91302008" and r.random() < 0.6:
            panels.append("procalcitonin")
        if mi or reason in ("29857009", "88805009", "271594007") or r.random() < 0.15:
            panels.append("troponin")
        if reason == "88805009" or (resp and r.random() < 0.4):
            panels.append("bnp")
        if r.random() < 0.4:
            panels.append("liver")
        if r.random() < 0.3 or "afib" in self.diag or reason == "74474003":
            panels.append("coag")
        if r.random() < 0.3:
            panels.append("magnesium")
        t_lab = t + r.uniform(0.3, 2.5) * HOUR
        self.vitals(t + 15 * MINUTE, c, True, sev, infect, resp)
        measured = self._measure_labs_only(t_lab, c, tuple(panels), infect, sev, mi)
        if reason == "74474003":
            c.hgb -= 2.0
        self.add(
            CONDITION,
            t + HOUR,
            reason,
            onset=t,
            end=None if final == "death" else end,
            status="active" if final == "death" else "resolved",
        )
        if reason == "91302008" and r.random() < 0.6:
            self.condition(
                t + HOUR, r.choice(("233604007", "68566005")), onset=t, resolve_days=los_d + 3
            )
        if reason == "91302008" and sev > 2.0:
            self.condition(t + 2 * HOUR, "76571007", onset=t, resolve_days=los_d)
        if reason == "22298006":
            self.diag.setdefault("cad", t)
            self.diag["mi"] = t
            if r.random() < 0.12:
                self.add(PROCEDURE, t + DAY, "232717009", end=t + DAY + 4 * HOUR)
        if reason == "230690007":
            self.diag.setdefault("stroke", t)
        if c.cr > 2.2 and reason != "14669001" and r.random() < 0.3:
            self.condition(t + HOUR, "14669001", onset=t, resolve_days=los_d)
        if fe is not None:
            self.condition(t + 2 * HOUR, fe, onset=t, resolve_days=los_d + r.uniform(3, 20))
            self.add(MEDICATION, t + 2 * HOUR, _FE_TREATMENT[fe], status="completed")
        self._generic_diagnoses(t, c, "IMP")
        self._observed_diagnoses(t, measured, "IMP")
        # orders
        for m in meds:
            self.add(MEDICATION, t + 90 * MINUTE, m, status="completed")
        if r.random() < 0.7:
            self.add(
                MEDICATION,
                t + 2 * HOUR,
                "67108" if r.random() < 0.6 else "5224",
                status="completed",
            )
        if r.random() < 0.6:
            self.add(MEDICATION, t + 2 * HOUR, "313782", status="completed")
        if r.random() < 0.3:
            self.add(MEDICATION, t + 2 * HOUR, "26225", status="completed")
        if r.random() < 0.3:
            self.add(MEDICATION, t + 2 * HOUR, "40790", status="completed")
        if "magnesium" in panels and r.random() < 0.3:
            self.add(MEDICATION, t + 3 * HOUR, "6585", status="completed")
        if "diabetes" in self.diag:
            self.add(MEDICATION, t + 2 * HOUR, "86009", status="completed")
        for p in procs:
            pt = t + r.uniform(1, min(24, los_d * 12)) * HOUR
            if pt < end:
                self.add(PROCEDURE, pt, p, end=min(pt + HOUR, end))
        if sev > 1.6 and r.random() < 0.7:
            self.add(PROCEDURE, t + 3 * HOUR, "305351004", end=t + 4 * HOUR)
            if sev > 2.2 and r.random() < 0.6:
                self.add(PROCEDURE, t + 4 * HOUR, "40617009", end=min(t + 4 * DAY, end))
                self.add(MEDICATION, t + 4 * HOUR, "8782", status="completed")
                self.add(MEDICATION, t + 4 * HOUR, "4337", status="completed")
            if infect and sev > 2.0:
                self.add(MEDICATION, t + 4 * HOUR, "7512", status="completed")
        if resp and r.random() < 0.6:
            self.add(PROCEDURE, t + HOUR, "371908008", end=min(t + DAY, end))
        if r.random() < 0.4 and "29303009" not in procs:
            self.add(PROCEDURE, t + 2 * HOUR, "29303009", end=t + 2 * HOUR + 15 * MINUTE)
        # the stay: daily morning labs and twice-daily vitals, severity fading, then the
        # discharge state (instability) that drives readmission risk
        instab = g(0.0, 0.7) + 0.6 * c.p_term + (0.5 if final else 0.0)
        start_day = int(t // DAY)
        for dd in range(1, int(los_d) + 2):
            for hh in (8, 20):
                tv = (start_day + dd - 1) * DAY + hh * HOUR
                if t + 4 * HOUR < tv < end - HOUR:
                    frac = (tv - t) / (end - t)
                    sv = sev * math.exp(-2.5 * frac) + instab * frac
                    self.vitals(tv, c, False, sv, infect and frac < 0.5, resp)
            tl = (start_day + dd) * DAY + 5 * HOUR + int(r.random() * HOUR)
            if tl >= end - HOUR:
                break
            frac = (tl - t) / (end - t)
            sv = sev * math.exp(-2.5 * frac) + instab * frac
            cl = self.ctx(tl)
            if reason == "74474003":
                cl.hgb -= 2.0 * (1 - frac)
            daily = ["bmp"] if r.random() < 0.9 else []
            if r.random() < 0.75:
                daily.append("cbc")
            if "lactate" in panels and frac < 0.3:
                daily.append("lactate")
            if r.random() < 0.15:
                daily.append("magnesium")
            if "diabetes" in self.diag:
                self.obs(tl, "glucose", cl.glu * math.exp(g(0, 0.15)) * (1 + 0.1 * sv))
            self.labs(tl, cl, tuple(daily), sv, infect and frac < 0.5)
        if c.hgb < 7.8 or reason == "74474003":
            self.add(PROCEDURE, t + 5 * HOUR, "116859006", end=t + 7 * HOUR)
        if final == "death":
            v.discharge = "exp"
        elif final == "discharge":
            v.discharge = "hosp" if r.random() < 0.45 else "home"
        else:
            v.discharge = "snf" if age > 75 and r.random() < 0.3 else "home"
            if reason in ("359817006", "230690007") and r.random() < 0.5:
                v.discharge = "rehab"
        self._clamp()
        self.n_adm.append(t)
        if final is None and end < self.loop_end:
            recent = min(3, sum(1 for a in self.n_adm[:-1] if t - a < 180 * DAY))
            x = (
                -2.5
                + 0.5 * recent
                + 0.45 * (self.onset["hf"] <= t)
                + 0.35 * (self.onset["copd"] <= t)
                + 0.35 * (self.onset["ckd"] <= t)
                + 0.9 * instab
                + 0.012 * (age - 65)
                + 0.3 * (self.onset["cancer"] <= t)
            )
            if r.random() < 1 / (1 + math.exp(-x)):
                dt = (1 + 28 * r.betavariate(1.3, 2.0)) * DAY
                self.planned.append((end + dt, "readmit", None))

    def cancer_care(self, t0: float) -> None:
        """Diagnosis consultation and a course of chemotherapy / radiotherapy visits."""
        r = self.rng
        t = self._amb_time(t0)
        if t >= self.loop_end - 4 * HOUR:
            return
        self._open("AMB", "698314001", t, t + 40 * MINUTE, reason=self.cancer_type)
        c = self.ctx(t)
        self._measure(t, c, True, ("cbc", "bmp", "liver"))
        self.diag["cancer"] = t
        self.condition(t, self.cancer_type, onset=t)
        if self.cancer_type == "254837009" and r.random() < 0.6:
            self.add(PROCEDURE, t + 20 * MINUTE, "392021009", end=t + 35 * MINUTE)
        self._close()
        chemo = r.random() < 0.65
        radio = r.random() < 0.35
        n = r.randint(4, 8)
        for i in range(n):
            self.planned.append(
                (
                    t + (i + 1) * r.uniform(18, 24) * DAY,
                    "chemo",
                    ("367336001" if chemo else "385798007") if chemo or radio else None,
                )
            )

    def treatment_visit(self, t0: float, code: str | None) -> None:
        if code is None:
            return
        r = self.rng
        t = self._amb_time(t0)
        if t >= self.loop_end - 4 * HOUR:
            return
        self._open("AMB", "698314001", t, t + 3 * HOUR, reason=self.cancer_type)
        c = self.ctx(t)
        self._measure(t, c, False, ("cbc",) if r.random() < 0.8 else ())
        self.add(PROCEDURE, t + 30 * MINUTE, code, end=t + 150 * MINUTE)
        if code == "367336001":
            self.add(MEDICATION, t + 20 * MINUTE, "26225", status="completed")
        self._close()

    def fe_visit(self, t0: float, code: str) -> None:
        """The encounter at which a fluid/electrolyte episode is diagnosed."""
        u = self.rng.random()
        if u < 0.45:
            self.emergency(t0, reason=_FE_ED_REASON.get(code, "84229001"), fe=code)
        elif u < 0.7:
            self.inpatient(t0, reason=_FE_ADMIT_REASON.get(code, "14669001"), fe=code)
        else:
            t = self._amb_time(t0)
            if t >= self.loop_end - 4 * HOUR:
                return
            self._open("AMB", "185347001", t, t + 30 * MINUTE, reason=code)
            c = self.ctx(t)
            measured = self._measure(t, c, False, ("bmp",))
            self.condition(t + 30 * MINUTE, code, onset=t, resolve_days=self.rng.uniform(10, 40))
            self.add(MEDICATION, t + 25 * MINUTE, _FE_TREATMENT[code], status="completed")
            self._observed_diagnoses(t, measured, "AMB")
            self._close()

    # -----------------------------------------------------------------------------------------
    # 5. the walk through time
    # -----------------------------------------------------------------------------------------
    def _next_wellness(self, t: float) -> float:
        r = self.rng
        age = self.age(t)
        if age < 3.05:
            m = age * 12
            nxt = next((x for x in _WELL_CHILD_MONTHS if x > m + 0.3), None)
            if nxt is not None:
                return self.ts(nxt / 12) + r.uniform(-5, 10) * DAY
        years = 1
        p = (
            (0.5 + 0.5 * self.engagement)
            if age < 18
            else self.engagement * (1.15 if age >= 50 else 0.8)
        )
        while r.random() > p and years < 4:
            years += 1
        return t + years * r.gauss(365, 30) * DAY

    def _followup_gap(self) -> float:
        n = len(self._managed(self.t))
        if n == 0:
            return INF
        return 365 / (0.9 + 0.6 * n) * self.rng.uniform(0.7, 1.3) * DAY

    def run(self) -> Timeline:
        r = self.rng
        self._person()
        self._onsets()
        self._death()
        self._plan_signals()
        self.vax_done: set[int] = set()
        self.flu_done: set[int] = set()
        self.last_td = -INF
        self.last_mammo = -INF
        self.last_colo = -INF
        self.zoster = self.pneumo = self.hepb = False
        self.covid_doses = 0
        self.recheck_until = -INF
        self.n_adm: list[float] = []
        self.planned: list[tuple[float, str, str | None]] = []
        on = self.onset
        death = self.death
        # the end of the history and, for most deaths, a final encounter: dying in hospital, or
        # discharged (from a stay or the emergency department) days to weeks before death
        self.term_len = 0.0
        self.term_scale = 0.0
        self.final_mode = None
        final_start = final_end = None
        if death is not None:
            u = r.random()
            mode = "death" if u < 0.4 else "discharge" if u < 0.84 else None
            if mode is not None or r.random() < 0.5:
                self.term_len = r.uniform(45, 300) * DAY
                self.term_scale = r.uniform(0.25, 1.1)
            if mode == "death":
                final_end = death
                final_start = death - math.exp(math.log(4.0) + r.gauss(0, 0.6)) * DAY
            elif mode == "discharge":
                final_end = death - r.uniform(0.5, 28) * DAY
                final_start = final_end - math.exp(math.log(3.5) + r.gauss(0, 0.5)) * DAY
            if final_start is not None and final_start < self.record_start + DAY:
                self.record_start = max(
                    self.birth + HOUR, int(final_start - r.uniform(30, 200) * DAY)
                )
                if final_start <= self.record_start + DAY:
                    mode = None
            self.final_mode = mode
            self.limit = death
        else:
            self.limit = DATA_CUT
        self.loop_end = final_start if final_start is not None else self.limit
        # planned events that are not driven by rates
        for te, _, code in self.fe_eps:
            if self.record_start < te < self.loop_end:
                self.planned.append((te, "fe", code))
        if self.record_start < on["stroke"] < self.loop_end:
            self.planned.append((on["stroke"], "admit", "230690007"))
        if self.record_start < on["cad"] < self.loop_end and r.random() < 0.35:
            self.planned.append((on["cad"], "admit", "22298006"))
        if self.record_start < on["hf"] < self.loop_end and r.random() < 0.5:
            self.planned.append((on["hf"], "admit", "88805009"))
        if self.record_start < on["cancer"] < self.loop_end:
            self.planned.append((on["cancer"], "cancer", None))

        self.t = float(self.record_start) - HOUR
        next_well = float(self.record_start)
        next_fu = INF
        while True:
            t = self.t
            age = self.age(t)
            pt = self.p_term(t) if death is not None else 0.0
            n_major = self._n_major(t)
            fe_pro = any(te - ln < t < te for te, ln, _ in self.fe_eps)
            r_sick = (
                (
                    (1.8 if age < 3 else 0.9 if age < 12 else 0.6 if age < 18 else 0.4)
                    + 0.08 * n_major
                )
                * (0.6 + 0.8 * self.engagement)
                * (1 + 1.5 * fe_pro)
            )
            r_ed = (
                0.07 + 0.05 * n_major + (0.08 if age < 5 else 0.0) + 0.002 * max(age - 60, 0.0)
            ) * (1 + 3 * pt)
            r_adm = (
                (0.006 + 0.03 * n_major + 0.0012 * max(age - 50, 0.0))
                * math.exp(self.frailty)
                * (1 + 10 * pt)
            )
            total = r_sick + r_ed + r_adm
            t_acute = t + self._exp1() / total * YEAR
            self.planned.sort(key=lambda p: p[0])
            t_plan = self.planned[0][0] if self.planned else INF
            t_next = min(next_well, next_fu, t_plan, t_acute)
            if t_next >= self.loop_end:
                break
            t_next = max(t_next, self.t)
            if t_next == t_plan or (t_plan <= t_next):
                _, kind, arg = self.planned.pop(0)
                if kind == "fe":
                    self.fe_visit(t_next, arg)
                elif kind == "admit":
                    self.inpatient(t_next, reason=arg)
                elif kind == "readmit":
                    self.inpatient(t_next)
                elif kind == "cancer":
                    self.cancer_care(t_next)
                elif kind == "recheck":
                    self.followup(t_next, recheck=arg)
                elif kind == "chemo":
                    self.treatment_visit(t_next, arg)
            elif t_next == next_well:
                self.wellness(t_next)
                next_well = self._next_wellness(self.t)
            elif t_next == next_fu:
                self.followup(t_next)
                next_fu = self.t + self._followup_gap()
            else:
                u = r.random() * total
                if u < r_sick:
                    self.sick_visit(t_next)
                elif u < r_sick + r_ed:
                    self.emergency(t_next)
                else:
                    self.inpatient(t_next)
            if next_fu == INF:
                next_fu = self.t + self._followup_gap()
            if next_well < self.t:
                next_well = self._next_wellness(self.t)
            if next_fu < self.t:
                next_fu = self.t + self._followup_gap() * 0.5
            if self.t < t_next:  # nothing happened (visit fell beyond the end): move on
                self.t = t_next
        if self.final_mode == "death":
            self.inpatient(final_start, final="death", end_at=final_end)
        elif self.final_mode == "discharge":
            if r.random() < 0.75:
                self.inpatient(final_start, final="discharge", end_at=final_end)
            else:
                self.emergency(final_end - r.uniform(2, 8) * HOUR, final=True)
        return self._finish()

    def _finish(self) -> Timeline:
        # medication status: the latest prescription of each long-term drug stays active
        last: dict[str, Event] = {}
        for ev in self.events:
            if ev.kind == MEDICATION and ev.status == "chronic":
                last[ev.code] = ev
                ev.status = "completed"
        if self.death is None:
            for ev in last.values():
                ev.status = "active"
        else:
            for ev in last.values():
                ev.status = "stopped"
        pl = self.place
        person = Person(
            "male" if self.male else "female",
            self.birth,
            self.death,
            pl[2],
            self.given,
            self.family,
            pl[0],
            pl[1],
        )
        return Timeline(self.index, self.seed, self.id_seed, person, self.visits, self.events)


_GENERIC_CHRONIC: tuple[tuple[str, str], ...] = (
    ("cad", "53741008"),
    ("afib", "49436004"),
    ("hf", "88805009"),
    ("copd", "185086009"),
    ("asthma", "195967001"),
    ("osteoarthritis", "239873007"),
    ("osteoporosis", "64859006"),
    ("depression", "35489007"),
    ("anxiety", "197480006"),
    ("hypothyroid", "40930008"),
    ("gerd", "235595009"),
    ("dementia", "26929004"),
    ("osa", "78275009"),
    ("gout", "90560007"),
    ("allergic_rhinitis", "446096008"),
    ("epilepsy", "84757009"),
    ("diabetes", "44054006"),
    ("ra", "69896004"),
    ("alcohol", "7200002"),
)
_DIABETIC_COMPLICATIONS = ("368581000119106", "1551000119108", "127013003")
_MAJOR = ("hf", "copd", "ckd", "cancer", "diabetes", "cad", "afib", "dementia", "stroke")
_INFECTIOUS = frozenset(
    {
        "444814009",
        "195662009",
        "10509002",
        "65363002",
        "68566005",
        "43878008",
        "6142004",
        "36971009",
        "128045006",
        "840539006",
        "75498004",
        "38822007",
        "386661006",
        "233604007",
        "91302008",
        "74400008",
        "76581006",
    }
)
_SURGICAL = frozenset({"74400008", "76581006", "359817006", "239873007"})
_ACUTE_WEIGHTS = C.zipf_weights(len(C.ACUTE_PROBLEMS), 1.05)
_ED_WEIGHTS = C.zipf_weights(len(C.ED_PROBLEMS), 0.9)
_ED_BY_CODE = {e[0]: e for e in C.ED_PROBLEMS}
_FE_TREATMENT = {
    "89627008": "9863",
    "39355002": "9863",
    "14140009": "36676",
    "43339004": "8591",
    "34095006": "9863",
    "28560003": "9863",
}
_FE_ED_REASON = {
    "34095006": "422587007",
    "28560003": "271594007",
    "89627008": "84229001",
    "39355002": "84229001",
    "14140009": "84229001",
    "43339004": "68962001",
}
_FE_ADMIT_REASON = {
    "34095006": "14669001",
    "28560003": "14669001",
    "89627008": "271594007",
    "39355002": "14669001",
    "14140009": "14669001",
    "43339004": "271594007",
}


def simulate_patient(index: int, seed: int) -> Timeline:
    """Simulate patient ``index`` of cohort ``seed``; the same arguments give the same history."""
    return _Sim(index, seed).run()
