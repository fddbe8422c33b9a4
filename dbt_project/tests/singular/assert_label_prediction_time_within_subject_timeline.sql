{{ config(meta={'dagster': {'ref': {'name': 'subjects'}}}) }}
{#-
  No label's prediction_time is before the subject's first event, and none is at or after the
  subject's death (the model would predict for a dead patient, or from an empty history).
-#}
{%- for model in label_models() %}
select
  '{{ model }}' as label_model,
  l.subject_id,
  l.prediction_time,
  s.first_event_time,
  s.death_time
from {{ ref(model) }} as l
inner join {{ ref('subjects') }} as s on s.subject_id = l.subject_id
where l.prediction_time < s.first_event_time
  or (s.death_time is not null and l.prediction_time >= s.death_time)
{{ "union all" if not loop.last }}
{%- endfor %}
