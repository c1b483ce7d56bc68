-- Ordered steps of every customer's journey, per cross-channel session.
select
    journey_session_id,
    unified_customer_id,
    step_number,
    event_id,
    event_time,
    channel,
    step,
    product,
    application_id,
    application_step
from {{ ref('int_journey_events_sessionized') }}
