-- The newest bureau report of every customer.
with ranked as (
    {{ newest_extract(source('silver', 'bureau'), 'customer_number', 'snapshot_time desc, bureau_record_id desc') }}
),

renamed as (
    select
        customer_number,
        bureau_record_id,
        bureau_score,
        total_debt,
        credit_utilisation,
        delinquencies_12m,
        inquiries_6m,
        snapshot_time as reported_at
    from ranked
    where extract_rank = 1
)

select * from renamed
