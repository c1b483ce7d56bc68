-- Every customer touchpoint across channels, attributed to a unified customer: digital events
-- through their device's identity, branch / ATM visits, contact-centre interactions and offer
-- responses through the customer number.
-- Incremental: each run merges the touchpoints that reached the lakehouse since the newest one
-- already here, less var('incremental_lookback_hours') for micro-batches that committed late, so
-- late events (old event time, new arrival) are picked up whatever their event time. Identity
-- changes (a device linked after its events were built) reach old rows on a --full-refresh.
{{ config(materialized='incremental', incremental_strategy='merge', unique_key='event_id') }}

with identity as (
    select * from {{ ref('int_identity_resolved') }}
),

digital as (
    select
        identity.unified_customer_id,
        events.event_id,
        events.event_time,
        events.channel,
        case when events.event_type = 'application_step'
             then concat('application:', events.application_step)
             else events.event_type end as step,
        events.product,
        events.application_id,
        events.application_step,
        events.application_step_index,
        events.ingested_at
    from {{ ref('stg_digital__events') }} as events
    inner join identity on identity.id_type = 'device_id' and identity.id_value = events.device_id
),

customer_ids as (
    select id_value as customer_number, unified_customer_id
    from identity
    where id_type = 'customer_number'
),

visits as (
    select customer_ids.unified_customer_id, visit_id, visited_at, channel, concat('visit:', visit_type),
        cast(null as string), cast(null as string), cast(null as string), cast(null as int),
        ingested_at
    from {{ ref('stg_branch__visits') }} as visits
    inner join customer_ids on visits.customer_number = customer_ids.customer_number
),

contacts as (
    select customer_ids.unified_customer_id, interaction_id, interacted_at, 'contact_centre',
        concat('contact:', interaction_type), cast(null as string), cast(null as string),
        cast(null as string), cast(null as int),
        ingested_at
    from {{ ref('stg_contact_centre__interactions') }} as contacts
    inner join customer_ids on contacts.customer_number = customer_ids.customer_number
),

responses as (
    select customer_ids.unified_customer_id, response_id, responded_at, channel, concat('offer:', response),
        cast(null as string), cast(null as string), cast(null as string), cast(null as int),
        ingested_at
    from {{ ref('stg_offers__responses') }} as responses
    inner join customer_ids on responses.customer_number = customer_ids.customer_number
),

final as (
    select * from digital
    union all select * from visits
    union all select * from contacts
    union all select * from responses
)

select * from final
{% if is_incremental() %}
where ingested_at > (
    select coalesce(max(ingested_at), timestamp'1900-01-01') - make_interval(0, 0, 0, 0, {{ var('incremental_lookback_hours') }}, 0, 0)
    from {{ this }}
)
{% endif %}
