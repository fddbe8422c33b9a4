{#-
  The MEDS events of the FHIR source, with the FHIR patient id: demographics from Patient,
  visit start/end from the visits of int_fhir__encounter_visits (ICU / ED stays partOf a
  hospital stay are folded into it), encounter types, one event per clinical fact.
-#}
with patients as (
  select * from {{ ref('stg_fhir__patients') }}
),

encounter_visits as (
  select * from {{ ref('int_fhir__encounter_visits') }}
),

-- one row per visit: its top-level encounter, spanning the encounters folded into it
visits as (
  select
    visit_id as encounter_id,
    patient_id,
    visit_type,
    visit_start_time as start_time,
    visit_end_time as end_time
  from encounter_visits
  where not is_part
),

facts as (
  select * from {{ ref('int_fhir__clinical_facts') }}
  where time is not null and patient_id is not null
),

codes as (
  select * from {{ ref('int_fhir__fact_codings') }} where role = 'code'
),

value_codes as (
  select * from {{ ref('int_fhir__fact_codings') }} where role = 'value'
),

{%- set null_string = "cast(null as " ~ dbt.type_string() ~ ")" %}
{%- set null_float = "cast(null as " ~ dbt.type_float() ~ ")" %}

events as (
  select
    patient_id, birth_time as time, 'MEDS_BIRTH' as code,
    {{ null_float }} as numeric_value, {{ null_string }} as text_value,
    {{ null_string }} as unit, {{ null_string }} as visit_id, 'birth' as event_type
  from patients
  where birth_time is not null

  union all
  select
    patient_id, birth_time, {{ dbt.concat(["'GENDER/'", "gender"]) }},
    null, null, null, null, 'demographic'
  from patients
  where birth_time is not null

  union all
  select patient_id, death_time, 'MEDS_DEATH', null, null, null, null, 'death'
  from patients
  where death_time is not null

  union all
  select
    patient_id, start_time, {{ dbt.concat(["'VISIT/'", "visit_type"]) }},
    null, null, null, encounter_id, 'visit_start'
  from visits

  union all
  select
    patient_id, end_time, {{ dbt.concat(["'VISIT_END/'", "visit_type"]) }},
    null, null, null, encounter_id, 'visit_end'
  from visits
  where end_time is not null

  union all
  select
    f.patient_id,
    f.time,
    coalesce(
      c.code,
      {{ dbt.concat(["'UNCODED/'", "coalesce(nullif(trim(f.code_text), ''), lower(f.resource_type))"]) }}
    ),
    cast(f.numeric_value as {{ dbt.type_float() }}),
    coalesce(vc.code, f.value_code_text, f.value_text),
    f.unit,
    ev.visit_id,
    f.event_type
  from facts as f
  left join codes as c on c.fact_id = f.fact_id
  left join value_codes as vc on vc.fact_id = f.fact_id
  left join encounter_visits as ev on ev.encounter_id = f.encounter_id
)

select
  {{ stable_hash_bigint('patient_id') }} as subject_id,
  patient_id,
  time,
  code,
  numeric_value,
  text_value,
  unit,
  visit_id,
  event_type
from events
where patient_id is not null
