-- Where applications are abandoned: the last step reached by every application that was never
-- submitted, ranked by the customers lost there (all products together, and per product).
with steps as (
    select * from {{ ref('int_journey_events_sessionized') }}
    where application_id is not null and application_step is not null
),

applications as (
    select
        application_id,
        first(product) as product,
        first(unified_customer_id) as unified_customer_id,
        max_by(application_step, application_step_index) as last_step,
        max(application_step_index) as last_step_index,
        max(case when application_step = 'submit' then 1 else 0 end) = 1 as submitted
    from steps
    group by application_id
),

abandoned as (
    select * from applications where not submitted
),

by_step as (
    select
        'all' as product,
        last_step as abandoned_at_step,
        min(last_step_index) as step_index,
        count(*) as applications_lost,
        count(distinct unified_customer_id) as customers_lost
    from abandoned
    group by last_step
    union all
    select
        product,
        last_step,
        min(last_step_index),
        count(*),
        count(distinct unified_customer_id)
    from abandoned
    group by product, last_step
),

final as (
    select
        *,
        rank() over (partition by product order by customers_lost desc, step_index) as friction_rank
    from by_step
)

select * from final
