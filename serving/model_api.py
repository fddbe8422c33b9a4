"""Forecast and explanation for one patient: the two model calls the service needs beyond risks.

The service depends on this interface only (:func:`forecast` and :func:`explain`, both on a
:class:`ehrmamba.finetune.bundle.FinetunedModel` and the patient's
:class:`ehrmamba.tokenize.SubjectLayout`), so the library's own forecasting and explanation
modules can replace the implementations here without touching the HTTP layer.

- Forecast: the history is scanned once into the recurrent state, then tokens are sampled one
  recurrent step at a time. The finetuned model has no language-model head of its own; its
  concept embedding is tied to the pretraining LM head (``tie_word_embeddings``), so the next
  token's logits are the hidden state times that embedding. Time moves with the sampled
  time-gap tokens (the middle of each gap's range); events inside a visit share its time.
- Explanation: integrated gradients on the concept embedding (baseline: the zero vector, which
  is the ``[PAD]`` embedding), per task, over the full history with the task token; each
  token's attribution is the dot product of (embedding - baseline) with the path-averaged
  gradient, so the attributions sum to (logit - baseline logit) up to the Riemann error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ehrmamba.finetune.bundle import FinetunedModel
from ehrmamba.tokenize import FEATURES, SubjectLayout, TokenType
from ehrmamba.tokenize.sequences import NS_PER_DAY, NS_PER_WEEK, NS_PER_YEAR
from ehrmamba.tokenize.vocab import LONG_TERM, VS

_DTYPES = {
    "input_ids": torch.long,
    "token_type_ids": torch.long,
    "time_weeks": torch.float32,
    "age_years": torch.float32,
    "visit_order": torch.long,
    "visit_segment": torch.long,
}
_EVENT_TYPES = (TokenType.CONCEPT, TokenType.LAB_BIN, TokenType.STATIC)


@dataclass(frozen=True)
class ForecastEvent:
    token: str  # the vocabulary token, e.g. ``LOINC/2160-0_bin3``
    code: str  # the event code (a lab bin's code without its bin)
    bin: int | None  # the quantile bin of a lab value, when the token is one
    time: np.datetime64  # when it is expected (UTC)
    probability: float  # the probability the model gave the sampled token


@dataclass(frozen=True)
class Contribution:
    token: str
    code: str
    time: np.datetime64
    attribution: float  # contribution to the task's logit (positive raises the risk)


def _split_bin(token: str) -> tuple[str, int | None]:
    head, sep, tail = token.rpartition("_bin")
    if sep and tail.isdigit():
        return head, int(tail)
    return token, None


def _gap_days(token: str) -> float:
    """The middle of a gap token's range ([W_k]: weeks, [M_k]: 30-day months, [LT]: > 1 y)."""
    if token == LONG_TERM:
        return 730.0
    kind, k = token[1], int(token[3:-1])
    return k * 7 + 3.5 if kind == "W" else max(k * 30 + 15, 28.0)


def _tensor(values, key: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=_DTYPES[key])


def _cut(layout: SubjectLayout, cut_ns: int | None) -> int:
    return int(layout.t.max()) if cut_ns is None else int(cut_ns)


@torch.no_grad()
def forecast(
    model: FinetunedModel,
    layout: SubjectLayout,
    *,
    cut_ns: int | None = None,
    max_events: int = 10,
    seed: int = 0,
) -> list[ForecastEvent]:
    """The next ``max_events`` clinical events after the cut, sampled (reproducible by seed)."""
    vocab = model.vocab
    net = model.model.eval()
    seq = layout.sequence(vocab, cut=cut_ns, max_len=model.settings.max_len)
    history = {k: _tensor(seq[k], k).unsqueeze(0) for k in FEATURES}
    cache = net.backbone.allocate_inference_cache(1)
    hidden = net.backbone(**history, cache=cache)[:, -1]
    weight = net.backbone.embeddings.word_embeddings.weight
    allowed = torch.as_tensor(
        np.isin(vocab.token_types, (*_EVENT_TYPES, TokenType.GAP, TokenType.VISIT))
    )
    allowed[vocab.unk_id] = False
    generator = torch.Generator().manual_seed(seed)
    t = _cut(layout, cut_ns)
    birth = layout.birth_t
    visit = int(seq["visit_order"][-1])
    segment = int(seq["visit_segment"][-1])
    out: list[ForecastEvent] = []
    for _ in range(max_events * 8):  # gaps and visit markers also take steps
        logits = (hidden @ weight.T)[0].float()
        logits[~allowed] = -torch.inf
        probs = torch.softmax(logits, -1)
        token_id = int(torch.multinomial(probs, 1, generator=generator))
        token = vocab.tokens[token_id]
        ttype = int(vocab.token_types[token_id])
        order = visit  # as the layout: a gap and the [VS] after it carry the next visit's order
        if ttype == TokenType.GAP:
            t += int(_gap_days(token) * NS_PER_DAY)
            order = visit + 1
        elif token == VS:
            visit = order = visit + 1
            segment = 1 if segment != 1 else 2
        elif ttype in _EVENT_TYPES:
            code, k = _split_bin(token)
            when = np.datetime64(t, "ns")
            out.append(ForecastEvent(token, code, k, when, float(probs[token_id])))
            if len(out) >= max_events:
                break
        step = {
            "input_ids": [token_id],
            "token_type_ids": [ttype],
            "time_weeks": [(t - layout.first_t) / NS_PER_WEEK],
            "age_years": [(t - birth) / NS_PER_YEAR if birth is not None else 0.0],
            "visit_order": [order],
            "visit_segment": [0 if ttype == TokenType.GAP else segment],
        }
        hidden = net.backbone.step(cache, **{k: _tensor(v, k) for k, v in step.items()})
    return out


def _kept_positions(layout: SubjectLayout, cut_ns: int | None, keep: int) -> np.ndarray:
    """Layout indices of the history tokens a sequence holds (as ``SubjectLayout.sequence``)."""
    idx = np.arange(len(layout.tok)) if cut_ns is None else np.flatnonzero(layout.t <= cut_ns)
    idx = idx[idx > 0]
    return idx[-keep:] if keep > 0 else idx[:0]


def explain(
    model: FinetunedModel,
    layout: SubjectLayout,
    *,
    tasks: Sequence[str] | None = None,
    cut_ns: int | None = None,
    top_k: int = 10,
    steps: int = 16,
) -> dict[str, list[Contribution]]:
    """Per task, the ``top_k`` events whose attributions raise the risk most."""
    vocab = model.vocab
    net = model.model.eval()
    tasks = list(tasks or model.tasks)
    max_len = model.settings.max_len
    position = model.settings.task_token_position
    embedding = net.backbone.embeddings.word_embeddings
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoint rule
    seqs = [
        layout.sequence(vocab, cut=cut_ns, task=t, max_len=max_len, task_token_position=position)
        for t in tasks
    ]
    # one pass for all tasks: row (task i, step j) = sequence i with its embedding scaled by
    # alpha j; each row's logit depends on its own row only, so one backward serves all
    batch = {
        k: torch.stack([_tensor(s[k], k) for s in seqs]).repeat_interleave(steps, 0)
        for k in FEATURES
    }
    scales = alphas.repeat(len(tasks)).view(-1, 1, 1)
    captured: dict[str, torch.Tensor] = {}

    def scale(_module, _inputs, output):
        output = output.detach()
        captured["emb"] = output
        captured["scaled"] = (scales * output).requires_grad_(True)
        return captured["scaled"]

    handle = embedding.register_forward_hook(scale)
    try:
        with torch.enable_grad():
            logits = net(**batch).logits
            (grad,) = torch.autograd.grad(logits.sum(), captured["scaled"])
    finally:
        handle.remove()
    n = len(seqs[0]["input_ids"])
    attributions = (
        (captured["emb"] * grad).sum(-1).view(len(tasks), steps, n).mean(1).numpy()
    )  # (tasks, positions)
    history = np.arange(1, n - 1) if position == "end" else np.arange(2, n)
    kept = _kept_positions(layout, cut_ns, max_len - 2)
    out: dict[str, list[Contribution]] = {}
    for t, task in enumerate(tasks):
        rows = []
        for seq_pos, lay_pos in zip(history, kept, strict=True):
            token_id = int(layout.tok[lay_pos])
            if int(vocab.token_types[token_id]) not in _EVENT_TYPES or token_id == vocab.unk_id:
                continue
            token = vocab.tokens[token_id]
            rows.append(
                Contribution(
                    token,
                    _split_bin(token)[0],
                    np.datetime64(int(layout.t[lay_pos]), "ns"),
                    float(attributions[t, seq_pos]),
                )
            )
        rows.sort(key=lambda c: c.attribution, reverse=True)
        out[task] = [c for c in rows[:top_k] if c.attribution > 0]
    return out
