{#-
  Warns (does not fail) when events carry codes from a code system missing from the
  code_systems seed (UNMAPPED*/...) or no code at all (UNCODED/...): add the system to the seed.
-#}
{{ config(severity='warn') }}
select
  {{ dbt.split_part('code', "'/'", 1) }} as code_prefix,
  count(*) as n_events,
  count(distinct code) as n_codes,
  min(code) as example_code
from {{ ref('meds_events') }}
where code like 'UNMAPPED%' or code like 'UNCODED/%'
group by 1
