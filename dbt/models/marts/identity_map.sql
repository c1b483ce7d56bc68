-- One row per source id with its stable unified customer id and how it was linked.
with resolved as (
    select * from {{ ref('int_identity_resolved') }}
),

final as (
    select
        concat(id_type, ':', id_value) as identity_key,
        id_type,
        id_value,
        unified_customer_id,
        customer_number,
        link_rule,
        match_score,
        agreed_fields
    from resolved
)

select * from final
