with source as (
    select * from {{ source('silver', 'transactions') }}
),

renamed as (
    select
        event_id as transaction_id,
        event_time as transacted_at,
        customer_number,
        account_id,
        txn_type,
        amount,
        currency,
        merchant_category,
        balance_after
    from source
)

select * from renamed
