{{ stg_medication(
    'MedicationStatement', 'medication_statement_id',
    ['$.effectiveDateTime', '$.effectivePeriod.start', '$.dateAsserted']
) }}
