-- Deterministic identity links: every source id that an exact rule ties to a core-banking
-- customer number, with the rule that tied it. A device or cookie seen under more than one
-- customer's login (a shared family tablet) is left out rather than guessed.
with customers as (
    select * from {{ ref('stg_core__customers') }}
),

digital as (
    select * from {{ ref('stg_digital__events') }}
),

crm as (
    select * from {{ ref('stg_crm__contacts') }}
),

core_numbers as (
    select 'customer_number' as id_type, customer_number as id_value, customer_number,
        'core_banking_number' as link_rule
    from customers
),

logins as (
    select 'login_id' as id_type, login_id as id_value, customer_number, 'login_of_customer' as link_rule
    from customers
    where login_id is not null
),

-- every session in which a login was seen belongs to that login's customer
logged_in_sessions as (
    select digital.session_id, customers.customer_number
    from digital
    inner join customers on digital.login_id = customers.login_id
),

session_owner as (
    select session_id, min(customer_number) as customer_number
    from logged_in_sessions
    group by session_id
    having count(distinct customer_number) = 1
),

seen_ids as (
    select 'device_id' as id_type, digital.device_id as id_value, session_owner.customer_number
    from digital
    inner join session_owner on digital.session_id = session_owner.session_id
    union all
    select 'cookie_id' as id_type, digital.cookie_id as id_value, session_owner.customer_number
    from digital
    inner join session_owner on digital.session_id = session_owner.session_id
    where digital.cookie_id is not null
),

devices_and_cookies as (
    select id_type, id_value, min(customer_number) as customer_number,
        case when id_type = 'device_id' then 'device_seen_in_login_session'
             else 'cookie_seen_in_login_session' end as link_rule
    from seen_ids
    group by id_type, id_value
    having count(distinct customer_number) = 1
),

-- a cookie never seen in a logged-in session, but on a device that is resolved
cookie_on_device as (
    select distinct 'cookie_id' as id_type, digital.cookie_id as id_value,
        devices_and_cookies.customer_number, 'cookie_on_known_device' as link_rule
    from digital
    inner join devices_and_cookies
        on devices_and_cookies.id_type = 'device_id' and digital.device_id = devices_and_cookies.id_value
    left anti join devices_and_cookies as known_cookies
        on known_cookies.id_type = 'cookie_id' and digital.cookie_id = known_cookies.id_value
    where digital.cookie_id is not null
),

crm_with_number as (
    select 'crm_contact_id' as id_type, crm.crm_contact_id as id_value, crm.customer_number,
        'crm_customer_number' as link_rule
    from crm
    inner join customers on crm.customer_number = customers.customer_number
),

final as (
    select * from core_numbers
    union all select * from logins
    union all select * from devices_and_cookies
    union all select * from cookie_on_device
    union all select * from crm_with_number
)

select * from final
