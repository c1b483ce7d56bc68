-- One row per cross-channel session.
with steps as (
    select * from {{ ref('int_journey_events_sessionized') }}
),

final as (
    select
        journey_session_id,
        unified_customer_id,
        session_number,
        min(event_time) as started_at,
        max(event_time) as ended_at,
        (unix_timestamp(max(event_time)) - unix_timestamp(min(event_time))) / 60.0 as duration_minutes,
        count(*) as steps,
        concat_ws(',', sort_array(collect_set(channel))) as channels,
        concat_ws(',', sort_array(collect_set(product))) as products_seen,
        max(case when application_step = 'submit' then 1 else 0 end) = 1 as submitted_application,
        max(case when step = 'offer:accept' then 1 else 0 end) = 1 as accepted_offer
    from steps
    group by journey_session_id, unified_customer_id, session_number
)

select * from final
