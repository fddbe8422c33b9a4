{#- The task label models, by name. Singular tests loop over these. -#}
{% macro label_models() -%}
  {{ return([
    'labels__mortality_1m', 'labels__los_1w', 'labels__readmission_1m',
    'labels__hypertension_1y', 'labels__fluid_electrolyte_1y', 'labels__lipoid_1y'
  ]) }}
{%- endmacro %}

{#- A SQL list literal from a list var: ['a', 'b'] -> ('a', 'b'). -#}
{% macro sql_in_list(values) -%}
  ({%- for v in values %}'{{ v }}'{{ ", " if not loop.last }}{%- endfor %})
{%- endmacro %}

{#-
  First diagnosis of a condition group within var('condition_horizon_days') after the end of a
  visit. One row per visit (any type) with an end; prediction_time = the visit end. Excluded:
  visits at whose end the subject already has a diagnosis of the group (first diagnosis at or
  before prediction_time), and visits at or after whose end the subject is dead.
  label = first diagnosis <= end + horizon (exactly the horizon is positive).
-#}
{% macro condition_onset_labels(condition_group) -%}
{%- set horizon = var('condition_horizon_days', 365) | int %}
with visits as (
  select visit_id, subject_id, start_time, end_time
  from {{ ref('visits') }}
  where end_time is not null and end_time >= start_time
),

subjects as (
  select subject_id, death_time from {{ ref('subjects') }}
),

onsets as (
  select subject_id, first_diagnosis_time
  from {{ ref('int_condition_group_onsets') }}
  where condition_group = '{{ condition_group }}'
)

select
  v.subject_id,
  v.end_time as prediction_time,
  coalesce(
    o.first_diagnosis_time <= {{ dbt.dateadd('day', horizon, 'v.end_time') }}, false
  ) as boolean_value,
  v.visit_id
from visits as v
inner join subjects as s on s.subject_id = v.subject_id
left join onsets as o on o.subject_id = v.subject_id
where (o.first_diagnosis_time is null or o.first_diagnosis_time > v.end_time)
  and (s.death_time is null or s.death_time > v.end_time)
order by v.subject_id, prediction_time, v.visit_id
{%- endmacro %}
