with src as (
  {{ fhir_resources('Immunization') }}
),

extracted as (
  select
    id,
    subject_id,
    source_file,
    {{ json_str('resource', '$.status') }} as status,
    {{ json_get('resource', '$.vaccineCode.coding') }} as codings,
    {{ json_str('resource', '$.vaccineCode.text') }} as code_text,
    {{ json_str('resource', '$.occurrenceDateTime') }} as occurrence_raw,
    {{ json_str('resource', '$.encounter.reference') }} as encounter_ref
  from src
)

select
  i.id as immunization_id,
  i.subject_id as patient_id,
  {{ encounter_columns() }},
  i.status,
  i.codings,
  i.code_text,
  {{ fhir_timestamp('i.occurrence_raw') }} as occurrence_time,
  i.source_file
from extracted as i
{{ join_encounter('i', 'encounter_ref') }}
