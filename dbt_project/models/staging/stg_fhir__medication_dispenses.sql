{{ stg_medication(
    'MedicationDispense', 'medication_dispense_id', ['$.whenHandedOver', '$.whenPrepared']
) }}
