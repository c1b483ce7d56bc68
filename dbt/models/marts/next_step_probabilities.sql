-- For each journey state (a touchpoint step), the observed probability of each next step in the
-- same cross-channel session; 'session_end' when the session ended there.
with steps as (
    select
        step,
        coalesce(
            lead(step) over (partition by journey_session_id order by step_number), 'session_end'
        ) as next_step
    from {{ ref('int_journey_events_sessionized') }}
),

counted as (
    select step, next_step, count(*) as transitions
    from steps
    group by step, next_step
),

final as (
    select
        step,
        next_step,
        transitions,
        transitions / sum(transitions) over (partition by step) as probability,
        row_number() over (partition by step order by transitions desc, next_step) as likelihood_rank
    from counted
)

select * from final
