{#-
  Which visit each encounter belongs to. An encounter that is partOf another (MIMIC-IV on FHIR:
  an ICU stay or an ED stay within a hospital stay) is folded into the visit of its top-level
  ancestor; every other encounter is a visit of its own. Parents resolve like encounter
  references elsewhere (urn:uuid through the fullUrl in the same file, else by id), are followed
  up to four levels, and a chain that does not end (a cycle) leaves the encounter on its own.
  The visit spans its encounters: from the earliest start to the latest end (open when the
  top-level encounter is open); its type is the top-level encounter's.
-#}
with encounters as (
  select encounter_id, patient_id, visit_type, start_time, end_time, part_of_ref, source_file,
    full_url
  from {{ ref('stg_fhir__encounters') }}
  where coalesce(status, '') not in ('entered-in-error', 'cancelled')
    and start_time is not null
),

parents as (
  select
    e.encounter_id,
    coalesce(p_url.encounter_id, p_id.encounter_id) as parent_id
  from encounters as e
  left join encounters as p_url
    on e.part_of_ref is not null
    and p_url.source_file = e.source_file
    and p_url.full_url = e.part_of_ref
  left join encounters as p_id
    on p_id.encounter_id = {{ fhir_reference_id('e.part_of_ref', 'Encounter') }}
    and p_id.patient_id = e.patient_id
),

roots as (
  select
    p0.encounter_id,
    case
      when p0.parent_id is null then p0.encounter_id
      when p1.parent_id is null then p0.parent_id
      when p2.parent_id is null then p1.parent_id
      when p3.parent_id is null then p2.parent_id
      else p0.encounter_id
    end as visit_id
  from parents as p0
  left join parents as p1 on p1.encounter_id = p0.parent_id
  left join parents as p2 on p2.encounter_id = p1.parent_id
  left join parents as p3 on p3.encounter_id = p2.parent_id
),

members as (
  select r.encounter_id, r.visit_id, e.start_time, e.end_time
  from roots as r
  inner join encounters as e on e.encounter_id = r.encounter_id
),

spans as (
  select
    visit_id,
    min(start_time) as visit_start_time,
    max(end_time) as latest_end_time
  from members
  group by visit_id
)

select
  m.encounter_id,
  m.visit_id,
  m.encounter_id <> m.visit_id as is_part,
  top.patient_id,
  top.visit_type,
  s.visit_start_time,
  case when top.end_time is null then null else s.latest_end_time end as visit_end_time
from members as m
inner join spans as s on s.visit_id = m.visit_id
inner join encounters as top on top.encounter_id = m.visit_id
