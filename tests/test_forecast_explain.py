"""Forecasting samples futures after the cut from the vocabulary; integrated gradients find the
event that drives a risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ehrmamba.explain import explain_layout
from ehrmamba.forecast import (
    ForecastConfig,
    evaluate_forecasts,
    forecast_layout,
    outcome_codes_for_tasks,
    zero_shot_risks,
)
from ehrmamba.model import EHRMambaConfig, EHRMambaForPretraining
from ehrmamba.tokenize.sequences import NS_PER_DAY
from tests.planted_cohort import (
    PLANTED,
    TASK,
    fresh_planted_patient,
    layout,
    patient,
    train_planted_model,
    vocabulary,
)


def test_forecast_samples_events_after_the_cut_from_the_vocabulary() -> None:
    vocab = vocabulary()
    rng = np.random.default_rng(0)
    events = patient(rng, 1, planted=False)
    subject = layout(vocab, events)
    torch.manual_seed(0)
    model = EHRMambaForPretraining(
        EHRMambaConfig.preset("tiny", vocab_size=len(vocab), dropout=0.0)
    )
    starts = np.unique(subject.t[subject.tok == vocab.id("[VS]")])
    cut = int(starts[3])
    config = ForecastConfig(n_samples=8, max_new_tokens=40, horizon_days=400, seed=1)
    result = forecast_layout(model, vocab, subject, cut=cut, config=config)
    assert len(result.samples) == 8
    events_out = [e for s in result.samples for e in s]
    assert events_out, "an untrained model still samples events"
    event_tokens = {
        t for t, ty in zip(vocab.tokens, vocab.token_types, strict=True) if ty in (4, 5, 7)
    }
    assert all(e.code in event_tokens for e in events_out)  # events, never structure tokens
    assert all(0 <= e.days_after_cut <= 400 + 730 for e in events_out)
    assert all(e.visit >= 0 for e in events_out)
    again = forecast_layout(model, vocab, subject, cut=cut, config=config)
    assert [[e.code for e in s] for s in again.samples] == [
        [e.code for e in s] for s in result.samples
    ]

    evaluation = evaluate_forecasts(model, vocab, [subject], ks=(5, 10), config=config)
    assert evaluation.summary["patients"] == 1
    assert 0 <= evaluation.summary["recall@5"] <= evaluation.summary["recall@10"] <= 1
    true_gap = evaluation.per_patient["true_gap_days"].iloc[0]
    assert true_gap == pytest.approx(
        (starts[-1] - subject.t[subject.t <= starts[-1] - NS_PER_DAY].max()) / NS_PER_DAY
    )

    outcomes = outcome_codes_for_tasks(vocab, ["mortality_1m", "readmission_1m", "los_1w"], {})
    assert outcomes == {"mortality_1m": {"MEDS_DEATH"}, "readmission_1m": {"VISIT/inpatient"}}
    risks = zero_shot_risks(model, vocab, subject, cut, outcomes, config=config)
    assert set(risks) == set(outcomes) and all(0 <= r <= 1 for r in risks.values())


def test_integrated_gradients_rank_the_planted_event_first() -> None:
    vocab = vocabulary()
    model, accuracy = train_planted_model(vocab)
    assert accuracy >= 0.97, "the model learned the plant (judged on patients it never saw)"

    for seed in range(100, 104):
        fresh = fresh_planted_patient(seed)
        explanation = explain_layout(model, vocab, layout(vocab, fresh), TASK, max_len=128)
        assert explanation.risk > 0.5
        top = explanation.events[0]
        assert top.code == PLANTED and top.attribution > 0, (seed, explanation.events[:3])
        planted_time = fresh.loc[fresh.code == PLANTED, "time"].iloc[0]
        assert pd.Timestamp(top.time) == planted_time
        # integrated gradients are complete: attributions sum to the logit difference (this
        # model is steep along the path; evenly spread, 512 steps did not always suffice)
        logit_change = abs(
            np.log(explanation.risk / (1 - explanation.risk))
            - np.log(explanation.baseline_risk / (1 - explanation.baseline_risk))
        )
        assert explanation.converged and 32 <= explanation.n_steps <= 512
        assert explanation.convergence_delta <= 0.05 * logit_change + 1e-4

    fixed = explain_layout(model, vocab, layout(vocab, fresh), TASK, n_steps=4, max_steps=4)
    assert fixed.n_steps == 4
    with pytest.raises(ValueError, match="n_steps <= max_steps"):
        explain_layout(model, vocab, layout(vocab, fresh), TASK, n_steps=64, max_steps=32)
