with source as (
    select * from {{ source('silver', 'digital') }}
),

renamed as (
    select
        event_id,
        event_time,
        channel,
        session_id,
        device_id,
        cookie_id,
        login_id,
        event_type,
        page,
        product,
        application_id,
        step as application_step,
        step_index as application_step_index,
        _ingested_at as ingested_at
    from source
)

select * from renamed
