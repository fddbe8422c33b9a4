"""Explanations: which events of a patient's record moved a risk, by integrated gradients.

Integrated gradients (captum) run on the concept embeddings of the finetuned Mamba model, from
the ``[PAD]`` embedding (zero) to each token's, with the token's time, age, type and visit
features held fixed. (Scaling the whole embedding output instead does not work: the blocks'
RMSNorm makes the model blind to that scale, so the path integral is degenerate.) A token's
attribution is the sum over the hidden dimension; tokens are then grouped into source events by
(code, time), a lab value's bin token folded into its code, so that the answer names events a
clinician can find in the chart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import torch
from captum.attr import LayerIntegratedGradients

from ehrmamba.model import EHRMambaForMultitask
from ehrmamba.tokenize import FEATURES, TokenType, Vocabulary, sequence_tensors
from ehrmamba.tokenize.sequences import SubjectLayout

_STRUCTURE = (TokenType.PAD, TokenType.SPECIAL, TokenType.GAP, TokenType.VISIT, TokenType.TASK)
_BIN = re.compile(r"_bin\d+$")


@dataclass
class EventAttribution:
    code: str
    time: datetime
    attribution: float  # contribution to the logit (positive: raised the risk)
    tokens: int  # how many tokens of the sequence belong to this event


@dataclass
class Explanation:
    task: str
    risk: float
    baseline_risk: float  # the model's risk with every concept replaced by [PAD]
    convergence_delta: float  # IG completeness error: small when n_steps suffices
    events: list[EventAttribution]  # most influential first (by absolute attribution)


def _logit(model: EHRMambaForMultitask):
    def forward(input_ids: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        # captum stacks the interpolation steps on the batch axis; features follow
        batch = input_ids.shape[0]
        inputs = dict(zip(FEATURES[1:], (f.expand(batch, -1) for f in features), strict=True))
        return model(input_ids, **inputs).logits

    return forward


def explain_layout(
    model: EHRMambaForMultitask,
    vocab: Vocabulary,
    layout: SubjectLayout,
    task: str,
    *,
    cut: int | None = None,
    max_len: int = 2048,
    task_token_position: str = "end",
    n_steps: int = 32,
    top: int | None = 20,
) -> Explanation:
    """Attribute one task's risk for one patient (history cut at ``cut`` ns) to its events."""
    model.eval()
    seq = layout.sequence(
        vocab,
        cut=cut,
        task=task,
        max_len=max_len,
        task_token_position=task_token_position,
        with_times=True,
    )
    inputs = sequence_tensors(seq)
    features = tuple(inputs[k] for k in FEATURES[1:])
    forward = _logit(model)
    ig = LayerIntegratedGradients(forward, model.backbone.embeddings.word_embeddings)
    pad = torch.full_like(inputs["input_ids"], vocab.pad_id)
    attributions, delta = ig.attribute(
        inputs["input_ids"],
        baselines=pad,
        additional_forward_args=features,
        n_steps=n_steps,
        return_convergence_delta=True,
    )
    per_token = attributions.sum(-1)[0].detach().numpy()
    with torch.no_grad():
        risk = float(torch.sigmoid(forward(inputs["input_ids"], *features))[0])
        baseline_risk = float(torch.sigmoid(forward(pad, *features))[0])

    frame = pd.DataFrame(
        {
            "token": [vocab.tokens[int(i)] for i in seq["input_ids"]],
            "type": seq["token_type_ids"],
            "time": pd.to_datetime(seq["time_ns"]),
            "attribution": per_token,
        }
    )
    frame = frame[~frame["type"].isin(_STRUCTURE)]
    frame["code"] = frame["token"].str.replace(_BIN, "", regex=True)
    events = (
        frame.groupby(["code", "time"], sort=False)
        .agg(attribution=("attribution", "sum"), tokens=("token", "size"))
        .reset_index()
    )
    events = events.reindex(events["attribution"].abs().sort_values(ascending=False).index)
    if top is not None:
        events = events.head(top)
    return Explanation(
        task=task,
        risk=risk,
        baseline_risk=baseline_risk,
        convergence_delta=float(delta.abs().max()),
        events=[
            EventAttribution(r.code, r.time.to_pydatetime(), float(r.attribution), int(r.tokens))
            for r in events.itertuples()
        ],
    )


def explain_tasks(
    model: EHRMambaForMultitask,
    vocab: Vocabulary,
    layout: SubjectLayout,
    tasks: Sequence[str],
    **kwargs,
) -> dict[str, Explanation]:
    return {task: explain_layout(model, vocab, layout, task, **kwargs) for task in tasks}
