{#-
  The share of rows per split is within `tolerance` of the expected fraction; checked only when
  the model has at least `min_rows` rows (on a handful of subjects proportions mean nothing).
-#}
{% test split_proportions(model, column_name, expected, tolerance=0.05, min_rows=200) %}
with counts as (
  select {{ column_name }} as split, count(*) as n
  from {{ model }}
  group by 1
),

total as (
  select sum(n) as n_total from counts
),

expected as (
  {%- for split, fraction in expected.items() %}
  select '{{ split }}' as split, {{ fraction }} as fraction
  {{ "union all" if not loop.last }}
  {%- endfor %}
)

select
  e.split,
  e.fraction as expected_fraction,
  coalesce(c.n, 0) * 1.0 / t.n_total as actual_fraction
from expected as e
cross join total as t
left join counts as c on c.split = e.split
where t.n_total >= {{ min_rows }}
  and abs(coalesce(c.n, 0) * 1.0 / t.n_total - e.fraction) > {{ tolerance }}
{% endtest %}
