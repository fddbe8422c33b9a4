{#-
  One row per Observation (component_index 0) and one more per component[] (component_index
  1..n), each with its own code and value. Blood pressure panels (LOINC 85354-9) carry their
  values only in components.
-#}
with src as (
  {{ fhir_resources('Observation') }}
),

parents as (
  select
    id,
    subject_id,
    source_file,
    resource,
    {{ json_str('resource', '$.status') }} as status,
    case
      when {{ json_any_equals('resource', '$.category[*].coding[*].code', "'laboratory'") }} then 'lab'
      when {{ json_any_equals('resource', '$.category[*].coding[*].code', "'vital-signs'") }} then 'vital'
      else 'observation'
    end as event_type,
    coalesce(
      {{ json_str('resource', '$.effectiveDateTime') }},
      {{ json_str('resource', '$.effectivePeriod.start') }},
      {{ json_str('resource', '$.effectiveInstant') }},
      {{ json_str('resource', '$.issued') }}
    ) as effective_raw,
    {{ json_str('resource', '$.encounter.reference') }} as encounter_ref,
    {{ json_array_len('resource', '$.component') }} as n_components
  from src
),

observation_rows as (
  select
    id,
    0 as component_index,
    {{ json_get('resource', '$.code.coding') }} as codings,
    {{ json_str('resource', '$.code.text') }} as code_text,
    {{ observation_value_columns('resource') }}
  from parents
),

components as (
  select
    id,
    {{ json_array_elements('resource', '$.component') }} as component,
    {{ json_array_ordinals('resource', '$.component') }} as component_index
  from parents
  where n_components > 0
),

component_rows as (
  select
    id,
    component_index,
    {{ json_get('component', '$.code.coding') }} as codings,
    {{ json_str('component', '$.code.text') }} as code_text,
    {{ observation_value_columns('component') }}
  from components
),

all_rows as (
  select * from observation_rows
  union all
  select * from component_rows
)

select
  {{ dbt.concat(["r.id", "'#'", dbt.safe_cast("r.component_index", dbt.type_string())]) }}
    as observation_row_id,
  r.id as observation_id,
  r.component_index,
  p.subject_id as patient_id,
  {{ encounter_columns() }},
  p.status,
  p.event_type,
  {{ fhir_timestamp('p.effective_raw') }} as effective_time,
  r.codings,
  r.code_text,
  r.value_numeric,
  r.value_unit,
  r.value_codings,
  r.value_code_text,
  r.value_text,
  (
    r.value_numeric is not null or r.value_codings is not null
    or r.value_code_text is not null or r.value_text is not null
  ) as has_value,
  p.n_components,
  p.source_file
from all_rows as r
inner join parents as p on p.id = r.id
{{ join_encounter('p', 'encounter_ref') }}
