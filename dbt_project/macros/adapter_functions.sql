{#-
  The few non-JSON functions dbt has no cross-database macro for: FHIR time parsing, regular
  expressions and stable hashing. DuckDB implementations; another adapter overrides these.
-#}

{#-
  A FHIR date / dateTime / instant string -> UTC TIMESTAMP (without time zone).
  'YYYY', 'YYYY-MM' and 'YYYY-MM-DD' mean midnight UTC of the first day they cover; a dateTime
  with an offset is converted to UTC; a dateTime without offset (not valid FHIR) is read as UTC.
  Unparseable values give NULL. Pass a column (it is referenced several times), not a JSON call.
-#}
{% macro fhir_timestamp(text_expr) -%}
  {{ return(adapter.dispatch('fhir_timestamp', 'ehrmamba')(text_expr)) }}
{%- endmacro %}
{% macro default__fhir_timestamp(text_expr) -%}
  case
    when {{ text_expr }} is null then null
    when length({{ text_expr }}) = 4
      then cast(try_cast({{ text_expr }} || '-01-01' as date) as timestamp)
    when length({{ text_expr }}) = 7
      then cast(try_cast({{ text_expr }} || '-01' as date) as timestamp)
    when length({{ text_expr }}) = 10
      then cast(try_cast({{ text_expr }} as date) as timestamp)
    when regexp_matches({{ text_expr }}, '(Z|[+-][0-9]{2}:[0-9]{2})$')
      then timezone('UTC', try_cast({{ text_expr }} as timestamptz))
    else try_cast({{ text_expr }} as timestamp)
  end
{%- endmacro %}

{#- The id in a FHIR reference to `resource_type`: 'Encounter/123' or 'http://x/fhir/Encounter/123' -> '123'. -#}
{% macro fhir_reference_id(ref_expr, resource_type) -%}
  {{ return(adapter.dispatch('fhir_reference_id', 'ehrmamba')(ref_expr, resource_type)) }}
{%- endmacro %}
{% macro default__fhir_reference_id(ref_expr, resource_type) -%}
  nullif(regexp_extract({{ ref_expr }}, '(^|/){{ resource_type }}/([^/]+)(/_history/[^/]+)?$', 2), '')
{%- endmacro %}

{#- True when the whole string matches the regular expression. -#}
{% macro regex_full_match(text_expr, pattern) -%}
  {{ return(adapter.dispatch('regex_full_match', 'ehrmamba')(text_expr, pattern)) }}
{%- endmacro %}
{% macro default__regex_full_match(text_expr, pattern) -%}
  regexp_full_match({{ text_expr }}, '{{ pattern }}')
{%- endmacro %}

{#- Replace every match of a regular expression. -#}
{% macro regex_replace_all(text_expr, pattern, replacement) -%}
  {{ return(adapter.dispatch('regex_replace_all', 'ehrmamba')(text_expr, pattern, replacement)) }}
{%- endmacro %}
{% macro default__regex_replace_all(text_expr, pattern, replacement) -%}
  regexp_replace({{ text_expr }}, '{{ pattern }}', '{{ replacement }}', 'g')
{%- endmacro %}

{#-
  A stable non-negative BIGINT from text: the first `hex_digits` (<= 15) hex digits of its MD5.
  Python: int(hashlib.md5(s.encode()).hexdigest()[:15], 16).
-#}
{% macro stable_hash_bigint(text_expr, hex_digits=15) -%}
  {{ return(adapter.dispatch('stable_hash_bigint', 'ehrmamba')(text_expr, hex_digits)) }}
{%- endmacro %}
{% macro default__stable_hash_bigint(text_expr, hex_digits) -%}
  cast(('0x' || substr(md5({{ text_expr }}), 1, {{ hex_digits }})) as {{ dbt.type_bigint() }})
{%- endmacro %}

{#- A bucket 0..n-1 from the MD5 of text (first 8 hex digits), stable across runs and engines. -#}
{% macro stable_hash_bucket(text_expr, n) -%}
  {{ return(adapter.dispatch('stable_hash_bucket', 'ehrmamba')(text_expr, n)) }}
{%- endmacro %}
{% macro default__stable_hash_bucket(text_expr, n) -%}
  ({{ stable_hash_bigint(text_expr, 8) }} % {{ n }})
{%- endmacro %}

{#-
  The fallback code prefix of a coding whose system is not in the code_systems seed:
  'UNMAPPED' without a system, else 'UNMAPPED_' + the system URL's last segment, upper-cased
  (http://example.org/local-codes -> UNMAPPED_LOCAL_CODES). Never dropped; a dbt test warns.
-#}
{% macro unmapped_code_prefix(system_expr) -%}
  {{ return(adapter.dispatch('unmapped_code_prefix', 'ehrmamba')(system_expr)) }}
{%- endmacro %}
{% macro default__unmapped_code_prefix(system_expr) -%}
  case
    when {{ system_expr }} is null or trim({{ system_expr }}) = '' then 'UNMAPPED'
    else 'UNMAPPED_' || upper(regexp_replace(
      regexp_extract({{ system_expr }}, '([^/:#|]+)[/#|]*$', 1), '[^A-Za-z0-9]+', '_', 'g'
    ))
  end
{%- endmacro %}
