{#-
  The one coding chosen for each fact's code (role 'code') and coded value (role 'value'): the
  first coding whose system is in the code_systems seed, else the first coding (with a fallback
  UNMAPPED prefix). Codes become PREFIX/code.
-#}
with facts as (
  select fact_id, codings, value_codings
  from {{ ref('int_fhir__clinical_facts') }}
),

elements as (
  select
    fact_id,
    'code' as role,
    {{ json_array_elements('codings', '$') }} as coding,
    {{ json_array_ordinals('codings', '$') }} as ordinal
  from facts
  where codings is not null
  union all
  select
    fact_id,
    'value' as role,
    {{ json_array_elements('value_codings', '$') }} as coding,
    {{ json_array_ordinals('value_codings', '$') }} as ordinal
  from facts
  where value_codings is not null
),

parsed as (
  select
    fact_id,
    role,
    ordinal,
    {{ json_str('coding', '$.system') }} as system,
    trim({{ json_str('coding', '$.code') }}) as code_value,
    {{ json_str('coding', '$.display') }} as display
  from elements
),

mapped as (
  select
    p.fact_id,
    p.role,
    p.ordinal,
    p.system,
    p.code_value,
    p.display,
    cs.prefix is not null as is_mapped,
    coalesce(cs.prefix, {{ unmapped_code_prefix('p.system') }}) as code_prefix
  from parsed as p
  left join {{ ref('code_systems') }} as cs on cs.system_url = p.system
  where p.code_value is not null and p.code_value <> ''
),

ranked as (
  select
    *,
    row_number() over (
      partition by fact_id, role
      order by case when is_mapped then 0 else 1 end, ordinal
    ) as rn
  from mapped
)

select
  fact_id,
  role,
  {{ dbt.concat(["code_prefix", "'/'", "code_value"]) }} as code,
  system,
  display,
  is_mapped
from ranked
where rn = 1
