-- The most frequent step sequences leading to conversion and to abandonment. Each session's
-- outcome: 'converted' (an application submitted or an offer accepted), 'abandoned' (an
-- application started but not submitted) or 'browsed'. Its path is the last five distinct
-- consecutive steps up to the outcome (repeats of the same step collapse into one).
with steps as (
    select
        *,
        lag(step) over (partition by journey_session_id order by step_number) as previous_step
    from {{ ref('int_journey_events_sessionized') }}
),

sessions as (
    select
        journey_session_id,
        case
            when max(case when application_step = 'submit' or step = 'offer:accept' then 1 else 0 end) = 1
                then 'converted'
            when max(case when application_step is not null then 1 else 0 end) = 1 then 'abandoned'
            else 'browsed'
        end as outcome,
        transform(
            array_sort(collect_list(case when previous_step is null or previous_step != step
                then struct(step_number, step) end)),
            s -> s.step
        ) as all_steps
    from steps
    group by journey_session_id
),

paths as (
    select
        outcome,
        concat_ws(' > ', slice(all_steps, greatest(size(all_steps) - 4, 1), 5)) as path
    from sessions
),

final as (
    select
        outcome,
        path,
        count(*) as sessions,
        count(*) / sum(count(*)) over (partition by outcome) as share_of_outcome,
        row_number() over (partition by outcome order by count(*) desc, path) as path_rank
    from paths
    group by outcome, path
)

select * from final
