{#- What the text model read in what a customer said (silver computes them in the stream; see
    pipelines/lakehouse/intents.py): the same four columns in every source of customers' words. -#}
{% macro said_columns() %}
        intent,
        intent_confidence,
        sentiment,
        intent_model_version
{%- endmacro %}
