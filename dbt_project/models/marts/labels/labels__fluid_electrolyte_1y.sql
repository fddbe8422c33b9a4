{{ condition_onset_labels('fluid_electrolyte') }}
