"""What the MIMIC flavour writes with: the layout of MIMIC-IV on FHIR and its code systems.

The layout (30 NDJSON files, one per profile, each resource tagged with its profile's canonical
URL under ``http://mimic.mit.edu/fhir/mimic``) and the code systems are those of the published
MIMIC-IV Clinical Database on FHIR (v2), as defined by the public MIMIC profiles. The codes are
a small vocabulary chosen to resemble MIMIC's: ICD-9-CM / ICD-10-CM diagnoses without dots, ICD-9
and ICD-10-PCS procedures, numeric item ids for labs (``d_labitems``) and ICU items (``d_items``),
medication names. They were picked by hand, not copied from MIMIC's dictionaries: an item id
that differs from MIMIC's changes a token's name, never the pipeline's behaviour. Codes that
have no MIMIC counterpart here (GSN numbers of ED medications) are placeholders, marked so.

Everything is keyed by the concepts of the clinical simulation (``catalog``): SNOMED codes of
conditions and procedures, RxNorm codes of medications, measurement keys of labs and vitals.
"""

from __future__ import annotations

import hashlib

from . import catalog as C

BASE = "http://mimic.mit.edu/fhir/mimic"


def profile(profile_id: str) -> str:
    return f"{BASE}/StructureDefinition/{profile_id}"


def code_system(name: str) -> str:
    return f"{BASE}/CodeSystem/{name}"


def identifier_system(name: str) -> str:
    return f"{BASE}/identifier/{name}"


#: The 30 files of the MIMIC-IV on FHIR layout: file stem -> (resourceType, profile id).
FILES: dict[str, tuple[str, str]] = {
    "MimicPatient": ("Patient", "mimic-patient"),
    "MimicOrganization": ("Organization", "mimic-organization"),
    "MimicLocation": ("Location", "mimic-location"),
    "MimicEncounter": ("Encounter", "mimic-encounter"),
    "MimicEncounterED": ("Encounter", "mimic-encounter-ed"),
    "MimicEncounterICU": ("Encounter", "mimic-encounter-icu"),
    "MimicCondition": ("Condition", "mimic-condition"),
    "MimicConditionED": ("Condition", "mimic-condition-ed"),
    "MimicMedication": ("Medication", "mimic-medication"),
    "MimicMedicationMix": ("Medication", "mimic-medication-mix"),
    "MimicMedicationRequest": ("MedicationRequest", "mimic-medication-request"),
    "MimicMedicationAdministration": (
        "MedicationAdministration",
        "mimic-medication-administration",
    ),
    "MimicMedicationAdministrationICU": (
        "MedicationAdministration",
        "mimic-medication-administration-icu",
    ),
    "MimicMedicationDispense": ("MedicationDispense", "mimic-medication-dispense"),
    "MimicMedicationDispenseED": ("MedicationDispense", "mimic-medication-dispense-ed"),
    "MimicMedicationStatementED": ("MedicationStatement", "mimic-medication-statement-ed"),
    "MimicObservationChartevents": ("Observation", "mimic-observation-chartevents"),
    "MimicObservationLabevents": ("Observation", "mimic-observation-labevents"),
    "MimicObservationDatetimeevents": ("Observation", "mimic-observation-datetimeevents"),
    "MimicObservationOutputevents": ("Observation", "mimic-observation-outputevents"),
    "MimicObservationVitalSignsED": ("Observation", "mimic-observation-vital-signs"),
    "MimicObservationED": ("Observation", "mimic-observation-ed"),
    "MimicObservationMicroTest": ("Observation", "mimic-observation-micro-test"),
    "MimicObservationMicroSusc": ("Observation", "mimic-observation-micro-susc"),
    "MimicObservationMicroOrg": ("Observation", "mimic-observation-micro-org"),
    "MimicProcedure": ("Procedure", "mimic-procedure"),
    "MimicProcedureED": ("Procedure", "mimic-procedure-ed"),
    "MimicProcedureICU": ("Procedure", "mimic-procedure-icu"),
    "MimicSpecimen": ("Specimen", "mimic-specimen"),
    "MimicSpecimenLab": ("Specimen", "mimic-specimen-lab"),
}
FILE_SUFFIX = ".ndjson.gz"

# code systems
DIAGNOSIS_ICD9 = code_system("mimic-diagnosis-icd9")
DIAGNOSIS_ICD10 = code_system("mimic-diagnosis-icd10")
PROCEDURE_ICD9 = code_system("mimic-procedure-icd9")
PROCEDURE_ICD10 = code_system("mimic-procedure-icd10")
D_LABITEMS = code_system("mimic-d-labitems")
CHARTEVENTS_D_ITEMS = code_system("mimic-chartevents-d-items")
D_ITEMS = code_system("mimic-d-items")
MEDICATION_NAME = code_system("mimic-medication-name")
MEDICATION_ICU = code_system("mimic-medication-icu")
MEDICATION_GSN = code_system("mimic-medication-gsn")
MEDICATION_ETC = code_system("mimic-medication-etc")
MEDICATION_ROUTE = code_system("mimic-medication-route")
MEDICATION_FREQUENCY = code_system("mimic-medication-frequency")
MEDICATION_METHOD_ICU = code_system("mimic-medication-method-icu")
MEDADMIN_CATEGORY_ICU = code_system("mimic-medadmin-category-icu")
UNITS = code_system("mimic-units")
OBSERVATION_CATEGORY = code_system("mimic-observation-category")
LAB_FLUID = code_system("mimic-lab-fluid")
SPEC_TYPE = code_system("mimic-spec-type-desc")
MICRO_TEST = code_system("mimic-microbiology-test")
MICRO_ORGANISM = code_system("mimic-microbiology-organism")
MICRO_ANTIBIOTIC = code_system("mimic-microbiology-antibiotic")
ADMISSION_CLASS = code_system("mimic-admission-class")
ADMIT_SOURCE = code_system("mimic-admit-source")
DISCHARGE_DISPOSITION = code_system("mimic-discharge-disposition")
SERVICES = code_system("mimic-services")
PROCEDURE_CATEGORY = code_system("mimic-procedure-category")
ACT_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
HL7_OBS_CATEGORY = C.OBS_CATEGORY

#: MIMIC's coding changed from ICD-9 to ICD-10 on 2015-10-01 (a real date: the switch is decided
#: on the simulated history's own calendar, before the per-patient shift into the 2100s).
ICD10_FROM = (2015, 10, 1)

# ------------------------------------------------------------------------------------------
# Diagnoses: SNOMED concept of the simulation -> (ICD-9-CM, ICD-10-CM), without dots
# ------------------------------------------------------------------------------------------
DIAGNOSES: dict[str, tuple[str, str]] = {
    "59621000": ("4019", "I10"),
    "38341003": ("4019", "I10"),
    "55822004": ("2724", "E785"),
    "13644009": ("2720", "E7800"),
    "302870006": ("2721", "E781"),
    "15777000": ("79029", "R7303"),
    "44054006": ("25000", "E119"),
    "368581000119106": ("25060", "E1140"),
    "1551000119108": ("25050", "E11319"),
    "127013003": ("25040", "E1122"),
    "162864005": ("27800", "E669"),
    "408512008": ("27801", "E6601"),
    "237602007": ("2777", "E8881"),
    "53741008": ("41401", "I2510"),
    "22298006": ("41071", "I214"),
    "399211009": ("412", "I252"),
    "88805009": ("4280", "I5022"),
    "84114007": ("4280", "I509"),
    "49436004": ("42731", "I4891"),
    "230690007": ("43491", "I639"),
    "29857009": ("78650", "R079"),
    "271594007": ("7802", "R55"),
    "433144002": ("5853", "N183"),
    "431857002": ("5854", "N184"),
    "433146000": ("5855", "N185"),
    "46177005": ("5856", "N186"),
    "14669001": ("5849", "N179"),
    "89627008": ("2761", "E871"),
    "39355002": ("2760", "E870"),
    "14140009": ("2767", "E875"),
    "43339004": ("2768", "E876"),
    "34095006": ("27651", "E860"),
    "28560003": ("27652", "E861"),
    "185086009": ("4912", "J449"),
    "87433001": ("4928", "J439"),
    "195951007": ("49121", "J441"),
    "195967001": ("49390", "J45909"),
    "233678006": ("49390", "J45909"),
    "233604007": ("486", "J189"),
    "65710008": ("51881", "J9600"),
    "10509002": ("4660", "J209"),
    "444814009": ("4619", "J019"),
    "36971009": ("4739", "J329"),
    "75498004": ("4619", "J0190"),
    "195662009": ("462", "J029"),
    "43878008": ("0340", "J020"),
    "65363002": ("3829", "H6690"),
    "6142004": ("4871", "J111"),
    "840539006": ("07982", "U071"),
    "78275009": ("32723", "G4733"),
    "446096008": ("4779", "J3089"),
    "367498001": ("4770", "J302"),
    "49727002": ("7862", "R059"),
    "267036007": ("78600", "R0600"),
    "91302008": ("99591", "A419"),
    "76571007": ("78552", "R6521"),
    "68566005": ("5990", "N390"),
    "38822007": ("5959", "N309"),
    "128045006": ("6829", "L0390"),
    "386661006": ("78060", "R509"),
    "235595009": ("53081", "K219"),
    "74400008": ("5409", "K3580"),
    "76581006": ("5751", "K8120"),
    "74474003": ("5789", "K922"),
    "21522001": ("78900", "R109"),
    "62315008": ("78791", "R197"),
    "422587007": ("78702", "R110"),
    "14760008": ("56400", "K5900"),
    "254837009": ("1749", "C50919"),
    "399068003": ("185", "C61"),
    "363406005": ("1539", "C189"),
    "254637007": ("1629", "C3490"),
    "271737000": ("2859", "D649"),
    "87522002": ("2809", "D509"),
    "239873007": ("71596", "M170"),
    "239872002": ("71595", "M169"),
    "64859006": ("73300", "M810"),
    "90560007": ("2749", "M109"),
    "69896004": ("7140", "M069"),
    "279039007": ("7242", "M545"),
    "57676002": ("71950", "M2550"),
    "68962001": ("7291", "M791"),
    "44465007": ("84500", "S93409A"),
    "70704007": ("84200", "S63509A"),
    "283371005": ("88100", "S51819A"),
    "370247008": ("87340", "S0181XA"),
    "284551006": ("8920", "S91319A"),
    "62106007": ("85000", "S060X0A"),
    "65966004": ("81380", "S5290XA"),
    "16114001": ("82480", "S8290XA"),
    "58150001": ("81000", "S42009A"),
    "359817006": ("82000", "S72009A"),
    "444470001": ("8442", "S83519A"),
    "403190006": ("9490", "T300"),
    "26929004": ("3310", "G309"),
    "84757009": ("34590", "G40909"),
    "37796009": ("34690", "G43909"),
    "25064002": ("7840", "R51"),
    "35489007": ("311", "F329"),
    "370143000": ("29620", "F329"),
    "197480006": ("30000", "F419"),
    "7200002": ("30390", "F1020"),
    "55680006": ("9779", "T50901A"),
    "40930008": ("2449", "E039"),
    "40275004": ("6929", "L259"),
    "24079001": ("6918", "L209"),
    "271807003": ("7821", "R21"),
    "241929008": ("9953", "T7840XA"),
    "84229001": ("78079", "R5383"),
    "449868002": ("3051", "F17210"),
}

# ------------------------------------------------------------------------------------------
# Procedures: SNOMED -> (ICD-9-CM vol. 3, ICD-10-PCS); only hospital procedures are billed
# ------------------------------------------------------------------------------------------
PROCEDURES: dict[str, tuple[str, str]] = {
    "399208008": ("8744", "BW03ZZZ"),
    "433236007": ("8872", "B244ZZZ"),
    "29303009": ("8952", "4A02X4Z"),
    "371908008": ("9396", "3E0F7GC"),
    "40617009": ("9672", "5A1955Z"),
    "415070008": ("0066", "027034Z"),
    "232717009": ("3615", "021009W"),
    "52734007": ("8151", "0SR90JZ"),
    "609588000": ("8154", "0SRC0JZ"),
    "80146002": ("4709", "0DTJ4ZZ"),
    "45595009": ("5123", "0FT44ZZ"),
    "116859006": ("9904", "30233N1"),
    "302497006": ("3995", "5A1D70Z"),
    "77477000": ("8703", "BW28ZZZ"),
    "363680008": ("8739", "BW00ZZZ"),
    "274474001": ("9353", "2W3MX1Z"),
    "288086009": ("8659", "0HQ9XZZ"),
    "392021009": ("8521", "0HBT0ZZ"),
}

# ------------------------------------------------------------------------------------------
# Labs (hosp d_labitems): measurement key -> (itemid, label, MIMIC unit, fluid)
# ------------------------------------------------------------------------------------------
LAB_ITEMS: dict[str, tuple[str, str, str, str]] = {
    "sodium": ("50983", "Sodium", "mEq/L", "Blood"),
    "potassium": ("50971", "Potassium", "mEq/L", "Blood"),
    "chloride": ("50902", "Chloride", "mEq/L", "Blood"),
    "co2": ("50882", "Bicarbonate", "mEq/L", "Blood"),
    "bun": ("51006", "Urea Nitrogen", "mg/dL", "Blood"),
    "creatinine": ("50912", "Creatinine", "mg/dL", "Blood"),
    "glucose": ("50931", "Glucose", "mg/dL", "Blood"),
    "calcium": ("50893", "Calcium, Total", "mg/dL", "Blood"),
    "egfr": ("50920", "Estimated GFR (MDRD equation)", "mL/min/1.73 m2", "Blood"),
    "wbc": ("51301", "White Blood Cells", "K/uL", "Blood"),
    "rbc": ("51279", "Red Blood Cells", "m/uL", "Blood"),
    "hgb": ("51222", "Hemoglobin", "g/dL", "Blood"),
    "hct": ("51221", "Hematocrit", "%", "Blood"),
    "mcv": ("51250", "MCV", "fL", "Blood"),
    "platelets": ("51265", "Platelet Count", "K/uL", "Blood"),
    "rdw": ("52172", "RDW-SD", "fL", "Blood"),
    "cholesterol": ("50907", "Cholesterol, Total", "mg/dL", "Blood"),
    "triglycerides": ("51000", "Triglycerides", "mg/dL", "Blood"),
    "hdl": ("50904", "Cholesterol, HDL", "mg/dL", "Blood"),
    "ldl": ("50905", "Cholesterol, LDL, Calculated", "mg/dL", "Blood"),
    "albumin": ("50862", "Albumin", "g/dL", "Blood"),
    "protein": ("50976", "Protein, Total", "g/dL", "Blood"),
    "bilirubin": ("50885", "Bilirubin, Total", "mg/dL", "Blood"),
    "alp": ("50863", "Alkaline Phosphatase", "IU/L", "Blood"),
    "alt": ("50861", "Alanine Aminotransferase (ALT)", "IU/L", "Blood"),
    "ast": ("50878", "Asparate Aminotransferase (AST)", "IU/L", "Blood"),
    "a1c": ("50852", "% Hemoglobin A1c", "%", "Blood"),
    "lactate": ("50813", "Lactate", "mmol/L", "Blood"),
    "crp": ("50889", "C-Reactive Protein", "mg/L", "Blood"),
    "procalcitonin": ("59001", "Procalcitonin (placeholder item)", "ng/mL", "Blood"),
    "bnp": ("50963", "NTproBNP", "pg/mL", "Blood"),
    "troponin": ("51003", "Troponin T", "ng/mL", "Blood"),
    "inr": ("51237", "INR(PT)", "", "Blood"),
    "pt": ("51274", "PT", "sec", "Blood"),
    "tsh": ("50993", "Thyroid Stimulating Hormone", "uIU/mL", "Blood"),
    "magnesium": ("50960", "Magnesium", "mg/dL", "Blood"),
    "ferritin": ("50924", "Ferritin", "ng/mL", "Blood"),
    "uacr": ("51070", "Albumin/Creatinine, Urine", "mg/g", "Urine"),
}

# ------------------------------------------------------------------------------------------
# ICU charting (icu d_items)
# ------------------------------------------------------------------------------------------
#: Numeric chart items charted every hour: key -> (itemid, label, unit, category)
CHART_HOURLY: dict[str, tuple[str, str, str, str]] = {
    "heart_rate": ("220045", "Heart Rate", "bpm", "Routine Vital Signs"),
    "resp_rate": ("220210", "Respiratory Rate", "insp/min", "Respiratory"),
    "spo2": ("220277", "O2 saturation pulseoxymetry", "%", "Respiratory"),
    "sbp": ("220179", "Non Invasive Blood Pressure systolic", "mmHg", "Routine Vital Signs"),
    "dbp": ("220180", "Non Invasive Blood Pressure diastolic", "mmHg", "Routine Vital Signs"),
    "mbp": ("220181", "Non Invasive Blood Pressure mean", "mmHg", "Routine Vital Signs"),
}
#: Numeric chart items charted every four hours.
CHART_4H: dict[str, tuple[str, str, str, str]] = {
    "temperature": ("223761", "Temperature Fahrenheit", "°F", "Routine Vital Signs"),
    "gcs_eye": ("220739", "GCS - Eye Opening", "", "Neurological"),
    "gcs_verbal": ("223900", "GCS - Verbal Response", "", "Neurological"),
    "gcs_motor": ("223901", "GCS - Motor Response", "", "Neurological"),
}
CHART_WEIGHT = ("226512", "Admission Weight (Kg)", "kg", "General")
#: Text chart items charted every two hours: (itemid, label, category, values)
CHART_TEXT: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "220048",
        "Heart Rhythm",
        "Routine Vital Signs",
        ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)"),
    ),
    ("224650", "Ectopy Type 1", "Routine Vital Signs", ("None", "PVC's")),
    ("226732", "O2 Delivery Device(s)", "Respiratory", ("Nasal cannula", "None", "Face tent")),
    ("224084", "Activity", "General", ("Bed", "Chair", "Ambulate")),
    ("224093", "Position", "General", ("Left Side", "Right Side", "Supine")),
)
#: Alarm limits, charted with the assessments: (itemid, label, unit, value)
CHART_ALARMS: tuple[tuple[str, str, str, float], ...] = (
    ("220046", "Heart rate Alarm - High", "bpm", 120),
    ("220047", "Heart Rate Alarm - Low", "bpm", 50),
)
AFIB_RHYTHM = "AF (Atrial Fibrillation)"
VENT_DEVICE = "Endotracheal tube"

#: Output events (icu d_items): urine output every two hours.
OUTPUT_URINE = ("226559", "Foley", "ml", "Output")
#: Datetime events: charted when lines go in, once a day.
DATETIME_ITEMS: tuple[tuple[str, str], ...] = (
    ("225755", "18 Gauge Insertion Date"),
    ("224186", "PICC Line Insertion Date"),
    ("225754", "Arterial Line Insertion Date"),
)
#: Procedure events (icu d_items): (itemid, label, category)
ICU_PROC_AT_ADMISSION: tuple[tuple[str, str, str], ...] = (
    ("225402", "EKG", "Imaging"),
    ("224263", "Multi Lumen", "Access Lines - Invasive"),
    ("225752", "Arterial Line", "Access Lines - Invasive"),
)
ICU_PROC_DAILY = ("225459", "Chest X-Ray", "Imaging")
#: simulation procedures that are also ICU procedure events: SNOMED -> (itemid, label, category)
ICU_PROCEDURES: dict[str, tuple[str, str, str]] = {
    "40617009": ("225792", "Invasive Ventilation", "Ventilation"),
    "302497006": ("225802", "Dialysis - CRRT", "Dialysis"),
    "116859006": ("225468", "Transfusion", "Intubation/Extubation"),
}

#: ICU medications (inputevents): RxNorm -> (itemid, label, unit, dose low, dose high, hours
#: between administrations, category)
ICU_MEDICATIONS: dict[str, tuple[str, str, str, float, float, int, str]] = {
    "9863": ("225158", "NaCl 0.9%", "mL", 250, 1000, 8, "01-Drips"),
    "7512": ("221906", "Norepinephrine", "mg", 0.5, 4, 2, "01-Drips"),
    "8782": ("222168", "Propofol", "mg", 100, 600, 2, "01-Drips"),
    "4337": ("221744", "Fentanyl", "mcg", 25, 200, 2, "01-Drips"),
    "8591": ("225166", "Potassium Chloride", "mEq", 10, 40, 12, "02-Fluids (Crystalloids)"),
    "11124": ("225798", "Vancomycin", "dose", 1, 1, 12, "08-Antibiotics (IV)"),
    "2193": ("225855", "Ceftriaxone", "dose", 1, 1, 24, "08-Antibiotics (IV)"),
    "8339": ("225893", "Piperacillin/Tazobactam (Zosyn)", "dose", 1, 1, 8, "08-Antibiotics (IV)"),
    "5224": ("225152", "Heparin Sodium", "units", 500, 1500, 4, "01-Drips"),
    "86009": ("223258", "Insulin - Regular", "units", 1, 10, 4, "01-Drips"),
    "6585": ("222011", "Magnesium Sulfate", "grams", 1, 2, 24, "02-Fluids (Crystalloids)"),
    "4603": ("221794", "Furosemide (Lasix)", "mg", 20, 80, 12, "03-IV Fluid Bolus"),
}
ICU_MAINTENANCE = "9863"

# ------------------------------------------------------------------------------------------
# Medications (hosp): RxNorm -> medication name, the code of the Medication resources
# ------------------------------------------------------------------------------------------


def _medication_name(display: str) -> str:
    """'lisinopril 10 MG Oral Tablet' -> 'Lisinopril'; leading strength words are skipped."""
    words: list[str] = []
    for word in display.split():
        if word[0].isdigit() or word.isupper():
            if words:
                break
            continue
        words.append(word.capitalize())
    return " ".join(words) or display


MEDICATION_NAMES: dict[str, str] = {
    rx: _medication_name(display) for rx, display in C.MEDICATIONS.items()
}
#: IV mixes (MimicMedicationMix): RxNorm of the active drug -> the diluent's RxNorm. A request
#: for such a drug in hospital references the mix, whose first ingredient is the drug.
MIXES: dict[str, str] = {
    "11124": "9863",
    "8339": "9863",
    "2193": "9863",
    "7512": "9863",
    "5224": "9863",
    "8591": "9863",
}
ROUTES: dict[str, str] = {"IV": "IV", "PO": "PO/NG", "SC": "SC"}
IV_DRUGS: frozenset[str] = frozenset(
    {"11124", "8339", "2193", "2180", "7512", "5224", "9863", "8591", "6585", "4337", "8782"}
)

#: Chronic medications of the simulation: the home medications an ED medication
#: reconciliation lists.
CHRONIC_RXNORM: frozenset[str] = frozenset(
    rx for meds in C.CHRONIC_MEDICATIONS.values() for rx in meds
)


def placeholder_gsn(rxnorm: str) -> str:
    """A stable six-digit stand-in for the GSN of a drug (not a real GSN)."""
    return f"{int(hashlib.md5(rxnorm.encode()).hexdigest()[:8], 16) % 900000 + 100000:06d}"


#: Enhanced Therapeutic Class of the home medication groups (code, text), by chronic key.
ETC_CLASSES: dict[str, tuple[str, str]] = {
    "htn": ("6182", "Antihypertensives"),
    "lipid": ("6173", "Antihyperlipidemics"),
    "hypertriglyceridemia": ("6173", "Antihyperlipidemics"),
    "diabetes": ("6145", "Antidiabetics"),
    "hf": ("6183", "Cardiac Agents"),
    "afib": ("6184", "Antiarrhythmics and Anticoagulants"),
    "cad": ("6185", "Antiplatelet Agents"),
}
ETC_OTHER = ("6000", "Other Medications")

# ------------------------------------------------------------------------------------------
# Microbiology
# ------------------------------------------------------------------------------------------
MICRO_BLOOD = ("90201", "Blood Culture, Routine", "BLOOD CULTURE")
MICRO_URINE = ("90039", "URINE CULTURE", "URINE")
ORGANISMS: tuple[tuple[str, str], ...] = (
    ("80002", "ESCHERICHIA COLI"),
    ("80023", "STAPH AUREUS COAG +"),
    ("80026", "KLEBSIELLA PNEUMONIAE"),
)
ANTIBIOTICS: tuple[tuple[str, str], ...] = (
    ("90005", "CEFAZOLIN"),
    ("90004", "CEFTRIAXONE"),
    ("90012", "GENTAMICIN"),
    ("90025", "TRIMETHOPRIM/SULFA"),
)
INFECTIOUS_ADMISSIONS: frozenset[str] = frozenset(
    {"91302008", "233604007", "68566005", "128045006", "74400008", "76581006"}
)

# ------------------------------------------------------------------------------------------
# Encounters
# ------------------------------------------------------------------------------------------
#: ICU units (Location names) by admission reason; default MICU.
ICU_UNITS: dict[str, str] = {
    "22298006": "Coronary Care Unit (CCU)",
    "88805009": "Coronary Care Unit (CCU)",
    "232717009": "Cardiac Vascular Intensive Care Unit (CVICU)",
    "230690007": "Neuro Surgical Intensive Care Unit (Neuro SICU)",
    "359817006": "Trauma SICU (TSICU)",
    "74474003": "Medical/Surgical Intensive Care Unit (MICU/SICU)",
}
MICU = "Medical Intensive Care Unit (MICU)"
WARDS: tuple[str, ...] = (
    "Medicine",
    "Medicine/Cardiology",
    "Surgery",
    "Orthopaedics",
    "Neurology",
    "Hematology/Oncology",
    "Vascular",
    "Transplant",
    "Observation",
    "Med/Surg",
    "Med/Surg/Trauma",
    "Cardiology Surgery Intermediate",
    "Medicine/Cardiology Intermediate",
    "Neuro Intermediate",
    "Surgery/Trauma",
    "Emergency Department",
    "Emergency Department Observation",
    "PACU",
    "Labor & Delivery",
    "Psychiatry",
    "Unknown",
)
LOCATIONS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            MICU,
            *ICU_UNITS.values(),
            "Surgical Intensive Care Unit (SICU)",
            "Neuro Stepdown",
            *WARDS,
            "Discharge Lounge",
            "Cardiac Surgery",
        )
    )
)
#: Ward (Location name) and service (mimic-services) by admission reason.
SERVICE_BY_REASON: dict[str, tuple[str, str]] = {
    "22298006": ("CMED", "Medicine/Cardiology"),
    "88805009": ("CMED", "Medicine/Cardiology"),
    "29857009": ("CMED", "Medicine/Cardiology"),
    "230690007": ("NMED", "Neurology"),
    "359817006": ("ORTHO", "Orthopaedics"),
    "239873007": ("ORTHO", "Orthopaedics"),
    "74400008": ("SURG", "Surgery"),
    "76581006": ("SURG", "Surgery"),
    "232717009": ("CSURG", "Cardiology Surgery Intermediate"),
}
DEFAULT_SERVICE = ("MED", "Medicine")
SURGICAL_ELECTIVE: frozenset[str] = frozenset({"239873007"})
#: the simulation's discharge dispositions -> mimic-discharge-disposition
DISCHARGE: dict[str | None, str] = {
    "home": "HOME",
    "snf": "SKILLED NURSING FACILITY",
    "hosp": "HOSPICE",
    "rehab": "REHAB",
    "exp": "DIED",
    None: "HOME",
}
ED_TRIAGE_SNOMED = ("386478007", "Triage: emergency center (procedure)")
ED_VITALS_SNOMED = ("61746007", "Taking patient vital signs (procedure)")
ENCOUNTER_TYPE_HOSP = ("453701000124103", "In-person encounter (procedure)")
ENCOUNTER_TYPE_STAY = ("308335008", "Patient encounter procedure")
