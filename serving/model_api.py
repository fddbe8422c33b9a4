"""Forecast and explanation for one patient: the library's own, as the service needs them.

The service calls only :func:`forecast` and :func:`explain` (on a
:class:`ehrmamba.finetune.bundle.FinetunedModel` and the patient's
:class:`ehrmamba.tokenize.SubjectLayout`); the work is done by :mod:`ehrmamba.forecast`
(futures sampled with the state cache) and :mod:`ehrmamba.explain` (integrated gradients,
grouped into the record's events).

The served model is the finetuned multitask model; it carries the pretrained backbone but not
the pretraining LM head. With ``tie_word_embeddings`` (the default) that head IS the concept
embedding, so the language model the forecaster needs is rebuilt around the finetuned backbone
with its head tied to that embedding (the backbone moved during finetuning: forecasts come from
the served weights, not the pretraining checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ehrmamba.explain import explain_layout
from ehrmamba.finetune.bundle import FinetunedModel
from ehrmamba.forecast import Forecast, ForecastConfig, forecast_layout
from ehrmamba.model import EHRMambaForPretraining
from ehrmamba.tokenize import SubjectLayout
from ehrmamba.tokenize.sequences import NS_PER_DAY


@dataclass(frozen=True)
class Contribution:
    code: str
    time: np.datetime64
    attribution: float  # contribution to the task's logit (positive raises the risk)
    tokens: int  # tokens of the sequence that belong to this event


_LANGUAGE_MODELS: dict[int, tuple[FinetunedModel, EHRMambaForPretraining]] = {}


def _language_model(model: FinetunedModel) -> EHRMambaForPretraining:
    """The LM around the finetuned backbone (built once per served model)."""
    if id(model) not in _LANGUAGE_MODELS:
        net = model.model
        if not net.config.tie_word_embeddings:
            raise ValueError("forecasting needs tied embeddings: the bundle has no LM head")
        lm = EHRMambaForPretraining(net.config)
        lm.backbone = net.backbone  # shared, not copied
        lm.lm_head.weight = net.backbone.embeddings.word_embeddings.weight
        _LANGUAGE_MODELS[id(model)] = (model, lm.eval())
    return _LANGUAGE_MODELS[id(model)][1]


def forecast(
    model: FinetunedModel,
    layout: SubjectLayout,
    *,
    cut_ns: int | None = None,
    samples: int = 8,
    max_new_tokens: int = 64,
    horizon_days: float = 365.0,
    seed: int = 0,
) -> Forecast:
    """Sampled futures of the record after the cut (reproducible by ``seed``)."""
    config = ForecastConfig(
        n_samples=samples,
        max_new_tokens=max_new_tokens,
        horizon_days=horizon_days,
        seed=seed,
        max_len=model.settings.max_len,
    )
    return forecast_layout(_language_model(model), model.vocab, layout, cut=cut_ns, config=config)


def forecast_json(result: Forecast, cut_ns: int) -> dict[str, Any]:
    """Each future's events with absolute times, and what the futures agree on."""

    def when(days: float) -> np.datetime64:
        return np.datetime64(int(cut_ns + days * NS_PER_DAY), "ns")

    n = len(result.samples)
    gap = result.next_visit_gap_days()
    counts = result.next_visit_codes()
    return {
        "horizon_days": result.horizon_days,
        "samples": n,
        "next_visit": {
            "days_after_cut": gap,
            "time": None if gap is None else when(gap),
            "codes": [{"code": c, "share": k / n} for c, k in counts.most_common(20)],
        },
        "futures": [
            [
                {
                    "code": e.code,
                    "days_after_cut": round(e.days_after_cut, 3),
                    "time": when(e.days_after_cut),
                    "visit": e.visit,
                }
                for e in sample
            ]
            for sample in result.samples
        ],
    }


def explain(
    model: FinetunedModel,
    layout: SubjectLayout,
    *,
    tasks: Sequence[str] | None = None,
    cut_ns: int | None = None,
    top_k: int = 10,
    steps: int = 16,
) -> dict[str, list[Contribution]]:
    """Per task, the ``top_k`` events of the record that raised the risk most."""
    out: dict[str, list[Contribution]] = {}
    for task in tasks or model.tasks:
        explanation = explain_layout(
            model.model,
            model.vocab,
            layout,
            task,
            cut=cut_ns,
            max_len=model.settings.max_len,
            task_token_position=model.settings.task_token_position,
            n_steps=steps,
            max_steps=steps,  # the caller chose the cost (a CDS card cannot wait for refinement)
            top=None,
        )
        raising = sorted(
            (e for e in explanation.events if e.attribution > 0),
            key=lambda e: e.attribution,
            reverse=True,
        )
        out[task] = [
            Contribution(e.code, np.datetime64(e.time, "ns"), e.attribution, e.tokens)
            for e in raising[:top_k]
        ]
    return out
