{#-
  Every clinical statement that becomes one event, from all FHIR staging models, in one shape.
  Resources marked entered-in-error (and refuted conditions, not-done procedures/immunizations,
  cancelled observations) are left out. Observations: one row per component; the observation's
  own value row only when it has a value or has no components (a blood pressure panel carries
  only components). `time` may be NULL here; such facts do not become events (a test warns).
-#}
with conditions as (
  select
    {{ dbt.concat(["'Condition/'", "condition_id"]) }} as fact_id,
    'Condition' as resource_type,
    patient_id,
    event_time as time,
    'condition' as event_type,
    encounter_id,
    codings,
    code_text,
    -- untyped NULLs: the union takes each column's type from the observation rows
    null as numeric_value,
    null as unit,
    null as value_codings,
    null as value_code_text,
    null as value_text
  from {{ ref('stg_fhir__conditions') }}
  where coalesce(verification_status, '') not in ('entered-in-error', 'refuted')
),

procedures as (
  select
    {{ dbt.concat(["'Procedure/'", "procedure_id"]) }}, 'Procedure', patient_id,
    performed_time, 'procedure', encounter_id, codings, code_text,
    null, null, null, null, null
  from {{ ref('stg_fhir__procedures') }}
  where coalesce(status, '') not in ('entered-in-error', 'not-done')
),

{%- set meds = [
    ('stg_fhir__medication_requests', 'MedicationRequest', 'medication_request_id', 'medication'),
    ('stg_fhir__medication_administrations', 'MedicationAdministration', 'medication_administration_id', 'medication_administration'),
    ('stg_fhir__medication_dispenses', 'MedicationDispense', 'medication_dispense_id', 'medication_dispense'),
    ('stg_fhir__medication_statements', 'MedicationStatement', 'medication_statement_id', 'medication_statement'),
] %}
{% for model, rtype, id_col, event_type in meds %}
{{ event_type }}s as (
  select
    {{ dbt.concat(["'" ~ rtype ~ "/'", id_col]) }}, '{{ rtype }}', patient_id,
    event_time, '{{ event_type }}', encounter_id, codings, code_text,
    null, null, null, null, null
  from {{ ref(model) }}
  where coalesce(status, '') not in ('entered-in-error', 'not-done', 'cancelled', 'draft')
),
{% endfor %}

observations as (
  select
    {{ dbt.concat(["'Observation/'", "observation_row_id"]) }}, 'Observation', patient_id,
    effective_time, event_type, encounter_id, codings, code_text,
    value_numeric, value_unit, value_codings, value_code_text, value_text
  from {{ ref('stg_fhir__observations') }}
  where coalesce(status, '') not in ('entered-in-error', 'cancelled')
    and (component_index > 0 or has_value or n_components = 0)
),

immunizations as (
  select
    {{ dbt.concat(["'Immunization/'", "immunization_id"]) }}, 'Immunization', patient_id,
    occurrence_time, 'immunization', encounter_id, codings, code_text,
    null, null, null, null, null
  from {{ ref('stg_fhir__immunizations') }}
  where coalesce(status, '') not in ('entered-in-error', 'not-done')
),

-- A visit's own encounter contributes its type; an encounter folded into another's visit (an
-- ICU or ED stay within a hospital stay) its class (ACTCODE/ACUTE, ACTCODE/EMER), which says
-- more about the stay than its generic type.
encounter_types as (
  select
    {{ dbt.concat(["'Encounter/'", "e.encounter_id"]) }}, 'Encounter', e.patient_id,
    e.start_time, 'encounter_type', e.encounter_id,
    case when coalesce(ev.is_part, false) then e.class_codings else e.type_codings end,
    case when coalesce(ev.is_part, false) then e.class_display else e.type_text end,
    null, null, null, null, null
  from {{ ref('stg_fhir__encounters') }} as e
  left join {{ ref('int_fhir__encounter_visits') }} as ev on ev.encounter_id = e.encounter_id
  where coalesce(e.status, '') not in ('entered-in-error', 'cancelled')
    and (
      case when coalesce(ev.is_part, false) then e.class_codings else e.type_codings end
        is not null
      or case when coalesce(ev.is_part, false) then e.class_display else e.type_text end
        is not null
    )
)

select * from conditions
union all select * from procedures
{%- for model, rtype, id_col, event_type in meds %}
union all select * from {{ event_type }}s
{%- endfor %}
union all select * from observations
union all select * from immunizations
union all select * from encounter_types
