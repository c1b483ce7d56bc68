-- Marketing's audiences (conf/ `segments`, passed in as var('segments')): one row per segment and
-- matching customer, with whether the customer may be contacted on the segment's channel and, if
-- not, why. `journeylake export-segments` exports the contactable rows after re-checking consent
-- at export time; the excluded rows stay here so suppression can be counted and audited.
{% set segments = var('segments', []) %}

with customers as (
    select * from {{ ref('customer_360') }}
),

{% if segments | length == 0 %}
matched as (
    select
        cast(null as string) as segment_name,
        cast(null as string) as channel,
        customers.*,
        false as channel_consent
    from customers
    where false
),
{% else %}
matched as (
    {% for segment in segments %}
    select
        '{{ segment.name }}' as segment_name,
        '{{ segment.channel }}' as channel,
        customers.*,
        customers.marketing_consent_{{ segment.channel }} as channel_consent
    from customers
    where ({{ segment.where }})
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),
{% endif %}

final as (
    select
        segment_name,
        channel,
        unified_customer_id,
        customer_number,
        region,
        income_band,
        customer_since,
        customer_status,
        channel_consent as marketing_consent,
        customer_status = 'active' and channel_consent as contactable,
        case
            when customer_status != 'active' then 'customer_not_active'
            when not channel_consent then concat('no_marketing_consent_', channel)
        end as excluded_reason,
        as_of
    from matched
)

select * from final
