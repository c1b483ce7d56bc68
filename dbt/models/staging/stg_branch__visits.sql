with source as (
    select * from {{ source('silver', 'visits') }}
),

renamed as (
    select
        event_id as visit_id,
        event_time as visited_at,
        customer_number,
        channel,
        location_id,
        visit_type,
        amount,
        _ingested_at as ingested_at
    from source
)

select * from renamed
