{#- The event source switch: FHIR (default) or an imported MEDS dataset (var events_source). -#}
{{ config(materialized='view') }}
{%- set events_source = var('events_source', 'fhir') %}
{%- if events_source == 'fhir' %}
select
  subject_id, patient_id, time, code, numeric_value, text_value, unit, visit_id, event_type
from {{ ref('int_fhir__events') }}
{%- elif events_source == 'meds' %}
select
  cast(subject_id as {{ dbt.type_bigint() }}) as subject_id,
  coalesce(
    cast(patient_id as {{ dbt.type_string() }}),
    cast(subject_id as {{ dbt.type_string() }})
  ) as patient_id,
  cast(time as {{ dbt.type_timestamp() }}) as time,
  code,
  cast(numeric_value as {{ dbt.type_float() }}) as numeric_value,
  cast(text_value as {{ dbt.type_string() }}) as text_value,
  cast(unit as {{ dbt.type_string() }}) as unit,
  cast(visit_id as {{ dbt.type_string() }}) as visit_id,
  cast(event_type as {{ dbt.type_string() }}) as event_type
from {{ source('raw', 'meds_events_import') }}
where time is not null and subject_id is not null and code is not null
{%- else %}
{{ exceptions.raise_compiler_error("var events_source must be 'fhir' or 'meds', got " ~ events_source) }}
{%- endif %}
