{#-
  Warns with the FHIR clinical facts that have no usable time (no recorded/onset/performed/
  effective/authored/occurrence date and no encounter start): they cannot become events.
-#}
{{ config(severity='warn', enabled=var('events_source', 'fhir') == 'fhir') }}
select resource_type, event_type, count(*) as n_facts, min(fact_id) as example_fact
from {{ ref('int_fhir__clinical_facts') }}
where time is null
group by resource_type, event_type
