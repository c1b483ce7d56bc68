-- Every source id with the customer number it resolves to (if any) and how it was resolved.
-- Ids no rule or match ties to a customer (anonymous devices, unmatched CRM records) keep
-- themselves as their anchor, so they still get a stable unified id of their own. The unified id
-- derives from the anchor (the core-banking number, or the id itself when unresolved), so it
-- does not change between builds.
with links as (
    select * from {{ ref('int_identity_links') }}
),

crm_matches as (
    select
        'crm_contact_id' as id_type,
        crm_contact_id as id_value,
        customer_number,
        'crm_probabilistic_match' as link_rule,
        match_score,
        agreed_fields
    from {{ ref('int_crm_matches_scored') }}
    where is_match
),

resolved as (
    select id_type, id_value, customer_number, link_rule,
        cast(null as int) as match_score, cast(null as string) as agreed_fields
    from links
    union all
    select * from crm_matches
),

digital as (
    select * from {{ ref('stg_digital__events') }}
),

all_ids as (
    select distinct 'device_id' as id_type, device_id as id_value from digital
    union
    select distinct 'cookie_id', cookie_id from digital where cookie_id is not null
    union
    select distinct 'crm_contact_id', crm_contact_id from {{ ref('stg_crm__contacts') }}
),

unresolved as (
    select all_ids.id_type, all_ids.id_value, cast(null as string) as customer_number,
        'unresolved' as link_rule, cast(null as int) as match_score, cast(null as string) as agreed_fields
    from all_ids
    left anti join resolved on all_ids.id_type = resolved.id_type and all_ids.id_value = resolved.id_value
),

all_resolved as (
    select * from resolved
    union all
    select * from unresolved
),

final as (
    select
        *,
        concat('UC-', substr(sha2(
            case when customer_number is not null then concat('customer_number:', customer_number)
                 else concat(id_type, ':', id_value) end, 256), 1, 16)) as unified_customer_id
    from all_resolved
)

select * from final
