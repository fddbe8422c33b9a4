{#-
  train / tuning / held_out per subject: by a salted MD5 of the patient id (var split_salt), so the
  split is stable across runs and independent of the subject_id hash. A MEDS import that brought
  its own splits keeps them (events_source=meds, var use_imported_metadata).
-#}
{%- set use_import = var('events_source', 'fhir') == 'meds' and var('use_imported_metadata', true) %}
{%- set imported = none %}
{%- if use_import %}
-- depends_on: {{ source('raw', 'meds_subject_splits_import') }}
{%- if execute %}
{%- set imported = adapter.get_relation(
    database=source('raw', 'meds_subject_splits_import').database,
    schema=source('raw', 'meds_subject_splits_import').schema,
    identifier=source('raw', 'meds_subject_splits_import').identifier) %}
{%- endif %}
{%- endif %}
{%- set train = var('split_train_percent', 80) | int %}
{%- set tuning = var('split_tuning_percent', 10) | int %}
with subjects as (
  select subject_id, patient_id from {{ ref('subjects') }}
),

hashed as (
  select
    subject_id,
    patient_id,
    {{ stable_hash_bucket(dbt.concat(["'" ~ var('split_salt') ~ "'", "patient_id"]), 100) }} as bucket
  from subjects
)

select
  h.subject_id,
  {%- if imported %}
  coalesce(
    imp.split,
    case when h.bucket < {{ train }} then 'train'
         when h.bucket < {{ train + tuning }} then 'tuning'
         else 'held_out' end
  ) as split
  {%- else %}
  case when h.bucket < {{ train }} then 'train'
       when h.bucket < {{ train + tuning }} then 'tuning'
       else 'held_out' end as split
  {%- endif %}
from hashed as h
{%- if imported %}
left join (
  select subject_id, min(split) as split from {{ imported }} group by subject_id
) as imp on imp.subject_id = h.subject_id
{%- endif %}
order by h.subject_id
