-- Probabilistic matching of CRM contacts that carry no valid customer number to core-banking
-- customers, Fellegi-Sunter style: candidate pairs come from blocking on single fields; each
-- field that agrees (or, where it is telling, disagrees) adds its weight; the weights are
-- log2 likelihood ratios rounded to integers. Every pair keeps which fields agreed, so a match
-- can be explained. All comparisons are on keyed-hash tokens: no raw PII is read.
with customers as (
    select * from {{ ref('stg_core__customers') }}
),

crm as (
    select crm.*
    from {{ ref('stg_crm__contacts') }} as crm
    left anti join customers on crm.customer_number = customers.customer_number
),

{% set blocking_keys = ['last_name_soundex_token', 'date_of_birth_token', 'email_token', 'phone_token', 'postcode_token'] %}
candidate_pairs as (
    {% for key in blocking_keys %}
    select crm.crm_contact_id, customers.customer_number
    from crm
    inner join customers on crm.{{ key }} = customers.{{ key }}
    {% if not loop.last %}union{% endif %}
    {% endfor %}
),

compared as (
    select
        pairs.crm_contact_id,
        pairs.customer_number,
        case when crm.last_name_token = c.last_name_token then 'exact'
             when crm.last_name_soundex_token = c.last_name_soundex_token then 'sounds_alike'
             when crm.last_name_token is null then 'missing' else 'differs' end as last_name,
        case when crm.first_name_token = c.first_name_token then 'exact'
             when crm.first_name_soundex_token = c.first_name_soundex_token then 'sounds_alike'
             when crm.first_name_token is null then 'missing' else 'differs' end as first_name,
        case when crm.date_of_birth_token = c.date_of_birth_token then 'exact'
             when crm.date_of_birth_token is null then 'missing' else 'differs' end as date_of_birth,
        case when crm.email_token = c.email_token then 'exact'
             when crm.email_token is null then 'missing' else 'differs' end as email,
        case when crm.phone_token = c.phone_token then 'exact'
             when crm.phone_token is null then 'missing' else 'differs' end as phone,
        case when crm.postcode_token = c.postcode_token then 'exact'
             when crm.postcode_token is null then 'missing' else 'differs' end as postcode,
        case when crm.address_line_token = c.address_line_token then 'exact'
             when crm.address_line_token is null then 'missing' else 'differs' end as address_line
    from candidate_pairs as pairs
    inner join crm on pairs.crm_contact_id = crm.crm_contact_id
    inner join customers as c on pairs.customer_number = c.customer_number
),

scored as (
    select
        *,
        -- a nickname, a household email or an old address are common, so only the fields
        -- that rarely differ for the same person (last name, date of birth) score negatively
        (case last_name when 'exact' then 5 when 'sounds_alike' then 3 when 'differs' then -5 else 0 end)
        + (case first_name when 'exact' then 4 when 'sounds_alike' then 2 else 0 end)
        + (case date_of_birth when 'exact' then 7 when 'differs' then -4 else 0 end)
        + (case email when 'exact' then 6 else 0 end)
        + (case phone when 'exact' then 5 else 0 end)
        + (case postcode when 'exact' then 3 else 0 end)
        + (case address_line when 'exact' then 2 else 0 end) as match_score
    from compared
),

ranked as (
    select
        *,
        row_number() over (partition by crm_contact_id order by match_score desc, customer_number) as candidate_rank,
        max(match_score) over (partition by crm_contact_id) as best_score,
        nth_value(match_score, 2) over (
            partition by crm_contact_id order by match_score desc, customer_number
            rows between unbounded preceding and unbounded following
        ) as runner_up_score
    from scored
),

final as (
    select
        crm_contact_id,
        customer_number,
        match_score,
        candidate_rank,
        coalesce(runner_up_score, 0) as runner_up_score,
        candidate_rank = 1
            and match_score >= {{ var('identity_match_threshold') }}
            and match_score - coalesce(runner_up_score, 0) >= {{ var('identity_match_margin') }} as is_match,
        concat_ws(',',
            case when last_name in ('exact', 'sounds_alike') then concat('last_name:', last_name) end,
            case when first_name in ('exact', 'sounds_alike') then concat('first_name:', first_name) end,
            case when date_of_birth = 'exact' then 'date_of_birth' end,
            case when email = 'exact' then 'email' end,
            case when phone = 'exact' then 'phone' end,
            case when postcode = 'exact' then 'postcode' end,
            case when address_line = 'exact' then 'address_line' end
        ) as agreed_fields,
        last_name, first_name, date_of_birth, email, phone, postcode, address_line
    from ranked
)

select * from final
