"""The code catalogue of the synthetic cohort: real codes with their real display names.

Everything the simulator can emit is listed here as plain data, so that the clinical simulation
(``timeline``) refers to concepts by short keys and the renderers (``render_fhir``, later a MIMIC
flavour) look the codes up in one place. The lists are deliberately small (a few hundred codes)
but clinically coherent: SNOMED CT for conditions, procedures and encounter types, LOINC with
UCUM units for labs and vitals, RxNorm for medications and CVX for vaccines.

``CONDITION_GROUPS`` names the SNOMED codes the generator uses for the three condition-onset
tasks. It is a catalogue, not the canonical value set: the dbt project owns the task value sets
and tests check that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
MED_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

ENCOUNTER_CLASSES: dict[str, str] = {
    "AMB": "ambulatory",
    "EMER": "emergency",
    "IMP": "inpatient encounter",
}

ADMIT_SOURCES: dict[str, str] = {
    "emd": "From accident/emergency department",
    "gp": "General Practitioner referral",
    "outp": "From outpatient department",
}

DISCHARGE_DISPOSITIONS: dict[str, str] = {
    "home": "Home",
    "snf": "Skilled nursing facility",
    "hosp": "Hospice",
    "rehab": "Rehabilitation",
    "exp": "Expired",
}

# --------------------------------------------------------------------------------------------
# Encounter types (SNOMED CT)
# --------------------------------------------------------------------------------------------
ENCOUNTER_TYPES: dict[str, str] = {
    "162673000": "General examination of patient (procedure)",
    "410620009": "Well child visit (procedure)",
    "185349003": "Encounter for check up (procedure)",
    "390906007": "Follow-up encounter (procedure)",
    "185345009": "Encounter for symptom (procedure)",
    "185347001": "Encounter for problem (procedure)",
    "698314001": "Consultation for treatment (procedure)",
    "50849002": "Emergency room admission (procedure)",
    "183478001": "Emergency hospital admission for asthma (procedure)",
    "32485007": "Hospital admission (procedure)",
    "183452005": "Emergency hospital admission (procedure)",
    "305408004": "Admission to surgical department (procedure)",
}

# --------------------------------------------------------------------------------------------
# Conditions (SNOMED CT disorders, findings, situations)
# --------------------------------------------------------------------------------------------
CONDITIONS: dict[str, str] = {
    # cardiometabolic
    "59621000": "Essential hypertension (disorder)",
    "38341003": "Hypertensive disorder, systemic arterial (disorder)",
    "55822004": "Hyperlipidemia (disorder)",
    "13644009": "Hypercholesterolemia (disorder)",
    "302870006": "Hypertriglyceridemia (disorder)",
    "15777000": "Prediabetes (finding)",
    "44054006": "Diabetes mellitus type 2 (disorder)",
    "368581000119106": "Neuropathy due to type 2 diabetes mellitus (disorder)",
    "1551000119108": "Nonproliferative diabetic retinopathy due to type 2 diabetes mellitus "
    "(disorder)",
    "127013003": "Disorder of kidney due to diabetes mellitus (disorder)",
    "162864005": "Body mass index 30+ - obesity (finding)",
    "408512008": "Body mass index 40+ - severely obese (finding)",
    "237602007": "Metabolic syndrome X (disorder)",
    "53741008": "Coronary arteriosclerosis (disorder)",
    "22298006": "Myocardial infarction (disorder)",
    "399211009": "History of myocardial infarction (situation)",
    "88805009": "Chronic congestive heart failure (disorder)",
    "84114007": "Heart failure (disorder)",
    "49436004": "Atrial fibrillation (disorder)",
    "230690007": "Cerebrovascular accident (disorder)",
    "29857009": "Chest pain (finding)",
    "271594007": "Syncope (disorder)",
    # renal
    "433144002": "Chronic kidney disease stage 3 (disorder)",
    "431857002": "Chronic kidney disease stage 4 (disorder)",
    "433146000": "Chronic kidney disease stage 5 (disorder)",
    "46177005": "End-stage renal disease (disorder)",
    "14669001": "Acute renal failure syndrome (disorder)",
    # fluid and electrolytes
    "89627008": "Hyponatremia (disorder)",
    "39355002": "Hypernatremia (disorder)",
    "14140009": "Hyperkalemia (disorder)",
    "43339004": "Hypokalemia (disorder)",
    "34095006": "Dehydration (disorder)",
    "28560003": "Hypovolemia (disorder)",
    # respiratory
    "185086009": "Chronic obstructive bronchitis (disorder)",
    "87433001": "Pulmonary emphysema (disorder)",
    "195951007": "Acute exacerbation of chronic obstructive airways disease (disorder)",
    "195967001": "Asthma (disorder)",
    "233678006": "Childhood asthma (disorder)",
    "233604007": "Pneumonia (disorder)",
    "65710008": "Acute respiratory failure (disorder)",
    "10509002": "Acute bronchitis (disorder)",
    "444814009": "Viral sinusitis (disorder)",
    "36971009": "Sinusitis (disorder)",
    "75498004": "Acute bacterial sinusitis (disorder)",
    "195662009": "Acute viral pharyngitis (disorder)",
    "43878008": "Streptococcal sore throat (disorder)",
    "65363002": "Otitis media (disorder)",
    "6142004": "Influenza (disorder)",
    "840539006": "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)",
    "78275009": "Obstructive sleep apnea syndrome (disorder)",
    "446096008": "Perennial allergic rhinitis (disorder)",
    "367498001": "Seasonal allergic rhinitis (disorder)",
    "49727002": "Cough (finding)",
    "267036007": "Dyspnea (finding)",
    # infection
    "91302008": "Sepsis (disorder)",
    "76571007": "Septic shock (disorder)",
    "68566005": "Urinary tract infectious disease (disorder)",
    "38822007": "Cystitis (disorder)",
    "128045006": "Cellulitis (disorder)",
    "386661006": "Fever (finding)",
    # gastrointestinal
    "235595009": "Gastroesophageal reflux disease (disorder)",
    "74400008": "Appendicitis (disorder)",
    "76581006": "Cholecystitis (disorder)",
    "74474003": "Gastrointestinal hemorrhage (disorder)",
    "21522001": "Abdominal pain (finding)",
    "62315008": "Diarrhea (finding)",
    "422587007": "Nausea (finding)",
    "14760008": "Constipation (finding)",
    # oncology and haematology
    "254837009": "Malignant neoplasm of breast (disorder)",
    "399068003": "Malignant tumor of prostate (disorder)",
    "363406005": "Malignant tumor of colon (disorder)",
    "254637007": "Non-small cell lung cancer (disorder)",
    "271737000": "Anemia (disorder)",
    "87522002": "Iron deficiency anemia (disorder)",
    # musculoskeletal and injury
    "239873007": "Osteoarthritis of knee (disorder)",
    "239872002": "Osteoarthritis of hip (disorder)",
    "64859006": "Osteoporosis (disorder)",
    "90560007": "Gout (disorder)",
    "69896004": "Rheumatoid arthritis (disorder)",
    "279039007": "Low back pain (finding)",
    "57676002": "Joint pain (finding)",
    "68962001": "Muscle pain (finding)",
    "44465007": "Sprain of ankle (disorder)",
    "70704007": "Sprain of wrist (disorder)",
    "283371005": "Laceration of forearm (disorder)",
    "370247008": "Facial laceration (disorder)",
    "284551006": "Laceration of foot (disorder)",
    "62106007": "Concussion with no loss of consciousness (disorder)",
    "65966004": "Fracture of forearm (disorder)",
    "16114001": "Fracture of ankle (disorder)",
    "58150001": "Fracture of clavicle (disorder)",
    "359817006": "Closed fracture of hip (disorder)",
    "444470001": "Injury of anterior cruciate ligament (disorder)",
    "403190006": "Epidermal burn of skin (disorder)",
    # neurology, mental health
    "26929004": "Alzheimer's disease (disorder)",
    "84757009": "Epilepsy (disorder)",
    "37796009": "Migraine (disorder)",
    "25064002": "Headache (finding)",
    "35489007": "Depressive disorder (disorder)",
    "370143000": "Major depressive disorder (disorder)",
    "197480006": "Anxiety disorder (disorder)",
    "7200002": "Alcoholism (disorder)",
    "55680006": "Drug overdose (disorder)",
    # endocrine, skin, other
    "40930008": "Hypothyroidism (disorder)",
    "40275004": "Contact dermatitis (disorder)",
    "24079001": "Atopic dermatitis (disorder)",
    "271807003": "Eruption of skin (disorder)",
    "241929008": "Acute allergic reaction (disorder)",
    "84229001": "Fatigue (finding)",
    "449868002": "Smokes tobacco daily (finding)",
}

#: SNOMED codes the generator emits for the three condition-onset tasks (code -> display).
CONDITION_GROUPS: dict[str, dict[str, str]] = {
    "hypertension": {c: CONDITIONS[c] for c in ("38341003", "59621000")},
    "fluid_electrolyte": {
        c: CONDITIONS[c]
        for c in ("89627008", "39355002", "14140009", "43339004", "34095006", "28560003")
    },
    "lipoid": {c: CONDITIONS[c] for c in ("55822004", "13644009", "302870006")},
}

# --------------------------------------------------------------------------------------------
# Procedures (SNOMED CT)
# --------------------------------------------------------------------------------------------
PROCEDURES: dict[str, str] = {
    "430193006": "Medication reconciliation (procedure)",
    "710824005": "Assessment of health and social care needs (procedure)",
    "171207006": "Depression screening (procedure)",
    "428211000124100": "Assessment of substance use (procedure)",
    "866148006": "Screening for domestic abuse (procedure)",
    "73761001": "Colonoscopy (procedure)",
    "71651007": "Mammography (procedure)",
    "399208008": "Plain X-ray of chest (procedure)",
    "363680008": "Radiographic imaging procedure (procedure)",
    "77477000": "Computerized axial tomography (procedure)",
    "29303009": "Electrocardiographic procedure (procedure)",
    "433236007": "Transthoracic echocardiography (procedure)",
    "127783003": "Spirometry (procedure)",
    "117015009": "Throat culture (procedure)",
    "117010004": "Urine culture (procedure)",
    "288086009": "Suture open wound (procedure)",
    "274474001": "Bone immobilization (procedure)",
    "305351004": "Admission to intensive care unit (procedure)",
    "371908008": "Oxygen administration by mask (procedure)",
    "40617009": "Artificial ventilation (regime/therapy)",
    "415070008": "Percutaneous coronary intervention (procedure)",
    "232717009": "Coronary artery bypass grafting (procedure)",
    "52734007": "Total replacement of hip (procedure)",
    "609588000": "Total knee replacement (procedure)",
    "80146002": "Appendectomy (procedure)",
    "45595009": "Laparoscopic cholecystectomy (procedure)",
    "116859006": "Transfusion of blood product (procedure)",
    "302497006": "Hemodialysis (procedure)",
    "367336001": "Chemotherapy (procedure)",
    "385798007": "Radiation therapy care (regime/therapy)",
    "392021009": "Lumpectomy of breast (procedure)",
    "5880005": "Physical examination procedure (procedure)",
}

# --------------------------------------------------------------------------------------------
# Medications (RxNorm: ingredients and a few clinical drugs)
# --------------------------------------------------------------------------------------------
MEDICATIONS: dict[str, str] = {
    # cardiovascular
    "314076": "lisinopril 10 MG Oral Tablet",
    "197361": "amlodipine 5 MG Oral Tablet",
    "310798": "hydrochlorothiazide 25 MG Oral Tablet",
    "52175": "losartan",
    "6918": "metoprolol",
    "200031": "carvedilol 6.25 MG Oral Tablet",
    "1202": "atenolol",
    "35296": "ramipril",
    "3443": "diltiazem",
    "4603": "furosemide",
    "9997": "spironolactone",
    "3407": "digoxin",
    "703": "amiodarone",
    "11289": "warfarin",
    "1364430": "apixaban",
    "1114195": "rivaroxaban",
    "32968": "clopidogrel",
    "243670": "aspirin 81 MG Oral Tablet",
    "4917": "nitroglycerin",
    "5470": "hydralazine",
    # lipids
    "83367": "atorvastatin",
    "36567": "simvastatin",
    "301542": "rosuvastatin",
    "42463": "pravastatin",
    "341248": "ezetimibe",
    "8703": "fenofibrate",
    "4719": "gemfibrozil",
    # diabetes
    "860975": "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
    "4821": "glipizide",
    "593411": "sitagliptin",
    "1545653": "empagliflozin",
    "1991302": "semaglutide",
    "274783": "insulin glargine",
    "86009": "insulin lispro",
    # respiratory and allergy
    "435": "albuterol",
    "69120": "tiotropium",
    "41126": "fluticasone",
    "19831": "budesonide",
    "88249": "montelukast",
    "20610": "cetirizine",
    "28889": "loratadine",
    "3498": "diphenhydramine",
    "8640": "prednisone",
    "6902": "methylprednisolone",
    # anti-infectives
    "308182": "amoxicillin 250 MG Oral Capsule",
    "48203": "clavulanate",
    "18631": "azithromycin",
    "2231": "cephalexin",
    "2193": "ceftriaxone",
    "2180": "cefazolin",
    "11124": "vancomycin",
    "8339": "piperacillin",
    "2551": "ciprofloxacin",
    "82122": "levofloxacin",
    "7454": "nitrofurantoin",
    "3640": "doxycycline",
    "6922": "metronidazole",
    "260101": "oseltamivir",
    # analgesia, GI, symptom relief
    "313782": "acetaminophen 325 MG Oral Tablet",
    "5640": "ibuprofen",
    "7258": "naproxen",
    "41493": "meloxicam",
    "7804": "oxycodone",
    "7052": "morphine",
    "10689": "tramadol",
    "21949": "cyclobenzaprine",
    "37418": "sumatriptan",
    "26225": "ondansetron",
    "7646": "omeprazole",
    "40790": "pantoprazole",
    "4278": "famotidine",
    "82003": "docusate",
    # inpatient, renal, electrolytes
    "5224": "heparin",
    "67108": "enoxaparin",
    "9863": "sodium chloride",
    "8591": "potassium chloride",
    "36676": "sodium bicarbonate",
    "6585": "magnesium sulfate",
    "105694": "epoetin alfa",
    "24947": "ferrous sulfate",
    "7512": "norepinephrine",
    "4337": "fentanyl",
    "8782": "propofol",
    # other chronic
    "10582": "levothyroxine",
    "36437": "sertraline",
    "321988": "escitalopram",
    "42347": "bupropion",
    "596": "alprazolam",
    "135447": "donepezil",
    "25480": "gabapentin",
    "519": "allopurinol",
    "2683": "colchicine",
    "46041": "alendronate",
    "5492": "hydrocortisone",
}

# --------------------------------------------------------------------------------------------
# Vaccines (CVX)
# --------------------------------------------------------------------------------------------
VACCINES: dict[str, str] = {
    "08": "Hep B, adolescent or pediatric",
    "43": "Hep B, adult",
    "20": "DTaP",
    "10": "IPV",
    "49": "Hib (PRP-OMP)",
    "100": "pneumococcal conjugate PCV 7",
    "133": "Pneumococcal conjugate PCV 13",
    "215": "Pneumococcal conjugate PCV 15",
    "33": "pneumococcal polysaccharide vaccine, 23 valent",
    "116": "rotavirus, pentavalent",
    "03": "MMR",
    "21": "varicella",
    "83": "Hep A, ped/adol, 2 dose",
    "115": "Tdap",
    "113": "Td (adult) preservative free",
    "114": "meningococcal MCV4P",
    "62": "HPV, quadrivalent",
    "165": "HPV9",
    "141": "Influenza, seasonal, injectable",
    "140": "Influenza, seasonal, injectable, preservative free",
    "150": "Influenza, injectable, quadrivalent, preservative free",
    "121": "zoster live",
    "187": "zoster recombinant",
    "208": "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
    "30 mcg/0.3mL dose",
    "207": "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
    "100 mcg/0.5mL dose",
}


# --------------------------------------------------------------------------------------------
# Measurements (LOINC, UCUM)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measure:
    """A LOINC-coded measurement with its UCUM unit and the plausible range values are kept in.

    ``low``/``high`` are hard physiological bounds (values are clipped into them, so that no
    simulated value is impossible); ``decimals`` is the precision the value is reported with.
    """

    code: str
    display: str
    unit: str
    low: float
    high: float
    decimals: int
    category: str = "laboratory"


def _lab(code: str, display: str, unit: str, low: float, high: float, dec: int) -> Measure:
    return Measure(code, display, unit, low, high, dec, "laboratory")


def _vital(code: str, display: str, unit: str, low: float, high: float, dec: int) -> Measure:
    return Measure(code, display, unit, low, high, dec, "vital-signs")


MEASURES: dict[str, Measure] = {
    # basic metabolic panel
    "sodium": _lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 110, 170, 0),
    "potassium": _lab(
        "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 2.0, 8.0, 1
    ),
    "chloride": _lab("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 75, 130, 0),
    "co2": _lab(
        "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 8, 45, 0
    ),
    "bun": _lab("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 2, 150, 0),
    "creatinine": _lab(
        "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.15, 15.0, 2
    ),
    "glucose": _lab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 35, 600, 0),
    "calcium": _lab("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 6.0, 13.5, 1),
    "egfr": _lab(
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma "
        "by Creatinine-based formula (MDRD)",
        "mL/min/{1.73_m2}",
        3,
        150,
        0,
    ),
    # complete blood count
    "wbc": _lab(
        "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 0.5, 60, 1
    ),
    "rbc": _lab(
        "789-8", "Erythrocytes [#/volume] in Blood by Automated count", "10*6/uL", 1.5, 7.0, 2
    ),
    "hgb": _lab("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 4.5, 21.0, 1),
    "hct": _lab(
        "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", 14, 62, 1
    ),
    "mcv": _lab("787-2", "MCV [Entitic volume] by Automated count", "fL", 60, 120, 1),
    "platelets": _lab(
        "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 10, 900, 0
    ),
    "rdw": _lab(
        "21000-5",
        "Erythrocyte distribution width [Entitic volume] by Automated count",
        "fL",
        30,
        80,
        1,
    ),
    # lipids
    "cholesterol": _lab(
        "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 80, 450, 0
    ),
    "triglycerides": _lab(
        "2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 30, 1200, 0
    ),
    "hdl": _lab(
        "2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 15, 110, 0
    ),
    "ldl": _lab(
        "18262-6",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
        "mg/dL",
        20,
        320,
        0,
    ),
    # liver panel
    "albumin": _lab("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 1.2, 5.6, 1),
    "protein": _lab("2885-2", "Protein [Mass/volume] in Serum or Plasma", "g/dL", 3.5, 10.0, 1),
    "bilirubin": _lab(
        "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.1, 25, 1
    ),
    "alp": _lab(
        "6768-6",
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        20,
        900,
        0,
    ),
    "alt": _lab(
        "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        4,
        1500,
        0,
    ),
    "ast": _lab(
        "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        5,
        1500,
        0,
    ),
    # other chemistry
    "a1c": _lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 15.0, 1),
    "lactate": _lab("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", 0.4, 15, 1),
    "crp": _lab(
        "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0.2, 350, 1
    ),
    "procalcitonin": _lab(
        "33959-8", "Procalcitonin [Mass/volume] in Serum or Plasma", "ng/mL", 0.02, 100, 2
    ),
    "bnp": _lab(
        "30934-4", "Natriuretic peptide B [Mass/volume] in Serum or Plasma", "pg/mL", 5, 5000, 0
    ),
    "troponin": _lab(
        "10839-9", "Troponin I.cardiac [Mass/volume] in Serum or Plasma", "ng/mL", 0.0, 50, 2
    ),
    "inr": _lab("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.8, 8, 1),
    "pt": _lab("5902-2", "Prothrombin time (PT)", "s", 9, 80, 1),
    "tsh": _lab("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.01, 100, 2),
    "magnesium": _lab(
        "19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", 0.8, 4.5, 1
    ),
    "ferritin": _lab("2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "ng/mL", 3, 3000, 0),
    "uacr": _lab("14959-1", "Microalbumin/Creatinine [Mass Ratio] in Urine", "mg/g", 1, 3000, 0),
    # vital signs
    "height": _vital("8302-2", "Body height", "cm", 40, 215, 1),
    "weight": _vital("29463-7", "Body weight", "kg", 1.8, 250, 1),
    "bmi": _vital("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 10, 70, 1),
    "head": _vital("9843-4", "Head Occipital-frontal circumference", "cm", 30, 56, 1),
    "heart_rate": _vital("8867-4", "Heart rate", "/min", 30, 210, 0),
    "resp_rate": _vital("9279-1", "Respiratory rate", "/min", 6, 60, 0),
    "temperature": _vital("8310-5", "Body temperature", "Cel", 34.0, 41.5, 1),
    "spo2": _vital(
        "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 70, 100, 0
    ),
    "pain": Measure(
        "72514-3",
        "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
        "{score}",
        0,
        10,
        0,
        "survey",
    ),
    # the blood pressure panel carries its values in components, never at the top level
    "bp": _vital("85354-9", "Blood pressure panel with all children optional", "mm[Hg]", 0, 0, 0),
    "sbp": _vital("8480-6", "Systolic blood pressure", "mm[Hg]", 60, 250, 0),
    "dbp": _vital("8462-4", "Diastolic blood pressure", "mm[Hg]", 30, 150, 0),
}

PANELS: dict[str, tuple[str, ...]] = {
    "bmp": ("sodium", "potassium", "chloride", "co2", "bun", "creatinine", "glucose", "calcium"),
    "cbc": ("wbc", "rbc", "hgb", "hct", "mcv", "platelets", "rdw"),
    "lipid": ("cholesterol", "triglycerides", "hdl", "ldl"),
    "liver": ("albumin", "protein", "bilirubin", "alp", "alt", "ast"),
    "coag": ("pt", "inr"),
}

# --------------------------------------------------------------------------------------------
# Outpatient acute problems, most common first (Zipf-like weights are applied by rank).
# (condition, min age, max age, medications, procedures, days until resolved)
# --------------------------------------------------------------------------------------------
ACUTE_PROBLEMS: tuple[tuple[str, float, float, tuple[str, ...], tuple[str, ...], int], ...] = (
    ("444814009", 0, 120, ("313782",), (), 10),
    ("195662009", 2, 120, ("313782",), (), 7),
    ("10509002", 0, 120, ("313782",), (), 14),
    ("65363002", 0, 12, ("308182",), (), 10),
    ("279039007", 18, 120, ("5640", "21949"), (), 30),
    ("68566005", 5, 120, ("7454",), ("117010004",), 7),
    ("43878008", 3, 60, ("308182",), ("117015009",), 10),
    ("6142004", 0, 120, ("260101", "313782"), (), 10),
    ("25064002", 8, 120, ("313782",), (), 3),
    ("57676002", 30, 120, ("7258",), (), 21),
    ("49727002", 0, 120, (), (), 14),
    ("21522001", 5, 120, (), ("77477000",), 5),
    ("367498001", 4, 70, ("20610",), (), 60),
    ("40275004", 0, 120, ("5492",), (), 14),
    ("386661006", 0, 120, ("313782",), (), 4),
    ("44465007", 8, 70, ("5640",), ("363680008",), 21),
    ("62315008", 0, 120, (), (), 5),
    ("36971009", 10, 120, ("308182", "48203"), (), 14),
    ("422587007", 5, 120, ("26225",), (), 3),
    ("283371005", 3, 90, (), ("288086009",), 14),
    ("24079001", 0, 40, ("5492",), (), 30),
    ("128045006", 10, 120, ("2231", "3640"), (), 14),
    ("840539006", 0, 120, ("313782",), (), 14),
    ("370247008", 1, 90, (), ("288086009",), 10),
    ("75498004", 10, 120, ("308182",), (), 14),
    ("70704007", 8, 80, ("5640",), ("363680008",), 21),
    ("38822007", 15, 120, ("7454",), ("117010004",), 7),
    ("84229001", 18, 120, (), (), 30),
    ("65966004", 4, 90, ("313782",), ("363680008", "274474001"), 42),
    ("37796009", 12, 70, ("37418",), (), 2),
    ("62106007", 5, 80, (), ("77477000",), 14),
    ("271807003", 0, 120, ("3498",), (), 10),
    ("68962001", 18, 120, ("5640",), (), 14),
    ("16114001", 8, 90, ("313782",), ("363680008", "274474001"), 42),
    ("241929008", 0, 120, ("3498", "8640"), (), 3),
    ("284551006", 3, 90, (), ("288086009",), 14),
    ("14760008", 0, 120, ("82003",), (), 7),
    ("58150001", 3, 60, ("313782",), ("363680008",), 42),
    ("444470001", 14, 50, ("7258",), (), 90),
    ("403190006", 1, 90, (), (), 10),
    ("90560007", 35, 120, ("2683",), (), 10),
)

# --------------------------------------------------------------------------------------------
# Reasons for an emergency visit (treat and release), most common first.
# (condition, min age, medications, procedures)
# --------------------------------------------------------------------------------------------
ED_PROBLEMS: tuple[tuple[str, float, tuple[str, ...], tuple[str, ...]], ...] = (
    ("21522001", 5, ("26225",), ("77477000",)),
    ("29857009", 25, ("243670", "4917"), ("29303009", "399208008")),
    ("283371005", 2, (), ("288086009",)),
    ("44465007", 8, ("5640",), ("363680008",)),
    ("25064002", 10, ("313782",), ("77477000",)),
    ("267036007", 20, (), ("399208008",)),
    ("65966004", 3, ("7804",), ("363680008", "274474001")),
    ("68566005", 10, ("2551",), ("117010004",)),
    ("62106007", 5, (), ("77477000",)),
    ("386661006", 0, ("313782",), ()),
    ("271594007", 30, (), ("29303009",)),
    ("128045006", 10, ("2231",), ()),
    ("16114001", 8, ("7804",), ("363680008", "274474001")),
    ("55680006", 14, (), ()),
    ("241929008", 0, ("3498", "6902"), ()),
    ("403190006", 1, (), ()),
)

# --------------------------------------------------------------------------------------------
# Reasons for an inpatient admission: severity offset and what is ordered for them.
# (condition, severity mean, LOS log-offset, infection, medications, procedures)
# --------------------------------------------------------------------------------------------
ADMISSION_REASONS: dict[str, tuple[float, float, bool, tuple[str, ...], tuple[str, ...]]] = {
    "233604007": (0.5, 0.15, True, ("2193", "18631"), ("399208008",)),  # pneumonia
    "91302008": (1.2, 0.45, True, ("11124", "8339", "9863"), ("399208008", "117010004")),
    "88805009": (0.6, 0.2, False, ("4603",), ("399208008", "433236007", "29303009")),
    "195951007": (0.5, 0.05, False, ("6902", "435", "18631"), ("399208008", "371908008")),
    "14669001": (0.5, 0.1, False, ("9863",), ()),  # acute kidney injury
    "68566005": (0.2, -0.1, True, ("2193",), ("117010004",)),
    "128045006": (0.1, 0.0, True, ("2180", "11124"), ()),
    "359817006": (0.6, 0.35, False, ("7052", "67108"), ("363680008", "52734007")),
    "22298006": (0.9, 0.1, False, ("243670", "32968", "5224"), ("29303009", "415070008")),
    "230690007": (0.9, 0.4, False, ("243670",), ("77477000",)),
    "74474003": (0.6, 0.0, False, ("40790",), ("116859006",)),
    "29857009": (-0.6, -1.2, False, ("243670",), ("29303009",)),  # observation stay
    "271594007": (-0.5, -1.1, False, (), ("29303009",)),  # observation stay
    "74400008": (0.0, -0.3, True, ("2193", "6922"), ("80146002",)),
    "76581006": (0.1, -0.1, True, ("8339",), ("45595009",)),
    "239873007": (-0.3, -0.2, False, ("7804", "67108"), ("609588000",)),  # elective knee
    "65710008": (1.4, 0.4, False, ("6902", "82122"), ("40617009", "305351004")),
}

#: Reasons for which the stay is an observation stay (usually shorter than 24 h).
OBSERVATION_REASONS: frozenset[str] = frozenset({"29857009", "271594007"})

#: Long-term medications for each chronic condition key used by the simulation.
CHRONIC_MEDICATIONS: dict[str, tuple[str, ...]] = {
    "htn": ("314076", "197361", "310798", "52175", "6918", "1202", "35296", "5470"),
    "lipid": ("83367", "36567", "301542", "42463", "341248"),
    "hypertriglyceridemia": ("8703", "4719"),
    "diabetes": ("860975", "4821", "593411", "1545653", "274783", "1991302"),
    "hf": ("4603", "200031", "9997"),
    "afib": ("1364430", "11289", "6918", "3443", "1114195", "3407", "703"),
    "cad": ("243670", "32968", "83367"),
    "copd": ("69120", "435", "41126"),
    "asthma": ("435", "41126", "88249", "19831"),
    "ckd": ("105694", "36676"),
    "hypothyroid": ("10582",),
    "depression": ("36437", "321988", "42347"),
    "anxiety": ("321988", "596"),
    "gerd": ("7646", "4278"),
    "osteoarthritis": ("41493", "10689", "5640"),
    "osteoporosis": ("46041",),
    "gout": ("519",),
    "ra": ("8640",),
    "dementia": ("135447",),
    "epilepsy": ("25480",),
    "allergic_rhinitis": ("28889", "20610"),
    "cancer": ("26225",),
    "anemia": ("24947",),
}

#: Display names of every code by system, for renderers that need one lookup.
DISPLAY: dict[str, dict[str, str]] = {
    SNOMED: {**CONDITIONS, **PROCEDURES, **ENCOUNTER_TYPES},
    RXNORM: MEDICATIONS,
    CVX: VACCINES,
    LOINC: {m.code: m.display for m in MEASURES.values()},
}


def zipf_weights(n: int, exponent: float = 1.1) -> list[float]:
    """Weights 1/rank**exponent: a few very common codes and a long tail, as in real EHRs."""
    return [1.0 / (rank**exponent) for rank in range(1, n + 1)]
