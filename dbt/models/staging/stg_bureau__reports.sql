-- The newest bureau report of every customer.
with source as (
    select * from {{ source('silver', 'bureau') }}
),

ranked as (
    select
        *,
        row_number() over (partition by customer_number order by snapshot_time desc, bureau_record_id desc) as report_rank
    from source
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
    where report_rank = 1
)

select * from renamed
