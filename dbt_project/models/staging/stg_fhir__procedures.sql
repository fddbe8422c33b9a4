with src as (
  {{ fhir_resources('Procedure') }}
),

extracted as (
  select
    id,
    subject_id,
    source_file,
    {{ json_str('resource', '$.status') }} as status,
    {{ json_get('resource', '$.code.coding') }} as codings,
    {{ json_str('resource', '$.code.text') }} as code_text,
    coalesce(
      {{ json_str('resource', '$.performedDateTime') }},
      {{ json_str('resource', '$.performedPeriod.start') }}
    ) as performed_raw,
    {{ json_str('resource', '$.performedPeriod.end') }} as performed_end_raw,
    {{ json_str('resource', '$.encounter.reference') }} as encounter_ref
  from src
)

select
  p.id as procedure_id,
  p.subject_id as patient_id,
  {{ encounter_columns() }},
  p.status,
  p.codings,
  p.code_text,
  {{ fhir_timestamp('p.performed_raw') }} as performed_time,
  {{ fhir_timestamp('p.performed_end_raw') }} as performed_end_time,
  p.source_file
from extracted as p
{{ join_encounter('p', 'encounter_ref') }}
