{#- One row per subject, derived from meds_events (so it is the same for FHIR and MEDS input). -#}
with events as (
  select subject_id, time, code from {{ ref('meds_events') }}
),

per_subject as (
  select
    subject_id,
    min(case when code = 'MEDS_BIRTH' then time end) as birth_time,
    min(case when code = 'MEDS_DEATH' then time end) as death_time,
    min(case when code like 'GENDER/%' then {{ dbt.split_part('code', "'/'", 2) }} end) as sex,
    min(time) as first_event_time,
    max(time) as last_event_time,
    count(*) as n_events
  from events
  group by subject_id
),

patient_ids as (
  select subject_id, min(patient_id) as patient_id
  from {{ ref('int_events') }}
  group by subject_id
)

select
  s.subject_id,
  p.patient_id,
  s.birth_time,
  s.death_time,
  s.sex,
  s.first_event_time,
  s.last_event_time,
  s.n_events
from per_subject as s
left join patient_ids as p on p.subject_id = s.subject_id
order by s.subject_id
