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
from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask, EHRMambaForPretraining
from ehrmamba.tokenize import TokenizerConfig, Vocabulary, tokenize_events
from ehrmamba.tokenize.sequences import NS_PER_DAY, SubjectLayout, encode_events

CODES = [f"SNOMED/{1000 + i}" for i in range(30)]
PLANTED = "SNOMED/999999"
TASK = "mortality_1m"


def _vocab() -> Vocabulary:
    return Vocabulary(
        [*CODES, PLANTED, "MEDS_BIRTH", "MEDS_DEATH", "VISIT/inpatient", "VISIT_END/inpatient"],
        {},
        TokenizerConfig(max_len=128),
    )


def _patient(rng: np.random.Generator, sid: int, planted: bool, n_visits: int = 6) -> pd.DataFrame:
    rows = [(pd.Timestamp("1950-01-01"), "MEDS_BIRTH", None, "birth")]
    t = pd.Timestamp("2015-01-01")
    plant_at = int(rng.integers(0, n_visits))
    for v in range(n_visits):
        t += pd.Timedelta(days=int(rng.integers(10, 200)))
        vid = f"{sid}-{v}"
        rows.append((t, "VISIT/inpatient", vid, "visit_start"))
        codes = [str(c) for c in rng.choice(CODES, size=2, replace=False)]
        if planted and v == plant_at:
            # the plant takes a code's place, so both classes have the same shape and only
            # the code itself tells them apart (an added event would make "a visit with three
            # events" a signal that the visit's other codes could carry as well)
            codes[1] = PLANTED
        rows.extend((t, code, vid, "condition") for code in codes)
        rows.append((t + pd.Timedelta(days=2), "VISIT_END/inpatient", vid, "visit_end"))
    frame = pd.DataFrame(rows, columns=["time", "code", "visit_id", "event_type"])
    frame["subject_id"] = sid
    frame["numeric_value"] = None
    frame["unit"] = None
    frame["text_value"] = None
    return frame


def _layout(vocab: Vocabulary, events: pd.DataFrame) -> SubjectLayout:
    return SubjectLayout.build(encode_events(events, vocab), vocab, None)


def _batch(seqs: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    n = max(len(s["input_ids"]) for s in seqs)
    out = {}
    for k in seqs[0]:
        dtype = torch.float32 if seqs[0][k].dtype.kind == "f" else torch.long
        out[k] = torch.stack(
            [
                torch.nn.functional.pad(torch.as_tensor(s[k], dtype=dtype), (0, n - len(s[k])))
                for s in seqs
            ]
        )
    out["attention_mask"] = torch.stack(
        [
            torch.nn.functional.pad(
                torch.ones(len(s["input_ids"]), dtype=torch.long), (0, n - len(s["input_ids"]))
            )
            for s in seqs
        ]
    )
    return out


def test_forecast_samples_events_after_the_cut_from_the_vocabulary() -> None:
    vocab = _vocab()
    rng = np.random.default_rng(0)
    events = _patient(rng, 1, planted=False)
    layout = _layout(vocab, events)
    torch.manual_seed(0)
    model = EHRMambaForPretraining(
        EHRMambaConfig.preset("tiny", vocab_size=len(vocab), dropout=0.0)
    )
    starts = np.unique(layout.t[layout.tok == vocab.id("[VS]")])
    cut = int(starts[3])
    config = ForecastConfig(n_samples=8, max_new_tokens=40, horizon_days=400, seed=1)
    result = forecast_layout(model, vocab, layout, cut=cut, config=config)
    assert len(result.samples) == 8
    events_out = [e for s in result.samples for e in s]
    assert events_out, "an untrained model still samples events"
    event_tokens = {
        t for t, ty in zip(vocab.tokens, vocab.token_types, strict=True) if ty in (4, 5, 7)
    }
    assert all(e.code in event_tokens for e in events_out)  # events, never structure tokens
    assert all(0 <= e.days_after_cut <= 400 + 730 for e in events_out)
    assert all(e.visit >= 0 for e in events_out)
    again = forecast_layout(model, vocab, layout, cut=cut, config=config)
    assert [[e.code for e in s] for s in again.samples] == [
        [e.code for e in s] for s in result.samples
    ]

    evaluation = evaluate_forecasts(model, vocab, [layout], ks=(5, 10), config=config)
    assert evaluation.summary["patients"] == 1
    assert 0 <= evaluation.summary["recall@5"] <= evaluation.summary["recall@10"] <= 1
    true_gap = evaluation.per_patient["true_gap_days"].iloc[0]
    assert true_gap == pytest.approx(
        (starts[-1] - layout.t[layout.t <= starts[-1] - NS_PER_DAY].max()) / NS_PER_DAY
    )

    outcomes = outcome_codes_for_tasks(vocab, ["mortality_1m", "readmission_1m", "los_1w"], {})
    assert outcomes == {"mortality_1m": {"MEDS_DEATH"}, "readmission_1m": {"VISIT/inpatient"}}
    risks = zero_shot_risks(model, vocab, layout, cut, outcomes, config=config)
    assert set(risks) == set(outcomes) and all(0 <= r <= 1 for r in risks.values())


def test_integrated_gradients_rank_the_planted_event_first() -> None:
    vocab = _vocab()

    def cohort(seed: int, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rng = np.random.default_rng(seed)
        patients = [_patient(rng, i, planted=i % 2 == 0, n_visits=4) for i in range(n)]
        seqs = [tokenize_events(ev, vocab, task=TASK) for ev in patients]
        return _batch(seqs), torch.tensor([float(i % 2 == 0) for i in range(n)])

    # 256 patients: with 64 the model could memorize them and score fresh planted patients
    # low, and then no explanation can point at a plant the model does not use
    batch, labels = cohort(1, 256)
    unseen, unseen_labels = cohort(2, 64)
    torch.manual_seed(0)
    model = EHRMambaForMultitask(EHRMambaConfig.preset("tiny", vocab_size=len(vocab), dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    accuracy = 0.0
    for step in range(300):  # until the plant is learned (about 40 steps)
        model.train()
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19:
            model.eval()
            with torch.no_grad():
                probs = torch.sigmoid(model(**unseen).logits)
            accuracy = float(((probs > 0.5).float() == unseen_labels).float().mean())
            if accuracy >= 0.97:
                break
    assert accuracy >= 0.97, "the model learned the plant (judged on patients it never saw)"
    model.eval()

    for seed in range(100, 104):  # fresh planted patients, the plant at a random visit
        fresh = _patient(np.random.default_rng(seed), 999, planted=True, n_visits=4)
        explanation = explain_layout(model, vocab, _layout(vocab, fresh), TASK, max_len=128)
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

    fixed = explain_layout(model, vocab, _layout(vocab, fresh), TASK, n_steps=4, max_steps=4)
    assert fixed.n_steps == 4
    with pytest.raises(ValueError, match="n_steps <= max_steps"):
        explain_layout(model, vocab, _layout(vocab, fresh), TASK, n_steps=64, max_steps=32)
