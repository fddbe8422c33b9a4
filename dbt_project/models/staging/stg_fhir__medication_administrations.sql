{{ stg_medication(
    'MedicationAdministration', 'medication_administration_id',
    ['$.effectiveDateTime', '$.effectivePeriod.start'], '$.effectivePeriod.end'
) }}
