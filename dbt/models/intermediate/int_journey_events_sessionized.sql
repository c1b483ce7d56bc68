-- Touchpoints cut into cross-channel sessions per unified customer: a new session starts after
-- var('session_gap_minutes') without any touchpoint, whatever the channel.
with events as (
    select * from {{ ref('int_journey_events') }}
),

gaps as (
    select
        *,
        case
            when lag(event_time) over (partition by unified_customer_id order by event_time, event_id) is null
                or event_time > lag(event_time) over (partition by unified_customer_id order by event_time, event_id)
                    + make_interval(0, 0, 0, 0, 0, {{ var('session_gap_minutes') }}, 0)
            then 1 else 0
        end as starts_session
    from events
),

numbered as (
    select
        *,
        sum(starts_session) over (
            partition by unified_customer_id order by event_time, event_id rows unbounded preceding
        ) as session_number
    from gaps
),

final as (
    select
        concat(unified_customer_id, '-', cast(session_number as string)) as journey_session_id,
        unified_customer_id,
        session_number,
        row_number() over (
            partition by unified_customer_id, session_number order by event_time, event_id
        ) as step_number,
        event_id,
        event_time,
        channel,
        step,
        product,
        application_id,
        application_step,
        application_step_index
    from numbered
)

select * from final
