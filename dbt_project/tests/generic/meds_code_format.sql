{#-
  Every code is PREFIX/code (prefix of capitals, digits and underscores, e.g. SNOMED/38341003,
  LOINC/2160-0, VISIT/inpatient) or one of the MEDS reserved codes MEDS_BIRTH / MEDS_DEATH.
-#}
{% test meds_code_format(model, column_name) %}
select {{ column_name }} as code, count(*) as n_rows
from {{ model }}
where {{ column_name }} is not null
  and {{ column_name }} not in ('MEDS_BIRTH', 'MEDS_DEATH')
  and not {{ regex_full_match(column_name, '^[A-Z0-9_]+/.+$') }}
group by 1
{% endtest %}
