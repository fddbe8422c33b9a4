{#-
  Length of stay longer than var('los_threshold_days') (7). One row per inpatient visit
  (var los_visit_types) with an end and a stay of at least var('los_min_stay_hours') (24 h;
  exactly 24 h is kept); prediction_time = admission + var('los_prediction_hours') (24 h).
  Excluded: subjects dead at or before prediction_time.
  label = end - start > 7 days (exactly 7 days is negative).
-#}
{%- set prediction_hours = var('los_prediction_hours', 24) | int %}
{%- set min_stay_hours = var('los_min_stay_hours', 24) | int %}
{%- set threshold_days = var('los_threshold_days', 7) | int %}
with visits as (
  select
    visit_id,
    subject_id,
    start_time,
    end_time,
    {{ dbt.dateadd('hour', prediction_hours, 'start_time') }} as prediction_time
  from {{ ref('visits') }}
  where visit_type in {{ sql_in_list(var('los_visit_types')) }}
    and end_time is not null
    and end_time >= {{ dbt.dateadd('hour', min_stay_hours, 'start_time') }}
),

subjects as (
  select subject_id, death_time from {{ ref('subjects') }}
)

select
  v.subject_id,
  v.prediction_time,
  v.end_time > {{ dbt.dateadd('day', threshold_days, 'v.start_time') }} as boolean_value,
  v.visit_id
from visits as v
inner join subjects as s on s.subject_id = v.subject_id
where s.death_time is null or s.death_time > v.prediction_time
order by v.subject_id, v.prediction_time, v.visit_id
