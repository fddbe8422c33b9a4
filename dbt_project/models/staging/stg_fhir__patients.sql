with src as (
  {{ fhir_resources('Patient') }}
),

extracted as (
  select
    id as patient_id,
    {{ json_str('resource', '$.birthDate') }} as birth_date_raw,
    lower({{ json_str('resource', '$.gender') }}) as gender,
    {{ json_str('resource', '$.deceasedDateTime') }} as deceased_raw,
    {{ json_str('resource', '$.deceasedBoolean') }} as deceased_boolean_raw,
    source_file,
    full_url,
    last_updated
  from src
)

select
  patient_id,
  {{ fhir_timestamp('birth_date_raw') }} as birth_time,
  coalesce(gender, 'unknown') as gender,
  {{ fhir_timestamp('deceased_raw') }} as death_time,
  (deceased_raw is not null or coalesce(deceased_boolean_raw = 'true', false)) as is_deceased,
  source_file,
  full_url,
  last_updated
from extracted
