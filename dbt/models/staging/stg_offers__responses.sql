with source as (
    select * from {{ source('silver', 'offer_responses') }}
),

renamed as (
    select
        event_id as response_id,
        event_time as responded_at,
        customer_number,
        decision_id,
        action_id,
        channel,
        response,
        _ingested_at as ingested_at
    from source
)

select * from renamed
