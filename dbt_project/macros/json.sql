{#-
  JSON access, the only place that knows how the warehouse reads JSON. Paths are JSONPath
  strings ('$.code.coding', '$.period.start'); another adapter overrides the `default__` versions
  (or adds `<adapter>__` ones) and translates the path. DuckDB implementations below.
-#}

{#- A JSON value at `path` as text (strings unquoted), NULL when absent. -#}
{% macro json_str(json_expr, path) -%}
  {{ return(adapter.dispatch('json_str', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_str(json_expr, path) -%}
  json_extract_string({{ json_expr }}, '{{ path }}')
{%- endmacro %}

{#- The JSON value (object, array or scalar) at `path`, still JSON, NULL when absent. -#}
{% macro json_get(json_expr, path) -%}
  {{ return(adapter.dispatch('json_get', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_get(json_expr, path) -%}
  json_extract({{ json_expr }}, '{{ path }}')
{%- endmacro %}

{#- A JSON number at `path` as double; NULL when absent or not a number. -#}
{% macro json_num(json_expr, path) -%}
  {{ return(adapter.dispatch('json_num', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_num(json_expr, path) -%}
  try_cast(json_extract({{ json_expr }}, '{{ path }}') as double)
{%- endmacro %}

{#- Number of elements of the array at `path`; 0 when absent. -#}
{% macro json_array_len(json_expr, path) -%}
  {{ return(adapter.dispatch('json_array_len', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_array_len(json_expr, path) -%}
  coalesce(json_array_length({{ json_expr }}, '{{ path }}'), 0)
{%- endmacro %}

{#- True when any string at `path` (which may contain [*] wildcards) equals `value`. -#}
{% macro json_any_equals(json_expr, path, value) -%}
  {{ return(adapter.dispatch('json_any_equals', 'ehrmamba')(json_expr, path, value)) }}
{%- endmacro %}
{% macro default__json_any_equals(json_expr, path, value) -%}
  coalesce(list_contains(json_extract_string({{ json_expr }}, '{{ path }}'), {{ value }}), false)
{%- endmacro %}

{#-
  Set-returning pair for the SELECT list: one output row per element of the array at `path`.
  Use both in the same SELECT so they are zipped: the element (JSON) and its 1-based position.
  A row whose array is absent or empty yields no output row.
-#}
{% macro json_array_elements(json_expr, path) -%}
  {{ return(adapter.dispatch('json_array_elements', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_array_elements(json_expr, path) -%}
  unnest(json_extract({{ json_expr }}, '{{ path }}[*]'))
{%- endmacro %}

{% macro json_array_ordinals(json_expr, path) -%}
  {{ return(adapter.dispatch('json_array_ordinals', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_array_ordinals(json_expr, path) -%}
  generate_subscripts(json_extract({{ json_expr }}, '{{ path }}[*]'), 1)
{%- endmacro %}

{#-
  The JSON at `path` as an array: an object is wrapped in a one-element array, an array is
  returned as is, anything else (absent, scalar) gives NULL. Lets a single Coding (an R4
  Encounter.class) be read like the codings list of a CodeableConcept.
-#}
{% macro json_as_array(json_expr, path) -%}
  {{ return(adapter.dispatch('json_as_array', 'ehrmamba')(json_expr, path)) }}
{%- endmacro %}
{% macro default__json_as_array(json_expr, path) -%}
  case json_type(json_extract({{ json_expr }}, '{{ path }}'))
    when 'OBJECT' then json_array(json_extract({{ json_expr }}, '{{ path }}'))
    when 'ARRAY' then json_extract({{ json_expr }}, '{{ path }}')
  end
{%- endmacro %}
