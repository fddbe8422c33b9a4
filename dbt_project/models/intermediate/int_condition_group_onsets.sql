{#-
  Per subject and condition group (hypertension, fluid_electrolyte, lipoid): the first diagnosis,
  from meds_events codes matched against the condition_value_sets seed. ICD rows with
  include_descendants match the code and every code below it (I11 matches I11.0, I110, I11.9);
  dots are ignored, so dotted and undotted ICD codes both match. SNOMED rows match exactly.
-#}
with value_sets as (
  select
    task as condition_group,
    code_prefix,
    {{ dbt.replace('code', "'.'", "''") }} as code_norm,
    include_descendants
  from {{ ref('condition_value_sets') }}
),

events as (
  select
    subject_id,
    time,
    code,
    code_prefix,
    {{ dbt.replace("substring(code, " ~ dbt.length("code_prefix") ~ " + 2)", "'.'", "''") }} as code_norm
  from (
    select subject_id, time, code, {{ dbt.split_part('code', "'/'", 1) }} as code_prefix
    from {{ ref('meds_events') }}
    where event_type = 'condition' or event_type is null
  ) as e
  where code_prefix in (select code_prefix from value_sets)
),

matches as (
  select
    e.subject_id,
    vs.condition_group,
    e.time,
    e.code
  from events as e
  inner join value_sets as vs
    on vs.code_prefix = e.code_prefix
    and (
      vs.code_norm = e.code_norm
      or (vs.include_descendants and e.code_norm like {{ dbt.concat(["vs.code_norm", "'%'"]) }})
    )
),

ranked as (
  select
    *,
    row_number() over (partition by subject_id, condition_group order by time, code) as rn
  from matches
)

select
  subject_id,
  condition_group,
  time as first_diagnosis_time,
  code as first_diagnosis_code
from ranked
where rn = 1
