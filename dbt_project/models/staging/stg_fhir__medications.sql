{#-
  Medications by id. A medication mix (MIMIC-IV's MimicMedicationMix: no code, ingredients that
  reference other Medications) is coded by its first ingredient, so a request for the mix still
  becomes one coded event.
-#}
with src as (
  {{ fhir_resources('Medication') }}
),

medications as (
  select
    id as medication_id,
    {{ json_get('resource', '$.code.coding') }} as codings,
    {{ json_str('resource', '$.code.text') }} as code_text,
    {{ json_str('resource', '$.ingredient[0].itemReference.reference') }} as first_ingredient_ref,
    source_file,
    full_url
  from src
)

select
  m.medication_id,
  coalesce(m.codings, ing_by_url.codings, ing_by_id.codings) as codings,
  coalesce(m.code_text, ing_by_url.code_text, ing_by_id.code_text) as code_text,
  m.source_file,
  m.full_url
from medications as m
left join medications as ing_by_url
  on m.codings is null
  and ing_by_url.source_file = m.source_file
  and ing_by_url.full_url = m.first_ingredient_ref
left join medications as ing_by_id
  on m.codings is null
  and ing_by_id.medication_id = {{ fhir_reference_id('m.first_ingredient_ref', 'Medication') }}
