{#- Rows of a snapshot-extract source ranked newest first per entity (`extract_rank` 1 = the
    newest extract), for staging models that keep the current state of each entity. -#}
{% macro newest_extract(relation, key, order_by='snapshot_time desc') -%}
    select
        *,
        row_number() over (partition by {{ key }} order by {{ order_by }}) as extract_rank
    from {{ relation }}
{%- endmacro %}
