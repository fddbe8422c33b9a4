with src as (
  {{ fhir_resources('Encounter') }}
),

extracted as (
  select
    id as encounter_id,
    subject_id as patient_id,
    {{ json_str('resource', '$.status') }} as status,
    -- R4: class is one Coding; R5 (if it ever lands): a list of CodeableConcept.
    coalesce(
      {{ json_str('resource', '$.class.code') }},
      {{ json_str('resource', '$.class[0].coding[0].code') }}
    ) as class_code,
    coalesce(
      {{ json_str('resource', '$.class.display') }},
      {{ json_str('resource', '$.class[0].coding[0].display') }}
    ) as class_display,
    -- the class as a codings list: what a folded ICU / ED part contributes as its event
    {{ json_as_array('resource', '$.class') }} as class_codings,
    {{ json_get('resource', '$.type[0].coding') }} as type_codings,
    {{ json_str('resource', '$.type[0].coding[0].system') }} as type_system,
    {{ json_str('resource', '$.type[0].coding[0].code') }} as type_code,
    {{ json_str('resource', '$.type[0].text') }} as type_text,
    coalesce(
      {{ json_str('resource', '$.period.start') }},
      {{ json_str('resource', '$.actualPeriod.start') }}
    ) as start_raw,
    coalesce(
      {{ json_str('resource', '$.period.end') }},
      {{ json_str('resource', '$.actualPeriod.end') }}
    ) as end_raw,
    -- the encounter this one is part of (MIMIC: an ICU or ED stay within a hospital stay)
    {{ json_str('resource', '$.partOf.reference') }} as part_of_ref,
    source_file,
    full_url
  from src
),

classes as (
  select class_value, visit_type from {{ ref('encounter_classes') }}
)

select
  e.encounter_id,
  e.patient_id,
  e.status,
  e.class_code,
  e.class_display,
  e.class_codings,
  case
    when e.class_code is null and e.class_display is null then 'unknown'
    else coalesce(by_code.visit_type, by_display.visit_type, 'other')
  end as visit_type,
  e.type_system,
  e.type_code,
  e.type_codings,
  e.type_text,
  {{ fhir_timestamp('e.start_raw') }} as start_time,
  {{ fhir_timestamp('e.end_raw') }} as end_time,
  e.part_of_ref,
  e.source_file,
  e.full_url
from extracted as e
left join classes as by_code on by_code.class_value = lower(e.class_code)
left join classes as by_display on by_display.class_value = lower(e.class_display)
