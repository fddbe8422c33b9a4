{#- Warns with encounter classes the encounter_classes seed does not map (FHIR source only). -#}
{{ config(severity='warn', enabled=var('events_source', 'fhir') == 'fhir') }}
select class_code, class_display, count(*) as n_encounters
from {{ ref('stg_fhir__encounters') }}
where visit_type in ('other', 'unknown')
group by class_code, class_display
