{#-
  Readmission within var('readmission_horizon_days') (30) after discharge. One row per inpatient
  visit (var readmission_visit_types) with an end; prediction_time = the end (discharge).
  Excluded: subjects dead at or before the end (died during the stay).
  label = another inpatient visit starts after the end and at most 30 days later (exactly 30
  days is positive).
-#}
{%- set horizon = var('readmission_horizon_days', 30) | int %}
with inpatient as (
  select visit_id, subject_id, start_time, end_time
  from {{ ref('visits') }}
  where visit_type in {{ sql_in_list(var('readmission_visit_types')) }}
),

index_visits as (
  select * from inpatient
  where end_time is not null and end_time >= start_time
),

subjects as (
  select subject_id, death_time from {{ ref('subjects') }}
),

readmissions as (
  select
    i.visit_id,
    max(case
      when r.start_time > i.end_time
        and r.start_time <= {{ dbt.dateadd('day', horizon, 'i.end_time') }}
      then 1 else 0
    end) as readmitted
  from index_visits as i
  inner join inpatient as r
    on r.subject_id = i.subject_id and r.visit_id <> i.visit_id
  group by i.visit_id
)

select
  i.subject_id,
  i.end_time as prediction_time,
  coalesce(r.readmitted = 1, false) as boolean_value,
  i.visit_id
from index_visits as i
inner join subjects as s on s.subject_id = i.subject_id
left join readmissions as r on r.visit_id = i.visit_id
where s.death_time is null or s.death_time > i.end_time
order by i.subject_id, prediction_time, i.visit_id
