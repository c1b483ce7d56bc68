with source as (
    select * from {{ source('silver', 'app_chat') }}
),

renamed as (
    select
        event_id as message_id,
        event_time as sent_at,
        login_id,
        device_id,
        chat_session_id,
        direction,
        {{ said_columns() }},
        _ingested_at as ingested_at
    from source
)

select * from renamed
