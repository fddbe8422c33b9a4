{#- Every visit has exactly one start event, and at most one end event, in meds_events. -#}
select visit_id, count(*) as n_start_events
from {{ ref('meds_events') }}
where visit_id is not null and code like 'VISIT/%'
group by visit_id
having count(*) > 1
union all
select visit_id, count(*)
from {{ ref('meds_events') }}
where visit_id is not null and code like 'VISIT\_END/%' escape '\'
group by visit_id
having count(*) > 1
