-- The newest extract row of every customer (the extracts are full daily snapshots).
with ranked as (
    {{ newest_extract(source('silver', 'customers'), 'customer_number') }}
),

renamed as (
    select
        customer_number,
        login_id,
        first_name_token,
        first_name_soundex_token,
        last_name_token,
        last_name_soundex_token,
        date_of_birth_token,
        email_token,
        phone_token,
        address_line_token,
        postcode_token,
        city,
        region,
        income_band,
        birth_year,
        customer_since,
        status as customer_status,
        snapshot_time as extracted_at
    from ranked
    where extract_rank = 1
)

select * from renamed
