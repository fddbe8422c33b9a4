{#- One row per visit, from the VISIT/<type> and VISIT_END/<type> events of meds_events. -#}
with visit_events as (
  select subject_id, visit_id, time, code
  from {{ ref('meds_events') }}
  where visit_id is not null
    and (code like 'VISIT/%' or code like 'VISIT\_END/%' escape '\')
),

per_visit as (
  select
    visit_id,
    subject_id,
    min(case when code like 'VISIT/%' then {{ dbt.split_part('code', "'/'", 2) }} end)
      as visit_type,
    min(case when code like 'VISIT/%' then time end) as start_time,
    max(case when code like 'VISIT\_END/%' escape '\' then time end) as end_time
  from visit_events
  group by visit_id, subject_id
)

select
  visit_id,
  subject_id,
  visit_type,
  start_time,
  end_time
from per_visit
where start_time is not null
order by subject_id, start_time, visit_id
