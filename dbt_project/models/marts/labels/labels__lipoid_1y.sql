{{ condition_onset_labels('lipoid') }}
