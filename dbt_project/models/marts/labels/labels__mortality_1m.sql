{#-
  Death within var('mortality_horizon_days') (30) after discharge. One row per inpatient or
  emergency visit (var mortality_visit_types) with an end; prediction_time = the end (discharge).
  Excluded: subjects dead at or before the end (died during the stay).
  label = death_time <= end + 30 days (exactly 30 days is positive).
-#}
{%- set horizon = var('mortality_horizon_days', 30) | int %}
with visits as (
  select visit_id, subject_id, start_time, end_time
  from {{ ref('visits') }}
  where visit_type in {{ sql_in_list(var('mortality_visit_types')) }}
    and end_time is not null
    and end_time >= start_time
),

subjects as (
  select subject_id, death_time from {{ ref('subjects') }}
)

select
  v.subject_id,
  v.end_time as prediction_time,
  coalesce(s.death_time <= {{ dbt.dateadd('day', horizon, 'v.end_time') }}, false)
    as boolean_value,
  v.visit_id
from visits as v
inner join subjects as s on s.subject_id = v.subject_id
where s.death_time is null or s.death_time > v.end_time
order by v.subject_id, prediction_time, v.visit_id
