-- The newest extract row of every account.
with ranked as (
    {{ newest_extract(source('silver', 'accounts'), 'account_id') }}
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
