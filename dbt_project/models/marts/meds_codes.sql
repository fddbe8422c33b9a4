{#-
  Every code of meds_events exactly once, with a description: the FHIR coding display (else the
  CodeableConcept text; the most frequent one when they differ), a generated description for the
  platform's own codes (MEDS_BIRTH, GENDER/, VISIT/, ...), or the imported dataset's codes
  metadata with events_source=meds.
-#}
{%- set events_source = var('events_source', 'fhir') %}
{%- set imported = none %}
{%- if events_source == 'meds' and var('use_imported_metadata', true) %}
-- depends_on: {{ source('raw', 'meds_codes_import') }}
{%- if execute %}
{%- set imported = adapter.get_relation(
    database=source('raw', 'meds_codes_import').database,
    schema=source('raw', 'meds_codes_import').schema,
    identifier=source('raw', 'meds_codes_import').identifier) %}
{%- endif %}
{%- endif %}
with codes as (
  select code, count(*) as n_events
  from {{ ref('meds_events') }}
  group by code
),

{%- if events_source == 'fhir' %}
source_descriptions as (
  select
    c.code,
    coalesce(c.display, f.code_text) as description,
    count(*) as n
  from {{ ref('int_fhir__fact_codings') }} as c
  inner join {{ ref('int_fhir__clinical_facts') }} as f on f.fact_id = c.fact_id
  where c.role = 'code' and coalesce(c.display, f.code_text) is not null
  group by 1, 2
),
{%- elif imported %}
source_descriptions as (
  select code, description, 1 as n from {{ imported }} where description is not null
),
{%- else %}
source_descriptions as (
  select
    cast(null as {{ dbt.type_string() }}) as code,
    cast(null as {{ dbt.type_string() }}) as description,
    1 as n
  where 1 = 0
),
{%- endif %}

best_description as (
  select code, description
  from (
    select
      code,
      description,
      row_number() over (partition by code order by n desc, description) as rn
    from source_descriptions
  ) as ranked
  where rn = 1
)

select
  c.code,
  coalesce(
    d.description,
    case
      when c.code = 'MEDS_BIRTH' then 'Birth'
      when c.code = 'MEDS_DEATH' then 'Death'
      when c.code like 'GENDER/%'
        then {{ dbt.concat(["'Administrative gender: '", dbt.split_part('c.code', "'/'", 2)]) }}
      when c.code like 'VISIT/%'
        then {{ dbt.concat(["'Start of visit: '", dbt.split_part('c.code', "'/'", 2)]) }}
      when c.code like 'VISIT\_END/%' escape '\'
        then {{ dbt.concat(["'End of visit: '", dbt.split_part('c.code', "'/'", 2)]) }}
      when c.code like 'UNCODED/%'
        then {{ dbt.concat(["'Uncoded: '", "substring(c.code, 9)"]) }}
    end
  ) as description,
  {%- if imported %}
  coalesce(imp.parent_codes, {{ dbt.array_construct([], dbt.type_string()) }}) as parent_codes
  {%- else %}
  {{ dbt.array_construct([], dbt.type_string()) }} as parent_codes
  {%- endif %}
from codes as c
left join best_description as d on d.code = c.code
{%- if imported %}
left join (
  select code, parent_codes
  from (
    select code, parent_codes, row_number() over (partition by code order by code) as rn
    from {{ imported }}
  ) as ranked
  where rn = 1
) as imp on imp.code = c.code
{%- endif %}
order by c.code
