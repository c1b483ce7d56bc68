-- Touchpoints cut into cross-channel sessions per unified customer: a new session starts after
-- var('session_gap_minutes') without any touchpoint, whatever the channel.
--
-- Incremental: only customers with newly arrived touchpoints are re-sessionized, and only from
-- their earliest new touchpoint on. The last already-built row before that point (the anchor)
-- carries its session number and step on, so the result equals a full rebuild: a late event may
-- join two sessions, split nothing already before it, and renumber everything after it.
{{ config(materialized='incremental', incremental_strategy='merge', unique_key='event_id') }}

with events as (
    select * from {{ ref('int_journey_events') }}
),

{% if is_incremental() %}
arrived as (
    select unified_customer_id, min(event_time) as recompute_from
    from events
    where ingested_at > (
        select coalesce(max(ingested_at), timestamp'1900-01-01') - make_interval(0, 0, 0, 0, {{ var('incremental_lookback_hours') }}, 0, 0)
        from {{ this }}
    )
    group by unified_customer_id
),

to_recompute as (
    select events.*, false as is_anchor, cast(null as bigint) as anchor_session, cast(null as int) as anchor_step
    from events
    inner join arrived
        on events.unified_customer_id = arrived.unified_customer_id
        and events.event_time >= arrived.recompute_from
),

anchors as (
    select * except (anchor_rank) from (
        select
            built.unified_customer_id, built.event_id, built.event_time, built.channel, built.step,
            built.product, built.application_id, built.application_step,
            built.application_step_index, built.ingested_at,
            true as is_anchor, built.session_number as anchor_session, built.step_number as anchor_step,
            row_number() over (
                partition by built.unified_customer_id order by built.event_time desc, built.event_id desc
            ) as anchor_rank
        from {{ this }} as built
        inner join arrived
            on built.unified_customer_id = arrived.unified_customer_id
            and built.event_time < arrived.recompute_from
    )
    where anchor_rank = 1
),

timeline as (
    select * from to_recompute
    union all
    select * from anchors
),
{% else %}
timeline as (
    select *, false as is_anchor, cast(null as bigint) as anchor_session, cast(null as int) as anchor_step
    from events
),
{% endif %}

gaps as (
    select
        *,
        case
            when is_anchor then 0
            when lag(event_time) over (partition by unified_customer_id order by event_time, event_id) is null
                or event_time > lag(event_time) over (partition by unified_customer_id order by event_time, event_id)
                    + make_interval(0, 0, 0, 0, 0, {{ var('session_gap_minutes') }}, 0)
            then 1 else 0
        end as starts_session
    from timeline
),

numbered as (
    select
        *,
        -- an anchor comes first in its customer's timeline and carries its session number on
        coalesce(max(anchor_session) over (partition by unified_customer_id), 0)
            + sum(starts_session) over (
                partition by unified_customer_id order by event_time, event_id rows unbounded preceding
            ) as session_number
    from gaps
),

stepped as (
    select
        *,
        row_number() over (partition by unified_customer_id, session_number order by event_time, event_id)
            -- a session continued from the anchor goes on counting from the anchor's step
            + coalesce(max(anchor_step) over (partition by unified_customer_id, session_number), 1) - 1
            as step_number
    from numbered
),

final as (
    select
        concat(unified_customer_id, '-', cast(session_number as string)) as journey_session_id,
        unified_customer_id,
        session_number,
        step_number,
        event_id,
        event_time,
        channel,
        step,
        product,
        application_id,
        application_step,
        application_step_index,
        ingested_at
    from stepped
    where not is_anchor
)

select * from final
