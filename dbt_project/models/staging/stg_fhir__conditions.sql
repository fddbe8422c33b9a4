with src as (
  {{ fhir_resources('Condition') }}
),

extracted as (
  select
    id,
    subject_id,
    source_file,
    {{ json_get('resource', '$.code.coding') }} as codings,
    {{ json_str('resource', '$.code.text') }} as code_text,
    {{ json_str('resource', '$.clinicalStatus.coding[0].code') }} as clinical_status,
    {{ json_str('resource', '$.verificationStatus.coding[0].code') }} as verification_status,
    {{ json_any_equals('resource', '$.category[*].coding[*].code', "'encounter-diagnosis'") }}
      as is_encounter_diagnosis,
    {{ json_str('resource', '$.recordedDate') }} as recorded_raw,
    coalesce(
      {{ json_str('resource', '$.onsetDateTime') }},
      {{ json_str('resource', '$.onsetPeriod.start') }}
    ) as onset_raw,
    coalesce(
      {{ json_str('resource', '$.abatementDateTime') }},
      {{ json_str('resource', '$.abatementPeriod.start') }}
    ) as abatement_raw,
    {{ json_str('resource', '$.encounter.reference') }} as encounter_ref
  from src
),

timed as (
  select
    c.id as condition_id,
    c.subject_id as patient_id,
    {{ encounter_columns() }},
    coalesce(enc_by_url.end_time, enc_by_id.end_time) as encounter_end_time,
    c.is_encounter_diagnosis,
    c.codings,
    c.code_text,
    c.clinical_status,
    c.verification_status,
    {{ fhir_timestamp('c.recorded_raw') }} as recorded_time,
    {{ fhir_timestamp('c.onset_raw') }} as onset_time,
    {{ fhir_timestamp('c.abatement_raw') }} as abatement_time,
    c.source_file
  from extracted as c
  {{ join_encounter('c', 'encounter_ref') }}
)

select
  *,
  -- When the information became available: recorded, else onset; an undated encounter
  -- diagnosis (MIMIC-IV's billed diagnoses) at the end of its encounter, as it is coded at
  -- discharge and must not be seen by a prediction made during the stay; else the encounter
  -- start.
  coalesce(
    recorded_time,
    onset_time,
    case when is_encounter_diagnosis then encounter_end_time end,
    encounter_start_time
  ) as event_time
from timed
