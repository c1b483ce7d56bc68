-- The newest extract row of every account.
with source as (
    select * from {{ source('silver', 'accounts') }}
),

ranked as (
    select
        *,
        row_number() over (partition by account_id order by snapshot_time desc) as extract_rank
    from source
),

renamed as (
    select
        account_id,
        customer_number,
        product,
        opened_date,
        status as account_status,
        balance,
        credit_limit,
        snapshot_time as extracted_at
    from ranked
    where extract_rank = 1
)

select * from renamed
