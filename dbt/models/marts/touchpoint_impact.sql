-- Each channel's contribution to conversions by the Markov-chain removal effect. Every
-- cross-channel session is a path: start -> channels in order (repeats collapsed) -> conversion
-- (an application submitted or an offer accepted) or null. From the observed transitions, the
-- probability of reaching conversion from start is computed by iterating the chain
-- (var('markov_iterations') steps); removing a channel (its visits lead nowhere) lowers it by its
-- removal effect. Conversions are shared out in proportion to the removal effects.
with steps as (
    select
        journey_session_id,
        step_number,
        channel,
        lag(channel) over (partition by journey_session_id order by step_number) as previous_channel,
        application_step = 'submit' or step = 'offer:accept' as converts
    from {{ ref('int_journey_events_sessionized') }}
),

paths as (
    select
        journey_session_id,
        transform(
            array_sort(collect_list(case when previous_channel is null or previous_channel != channel
                then struct(step_number, channel) end)),
            s -> s.channel
        ) as channels,
        max(case when converts then 1 else 0 end) = 1 as converted
    from steps
    group by journey_session_id
),

path_states as (
    select
        journey_session_id,
        concat(array('(start)'), channels, array(case when converted then '(conversion)' else '(null)' end)) as states
    from paths
),

transitions as (
    select states[i] as from_state, states[i + 1] as to_state
    from path_states
    lateral view posexplode(slice(states, 1, size(states) - 1)) as i, s
),

probabilities as (
    select
        from_state,
        to_state,
        count(*) / sum(count(*)) over (partition by from_state) as probability
    from transitions
    group by from_state, to_state
),

channels as (
    select distinct from_state as channel from probabilities where from_state != '(start)'
),

-- 'none' is the full chain; every other scenario removes one channel
scenarios as (
    select 'none' as removed
    union all
    select channel from channels
),

states as (
    select distinct from_state as state from probabilities
    union
    select distinct to_state from probabilities
),

value_0 as (
    select scenarios.removed, states.state,
        case when states.state = '(conversion)' then 1.0 else 0.0 end as value
    from scenarios cross join states
),

{% for k in range(var('markov_iterations')) %}
-- one step of the chain; value_{{ k }} is read once, so the plan grows linearly with the steps
value_{{ k + 1 }} as (
    select
        scenarios.removed,
        states.state,
        case
            when states.state = '(conversion)' then 1.0
            when states.state = '(null)' or states.state = scenarios.removed then 0.0
            else coalesce(sum(p.probability * nxt.value), 0.0)
        end as value
    from scenarios
    cross join states
    left join probabilities as p on p.from_state = states.state
    left join value_{{ k }} as nxt on nxt.removed = scenarios.removed and nxt.state = p.to_state
    group by scenarios.removed, states.state
),
{% endfor %}

conversion_probability as (
    select removed, value as probability
    from value_{{ var('markov_iterations') }}
    where state = '(start)'
),

effects as (
    select
        c.channel,
        -- no conversion at all: nothing to attribute, every effect is 0
        coalesce(1 - removed_case.probability / nullif(full_chain.probability, 0), 0.0) as removal_effect
    from channels as c
    inner join conversion_probability as removed_case on removed_case.removed = c.channel
    cross join (select probability from conversion_probability where removed = 'none') as full_chain
),

conversions as (
    select count(*) as total from paths where converted
),

final as (
    select
        effects.channel,
        effects.removal_effect,
        effects.removal_effect / nullif(sum(effects.removal_effect) over (), 0) as attribution_share,
        conversions.total * effects.removal_effect / nullif(sum(effects.removal_effect) over (), 0)
            as attributed_conversions
    from effects
    cross join conversions
)

select * from final
