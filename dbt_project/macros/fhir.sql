{#- FHIR helpers shared by the staging models. They use only the JSON macros in json.sql. -#}

{#- The raw rows of one resource type. -#}
{% macro fhir_resources(resource_type) -%}
  select resource_type, id, subject_id, resource, source_file, full_url, last_updated
  from {{ source('raw', 'fhir_resources') }}
  where resource_type = '{{ resource_type }}'
{%- endmacro %}

{#-
  Resolve an encounter reference column `ref_col` of relation `rel` to an Encounter id: a
  `urn:uuid:<x>` (or any fullUrl) is looked up among encounters of the same source file; a
  `Encounter/<id>` (relative or absolute) by id. Emits two LEFT JOINs; select
  encounter_columns() to get encounter_id / encounter_start_time.
-#}
{% macro join_encounter(rel, ref_col) -%}
  left join {{ ref('stg_fhir__encounters') }} as enc_by_url
    on enc_by_url.source_file = {{ rel }}.source_file
    and enc_by_url.full_url = {{ rel }}.{{ ref_col }}
  left join {{ ref('stg_fhir__encounters') }} as enc_by_id
    on enc_by_id.encounter_id = {{ fhir_reference_id(rel ~ '.' ~ ref_col, 'Encounter') }}
{%- endmacro %}

{% macro encounter_columns() -%}
  coalesce(enc_by_url.encounter_id, enc_by_id.encounter_id) as encounter_id,
  coalesce(enc_by_url.start_time, enc_by_id.start_time) as encounter_start_time
{%- endmacro %}

{#-
  The value[x] of an Observation or of one of its components, as columns. `json_expr` is the
  JSON of the observation or of the component.
-#}
{% macro observation_value_columns(json_expr) -%}
  coalesce(
    {{ json_num(json_expr, '$.valueQuantity.value') }},
    {{ json_num(json_expr, '$.valueInteger') }}
  ) as value_numeric,
  coalesce(
    {{ json_str(json_expr, '$.valueQuantity.unit') }},
    {{ json_str(json_expr, '$.valueQuantity.code') }}
  ) as value_unit,
  {{ json_get(json_expr, '$.valueCodeableConcept.coding') }} as value_codings,
  {{ json_str(json_expr, '$.valueCodeableConcept.text') }} as value_code_text,
  coalesce(
    {{ json_str(json_expr, '$.valueString') }},
    {{ json_str(json_expr, '$.valueBoolean') }},
    {{ json_str(json_expr, '$.valueDateTime') }},
    {{ json_str(json_expr, '$.valueTime') }}
  ) as value_text
{%- endmacro %}

{#-
  A staging model for one of the medication resource types. medication[x] is either a
  medicationCodeableConcept or a medicationReference to a Medication resource (`urn:uuid:` within
  the same source file, `Medication/<id>`, or `#<id>` for a Medication contained in the resource),
  whose code is used.
  `time_paths`: the JSON paths of the event time, first present wins.
-#}
{% macro stg_medication(resource_type, id_column, time_paths, end_time_path=none) -%}
with src as (
  {{ fhir_resources(resource_type) }}
),

extracted as (
  select
    id,
    subject_id,
    source_file,
    {{ json_str('resource', '$.status') }} as status,
    {{ json_get('resource', '$.medicationCodeableConcept.coding') }} as med_codings,
    {{ json_str('resource', '$.medicationCodeableConcept.text') }} as med_text,
    {{ json_str('resource', '$.medicationReference.reference') }} as medication_ref,
    {{ json_str('resource', '$.medicationReference.display') }} as medication_ref_display,
    coalesce(
      {{ json_str('resource', '$.encounter.reference') }},
      {{ json_str('resource', '$.context.reference') }}
    ) as encounter_ref,
    coalesce(
      {%- for path in time_paths %}
      {{ json_str('resource', path) }}{{ "," if not loop.last }}
      {%- endfor %}
    ) as time_raw
    {%- if end_time_path %},
    {{ json_str('resource', end_time_path) }} as end_time_raw
    {%- endif %}
  from src
),

-- medicationReference '#<id>' points to a Medication contained in the resource itself.
contained as (
  select id, medication
  from (
    select
      id,
      {{ json_str('resource', '$.medicationReference.reference') }} as medication_ref,
      {{ json_array_elements('resource', '$.contained') }} as medication
    from src
    where {{ json_str('resource', '$.medicationReference.reference') }} like '#%'
  ) as elements
  where {{ json_str('medication', '$.id') }} = {{ dbt.right('medication_ref', dbt.length('medication_ref') ~ ' - 1') }}
    and {{ json_str('medication', '$.resourceType') }} = 'Medication'
),

contained_medications as (
  select
    id,
    {{ json_get('medication', '$.code.coding') }} as codings,
    {{ json_str('medication', '$.code.text') }} as code_text
  from contained
),

medications as (
  select * from {{ ref('stg_fhir__medications') }}
)

select
  e.id as {{ id_column }},
  e.subject_id as patient_id,
  {{ encounter_columns() }},
  e.status,
  coalesce(e.med_codings, med_by_url.codings, med_by_id.codings, med_contained.codings)
    as codings,
  coalesce(
    e.med_text, med_by_url.code_text, med_by_id.code_text, med_contained.code_text,
    e.medication_ref_display
  ) as code_text,
  coalesce(med_by_url.medication_id, med_by_id.medication_id) as medication_id,
  {{ fhir_timestamp('e.time_raw') }} as event_time,
  {%- if end_time_path %}
  {{ fhir_timestamp('e.end_time_raw') }} as event_end_time,
  {%- endif %}
  e.source_file
from extracted as e
left join medications as med_by_url
  on e.medication_ref is not null
  and med_by_url.source_file = e.source_file
  and med_by_url.full_url = e.medication_ref
left join medications as med_by_id
  on med_by_id.medication_id = {{ fhir_reference_id('e.medication_ref', 'Medication') }}
left join contained_medications as med_contained on med_contained.id = e.id
{{ join_encounter('e', 'encounter_ref') }}
{%- endmacro %}
