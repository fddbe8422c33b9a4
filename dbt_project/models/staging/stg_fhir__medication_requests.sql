{{ stg_medication('MedicationRequest', 'medication_request_id', ['$.authoredOn']) }}
