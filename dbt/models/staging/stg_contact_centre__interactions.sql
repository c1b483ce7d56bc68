with source as (
    select * from {{ source('silver', 'contact_centre') }}
),

renamed as (
    select
        event_id as interaction_id,
        event_time as interacted_at,
        customer_number,
        interaction_type,
        topic,
        {{ said_columns() }},
        _ingested_at as ingested_at
    from source
)

select * from renamed
