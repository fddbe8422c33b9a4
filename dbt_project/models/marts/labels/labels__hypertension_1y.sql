{{ condition_onset_labels('hypertension') }}
