-- Product application funnels: per product and step, the applications that reached the step,
-- conversion from the step before, drop-off, and the median time taken from the step before.
with steps as (
    select
        product,
        application_id,
        application_step,
        application_step_index,
        min(event_time) as reached_at
    from {{ ref('int_journey_events_sessionized') }}
    where application_id is not null and application_step is not null
    group by product, application_id, application_step, application_step_index
),

with_previous as (
    select
        *,
        lag(reached_at) over (partition by application_id order by application_step_index) as previous_reached_at
    from steps
),

per_step as (
    select
        product,
        application_step,
        application_step_index,
        count(distinct application_id) as applications,
        percentile_approx(
            (unix_timestamp(reached_at) - unix_timestamp(previous_reached_at)) / 60.0, 0.5
        ) as median_minutes_from_previous_step
    from with_previous
    group by product, application_step, application_step_index
),

final as (
    select
        product,
        application_step,
        application_step_index,
        applications,
        lag(applications) over (partition by product order by application_step_index) as applications_at_previous_step,
        applications / first_value(applications) over (
            partition by product order by application_step_index
        ) as share_of_starts,
        applications / lag(applications) over (
            partition by product order by application_step_index
        ) as conversion_from_previous_step,
        lag(applications) over (partition by product order by application_step_index)
            - applications as dropped_before_step,
        median_minutes_from_previous_step
    from per_step
)

select * from final
