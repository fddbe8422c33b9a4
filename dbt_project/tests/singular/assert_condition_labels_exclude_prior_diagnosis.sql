{{ config(meta={'dagster': {'ref': {'name': 'subjects'}}}) }}
{#-
  Condition-onset labels never include a subject who already has the condition at prediction
  time, and a positive label always has its first diagnosis within the horizon after it.
-#}
{%- set horizon = var('condition_horizon_days', 365) | int %}
{%- for group in ['hypertension', 'fluid_electrolyte', 'lipoid'] %}
select
  '{{ group }}' as condition_group,
  l.subject_id,
  l.prediction_time,
  l.boolean_value,
  o.first_diagnosis_time
from {{ ref('labels__' ~ group ~ '_1y') }} as l
left join {{ ref('int_condition_group_onsets') }} as o
  on o.subject_id = l.subject_id and o.condition_group = '{{ group }}'
where o.first_diagnosis_time <= l.prediction_time
  or (l.boolean_value and (
    o.first_diagnosis_time is null
    or o.first_diagnosis_time > {{ dbt.dateadd('day', horizon, 'l.prediction_time') }}
  ))
  or (not l.boolean_value
    and o.first_diagnosis_time <= {{ dbt.dateadd('day', horizon, 'l.prediction_time') }})
{{ "union all" if not loop.last }}
{%- endfor %}
