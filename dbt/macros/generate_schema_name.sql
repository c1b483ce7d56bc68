{#- Models go to the schema their folder names, resolved through vars set from conf/:
    `gold` -> var('gold_schema'), `work` -> var('work_schema'); no target-name prefixes, so an
    analyst finds gold.customer_360 where the pipeline's tables are. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {%- if custom_schema_name is none -%}
    {{ target.schema }}
  {%- elif custom_schema_name == 'gold' -%}
    {{ var('gold_schema') }}
  {%- elif custom_schema_name == 'work' -%}
    {{ var('work_schema') }}
  {%- else -%}
    {{ custom_schema_name | trim }}
  {%- endif -%}
{%- endmacro %}
