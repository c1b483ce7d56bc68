with source as (
    select * from {{ source('silver', 'consent_current') }}
),

renamed as (
    select
        customer_number,
        purpose,
        channel,
        granted,
        event_time as changed_at
    from source
)

select * from renamed
