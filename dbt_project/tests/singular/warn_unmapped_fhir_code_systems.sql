{#- Warns with the FHIR system URLs that the code_systems seed does not map (FHIR source only). -#}
{{ config(severity='warn', enabled=var('events_source', 'fhir') == 'fhir') }}
select system, count(*) as n_codings, min(code) as example_code
from {{ ref('int_fhir__fact_codings') }}
where not is_mapped
group by system
