-- One row per core-banking customer (unified): profile, products and balances, activity, digital
-- engagement, service history, risk signals, consent and identity footprint. Every join is a
-- left join: a customer with no events, accounts or bureau report is still here.
-- Windows ("last 30 days") are relative to var('as_of'), by default the newest transaction.
with customers as (
    select * from {{ ref('stg_core__customers') }}
),

identity as (
    select * from {{ ref('int_identity_resolved') }}
),

as_of as (
    select coalesce(
        {% if var('as_of', none) %}timestamp('{{ var("as_of") }}'){% else %}null{% endif %},
        (select max(transacted_at) from {{ ref('stg_core__transactions') }}),
        current_timestamp()
    ) as as_of
),

unified as (
    select customer_number, min(unified_customer_id) as unified_customer_id
    from identity
    where id_type = 'customer_number'
    group by customer_number
),

footprint as (
    select
        customer_number,
        count(case when id_type = 'device_id' then 1 end) as linked_devices,
        count(case when id_type = 'cookie_id' then 1 end) as linked_cookies,
        count(case when id_type = 'crm_contact_id' then 1 end) as crm_records
    from identity
    where customer_number is not null
    group by customer_number
),

products as (
    select
        customer_number,
        count(*) as open_accounts,
        {% for product in ['current_account', 'savings', 'credit_card', 'mortgage', 'personal_loan', 'investments'] %}
        max(case when product = '{{ product }}' then 1 else 0 end) = 1 as holds_{{ product }},
        {% endfor %}
        sum(case when product in ('current_account', 'savings', 'investments') then balance else 0 end) as deposit_balance,
        sum(case when product in ('credit_card', 'mortgage', 'personal_loan') then abs(balance) else 0 end) as lending_balance,
        sum(case when product = 'credit_card' then abs(balance) end)
            / nullif(sum(case when product = 'credit_card' then credit_limit end), 0) as card_utilisation
    from {{ ref('stg_core__accounts') }}
    where account_status = 'open'
    group by customer_number
),

activity as (
    select
        t.customer_number,
        count(case when t.transacted_at > a.as_of - interval 30 days then 1 end) as transactions_30d,
        sum(case when t.transacted_at > a.as_of - interval 30 days and t.amount < 0 then -t.amount else 0 end) as spend_30d,
        max(case when t.txn_type = 'salary' and t.transacted_at > a.as_of - interval 35 days then 1 else 0 end) = 1
            as salary_received_35d,
        count(case when t.txn_type = 'failed_payment' and t.transacted_at > a.as_of - interval 90 days then 1 end)
            as failed_payments_90d,
        max(t.transacted_at) as last_transaction_at
    from {{ ref('stg_core__transactions') }} as t
    cross join as_of as a
    group by t.customer_number
),

digital as (
    select
        u.customer_number,
        count(distinct case when s.started_at > a.as_of - interval 30 days then s.journey_session_id end) as sessions_30d,
        count(distinct case when s.started_at > a.as_of - interval 30 days and s.channels rlike 'web|app'
            then s.journey_session_id end) as digital_sessions_30d,
        max(s.ended_at) as last_touchpoint_at
    from {{ ref('sessions') }} as s
    inner join unified as u on s.unified_customer_id = u.unified_customer_id
    cross join as_of as a
    group by u.customer_number
),

service as (
    select
        c.customer_number,
        count(case when c.interacted_at > a.as_of - interval 90 days then 1 end) as contacts_90d,
        count(case when c.interaction_type = 'complaint' and c.interacted_at > a.as_of - interval 90 days then 1 end)
            as complaints_90d,
        avg(c.sentiment) as average_sentiment
    from {{ ref('stg_contact_centre__interactions') }} as c
    cross join as_of as a
    group by c.customer_number
),

-- what the customer said, in the contact centre and the app chat: the intents the text model read
said as (
    select c.customer_number, c.interacted_at as said_at, c.intent, c.sentiment
    from {{ ref('stg_contact_centre__interactions') }} as c
    union all
    select l.customer_number, m.sent_at, m.intent, m.sentiment
    from {{ ref('stg_app_chat__messages') }} as m
    inner join (
        select id_value as login_id, min(customer_number) as customer_number
        from identity
        where id_type = 'login_id' and customer_number is not null
        group by id_value
    ) as l on m.login_id = l.login_id
    where m.direction = 'customer'
),

voice as (
    select
        s.customer_number,
        -- the five most recent distinct recognised intents of the last 30 days, newest first
        slice(
            array_distinct(transform(
                sort_array(collect_list(case
                    when s.said_at > a.as_of - interval 30 days
                        and s.intent is not null and s.intent != '{{ var("unrecognised_intent") }}'
                    then struct(s.said_at, s.intent) end), false),
                x -> x.intent
            )),
            1, 5
        ) as recent_intents,
        avg(case when s.said_at > a.as_of - interval 30 days then s.sentiment end) as sentiment_30d,
        avg(case when s.said_at <= a.as_of - interval 30 days and s.said_at > a.as_of - interval 90 days
            then s.sentiment end) as sentiment_prior_60d
    from said as s
    cross join as_of as a
    group by s.customer_number
),

consent as (
    select
        customer_number,
        -- marketing on a channel needs both the channel's own consent and the general ("any") one
        {% for channel in ['email', 'sms', 'push', 'phone'] %}
        coalesce(max(case when purpose = 'marketing' and channel = '{{ channel }}' then granted end), false)
            and coalesce(max(case when purpose = 'marketing' and channel = 'any' then granted end), false)
            as marketing_consent_{{ channel }},
        {% endfor %}
        coalesce(max(case when purpose = 'profiling' and channel = 'any' then granted end), false) as profiling_consent
    from {{ ref('stg_consent__current') }}
    group by customer_number
),

{#- Model scores flow in once `journeylake score` has written gold.customer_scores; before that the
    columns exist and are null, so the mart's shape never depends on whether models were trained. -#}
{%- set scores_relation = adapter.get_relation(database=none, schema=var('gold_schema'), identifier='customer_scores') if execute else none %}
{%- set score_columns = ['propensity_credit_card', 'propensity_mortgage', 'propensity_personal_loan',
                         'propensity_savings', 'propensity_investments', 'churn_risk'] %}
scores as (
    {% if scores_relation %}
    select customer_number, segment_id as model_segment_id, segment_name as model_segment_name,
        {% for column in score_columns %}{{ column }}, {% endfor %}
        scored_at
    from {{ scores_relation }}
    {% else %}
    select cast(null as string) as customer_number, cast(null as int) as model_segment_id,
        cast(null as string) as model_segment_name,
        {% for column in score_columns %}cast(null as double) as {{ column }}, {% endfor %}
        cast(null as timestamp) as scored_at
    where false
    {% endif %}
),

final as (
    select
        u.unified_customer_id,
        c.customer_number,
        c.region,
        c.income_band,
        c.birth_year,
        c.customer_since,
        c.customer_status,
        c.login_id is not null as registered_online,
        coalesce(p.open_accounts, 0) as open_accounts,
        {% for product in ['current_account', 'savings', 'credit_card', 'mortgage', 'personal_loan', 'investments'] %}
        coalesce(p.holds_{{ product }}, false) as holds_{{ product }},
        {% endfor %}
        coalesce(p.deposit_balance, 0) as deposit_balance,
        coalesce(p.lending_balance, 0) as lending_balance,
        p.card_utilisation,
        coalesce(act.transactions_30d, 0) as transactions_30d,
        coalesce(act.spend_30d, 0) as spend_30d,
        coalesce(act.salary_received_35d, false) as salary_received_35d,
        coalesce(act.failed_payments_90d, 0) as failed_payments_90d,
        act.last_transaction_at,
        coalesce(d.sessions_30d, 0) as sessions_30d,
        coalesce(d.digital_sessions_30d, 0) as digital_sessions_30d,
        d.last_touchpoint_at,
        coalesce(s.contacts_90d, 0) as contacts_90d,
        coalesce(s.complaints_90d, 0) as complaints_90d,
        s.average_sentiment,
        coalesce(v.recent_intents, array()) as recent_intents,
        v.sentiment_30d,
        v.sentiment_30d - v.sentiment_prior_60d as sentiment_trend,
        b.bureau_score,
        b.credit_utilisation as bureau_credit_utilisation,
        b.delinquencies_12m,
        {% for channel in ['email', 'sms', 'push', 'phone'] %}
        coalesce(cs.marketing_consent_{{ channel }}, false) as marketing_consent_{{ channel }},
        {% endfor %}
        coalesce(cs.profiling_consent, false) as profiling_consent,
        coalesce(f.linked_devices, 0) as linked_devices,
        coalesce(f.linked_cookies, 0) as linked_cookies,
        coalesce(f.crm_records, 0) as crm_records,
        sc.model_segment_id,
        sc.model_segment_name,
        {% for column in score_columns %}
        sc.{{ column }},
        {% endfor %}
        sc.scored_at,
        (select as_of from as_of) as as_of
    from customers as c
    left join unified as u on c.customer_number = u.customer_number
    left join products as p on c.customer_number = p.customer_number
    left join activity as act on c.customer_number = act.customer_number
    left join digital as d on c.customer_number = d.customer_number
    left join service as s on c.customer_number = s.customer_number
    left join voice as v on c.customer_number = v.customer_number
    left join {{ ref('stg_bureau__reports') }} as b on c.customer_number = b.customer_number
    left join consent as cs on c.customer_number = cs.customer_number
    left join footprint as f on c.customer_number = f.customer_number
    left join scores as sc on c.customer_number = sc.customer_number
)

select * from final
