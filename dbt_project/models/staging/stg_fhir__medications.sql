with src as (
  {{ fhir_resources('Medication') }}
)

select
  id as medication_id,
  {{ json_get('resource', '$.code.coding') }} as codings,
  {{ json_str('resource', '$.code.text') }} as code_text,
  source_file,
  full_url
from src
