{#- The MEDS event table, sorted by subject and time (the order a MEDS reader expects). -#}
select
  cast(subject_id as {{ dbt.type_bigint() }}) as subject_id,
  cast(time as {{ dbt.type_timestamp() }}) as time,
  code,
  cast(numeric_value as {{ dbt.type_float() }}) as numeric_value,
  text_value,
  unit,
  visit_id,
  event_type
from {{ ref('int_events') }}
order by subject_id, time, code
