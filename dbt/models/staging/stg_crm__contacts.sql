-- The newest extract row of every CRM contact record.
with ranked as (
    {{ newest_extract(source('silver', 'crm_contacts'), 'crm_contact_id') }}
),

renamed as (
    select
        crm_contact_id,
        customer_number,
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
        birth_year,
        updated_at,
        snapshot_time as extracted_at
    from ranked
    where extract_rank = 1
)

select * from renamed
