"""Forecasting: sample a patient's next events (codes and times) from the pretrained model.

The history is scanned once into the recurrent state; ``n_samples`` futures then continue from
copies of that state, one token per step, in a batch. Time moves forward only on sampled gap
tokens (``[W_k]``, ``[M_k]``, ``[LT]``: the midpoint of the interval each one stands for);
``[VS]`` opens the next visit. Sampling stops at ``max_new_tokens`` or past ``horizon_days``.

Evaluation on ``held_out`` turns the samples into numbers: recall@k of the codes of the next
visit, the error of the predicted gap to it, and a zero-shot risk per task (the share of
sampled futures in which the task's outcome occurs inside its window).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ehrmamba.model import EHRMambaForPretraining, repeat_cache
from ehrmamba.tokenize import TokenType, Vocabulary, sequence_tensors
from ehrmamba.tokenize.sequences import NS_PER_DAY, NS_PER_WEEK, NS_PER_YEAR, SubjectLayout
from ehrmamba.tokenize.vocab import GAP_TOKENS, PAD, VE, VS

# days a sampled gap token moves time forward: the middle of the interval it stands for
GAP_DAYS: dict[str, float] = {
    **{f"[W_{k}]": 7 * k + 3.5 for k in range(3)},
    "[W_3]": 24.5,
    **{f"[M_{k}]": 30 * k + 15 for k in range(1, 12)},
    "[M_0]": 28.0,
    "[M_12]": 362.5,
    "[LT]": 730.0,
}
# outcome of each task as codes in a sampled future, and the window after the cut
TASK_WINDOWS_DAYS = {
    "mortality_1m": 30,
    "readmission_1m": 30,
    "los_1w": 7,
    "hypertension_1y": 365,
    "fluid_electrolyte_1y": 365,
    "lipoid_1y": 365,
}
_NON_EVENT_TYPES = (
    TokenType.PAD,
    TokenType.SPECIAL,
    TokenType.GAP,
    TokenType.VISIT,
    TokenType.TASK,
)


@dataclass
class ForecastEvent:
    code: str  # the token (a MEDS code, or CODE_binK for a lab value bin)
    days_after_cut: float
    visit: int  # 0: the visit open at the cut, 1: the next one, ...


@dataclass
class Forecast:
    samples: list[list[ForecastEvent]]  # one list of events per sampled future
    horizon_days: float

    def next_visit_codes(self) -> Counter[str]:
        """How many sampled futures hold each code in their first new visit."""
        counts: Counter[str] = Counter()
        for sample in self.samples:
            counts.update({e.code for e in sample if e.visit == 1})
        return counts

    def next_visit_gap_days(self) -> float | None:
        """Median over samples of the days to the first new visit (None: no sample opened one)."""
        gaps = [next((e.days_after_cut for e in s if e.visit == 1), None) for s in self.samples]
        gaps = [g for g in gaps if g is not None]
        return float(np.median(gaps)) if gaps else None

    def outcome_share(self, codes: Iterable[str], window_days: float) -> float:
        """Share of sampled futures holding one of ``codes`` within ``window_days``."""
        wanted = set(codes)
        hits = [
            any(e.code in wanted and e.days_after_cut <= window_days for e in s)
            for s in self.samples
        ]
        return float(np.mean(hits)) if hits else 0.0


@dataclass
class ForecastConfig:
    n_samples: int = 16
    max_new_tokens: int = 64
    horizon_days: float = 365.0
    temperature: float = 1.0
    top_k: int | None = 50
    seed: int = 0
    max_len: int = 2048  # history tokens read (the most recent)
    exclude: list[str] = field(default_factory=lambda: ["[PAD]", "[CLS]", "[MASK]", "[REG]"])


@torch.no_grad()
def forecast_layout(
    model: EHRMambaForPretraining,
    vocab: Vocabulary,
    layout: SubjectLayout,
    *,
    cut: int | None = None,
    config: ForecastConfig | None = None,
) -> Forecast:
    """Sample futures of one patient's history cut at ``cut`` (ns; None: the whole record)."""
    config = config or ForecastConfig()
    model.eval()
    seq = layout.sequence(vocab, cut=cut, max_len=config.max_len)
    history = sequence_tensors(seq)
    n = config.n_samples
    cache = model.allocate_inference_cache(1)
    hidden = model.backbone(**history, cache=cache)
    logits = model.lm_head(hidden[:, -1]).repeat(n, 1)
    cache = repeat_cache(cache, n)

    generator = torch.Generator().manual_seed(config.seed)
    banned = torch.tensor([vocab.id(t) for t in config.exclude if t in vocab.token_to_id])
    banned = torch.cat([banned, torch.tensor(np.flatnonzero(vocab.token_types == TokenType.TASK))])
    gap_ids = {vocab.id(t): GAP_DAYS[t] for t in GAP_TOKENS}
    vs_id, ve_id, pad_id = vocab.id(VS), vocab.id(VE), vocab.id(PAD)

    t0 = float(seq["time_weeks"][-1])  # weeks since first event, at the cut
    age0 = float(seq["age_years"][-1])
    visit0 = int(seq["visit_order"][-1])
    seg0 = int(seq["visit_segment"][-1]) or 1
    days = np.zeros(n)
    visit = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    samples: list[list[ForecastEvent]] = [[] for _ in range(n)]
    for _ in range(config.max_new_tokens):
        scores = logits.float() / max(config.temperature, 1e-6)
        scores[:, banned] = -torch.inf
        if config.top_k:
            kth = torch.topk(scores, min(config.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -torch.inf)
        tokens = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator)[:, 0]
        ids = tokens.numpy()
        for i, tok in enumerate(ids):
            if done[i]:
                continue
            if tok in gap_ids:
                days[i] += gap_ids[tok]
            elif tok == vs_id:
                visit[i] += 1
            elif vocab.token_types[tok] not in _NON_EVENT_TYPES:
                samples[i].append(ForecastEvent(vocab.tokens[tok], float(days[i]), int(visit[i])))
            if days[i] > config.horizon_days:
                done[i] = True
        if done.all():
            break
        ids_t = torch.as_tensor(np.where(done, pad_id, ids), dtype=torch.long)
        step_inputs = {
            "token_type_ids": torch.as_tensor(vocab.token_types[ids_t.numpy()], dtype=torch.long),
            "time_weeks": torch.as_tensor(
                t0 + days * NS_PER_DAY / NS_PER_WEEK, dtype=torch.float32
            ),
            "age_years": torch.as_tensor(
                age0 + days * NS_PER_DAY / NS_PER_YEAR, dtype=torch.float32
            ),
            "visit_order": torch.as_tensor(visit0 + visit, dtype=torch.long),
            "visit_segment": torch.as_tensor(
                np.where(ids == ve_id, 0, np.where((seg0 + visit) % 2 == 1, 1, 2)), dtype=torch.long
            ),
        }
        logits = model.step(cache, ids_t, **step_inputs)
    return Forecast(samples=samples, horizon_days=config.horizon_days)


# ---------------------------------------------------------------------- evaluation
@dataclass
class ForecastEvaluation:
    per_patient: pd.DataFrame  # one row per evaluated cut
    summary: dict[str, float]


def _visit_starts(layout: SubjectLayout, vocab: Vocabulary) -> np.ndarray:
    return np.unique(layout.t[layout.tok == vocab.id(VS)])


def _event_codes(layout: SubjectLayout, vocab: Vocabulary, lo: int, hi: int) -> set[str]:
    """Event tokens with lo <= time <= hi (what a recall@k target is made of)."""
    keep = (layout.t >= lo) & (layout.t <= hi)
    keep &= ~np.isin(layout.ttype, _NON_EVENT_TYPES)
    return {vocab.tokens[int(t)] for t in layout.tok[keep]}


def evaluate_forecasts(
    model: EHRMambaForPretraining,
    vocab: Vocabulary,
    layouts: Sequence[SubjectLayout],
    *,
    ks: Sequence[int] = (5, 10, 20),
    config: ForecastConfig | None = None,
) -> ForecastEvaluation:
    """Per patient: cut at the start of its last visit minus one day (so the whole last visit
    is the future), sample, and compare with what happened next."""
    config = config or ForecastConfig()
    rows = []
    for layout in layouts:
        starts = _visit_starts(layout, vocab)
        if len(starts) < 2:
            continue
        target_start = int(starts[-1])
        cut = target_start - NS_PER_DAY
        prev = layout.t[layout.t <= cut]
        if len(prev) < 3:
            continue
        truth = _event_codes(layout, vocab, target_start, int(layout.t.max()))
        if not truth:
            continue
        result = forecast_layout(model, vocab, layout, cut=cut, config=config)
        ranked = [code for code, _ in result.next_visit_codes().most_common()]
        row = {
            "subject_id": layout.subject_id,
            "true_gap_days": (target_start - int(prev.max())) / NS_PER_DAY,
            "predicted_gap_days": result.next_visit_gap_days(),
            "n_true_codes": len(truth),
        }
        for k in ks:
            row[f"recall@{k}"] = len(truth & set(ranked[:k])) / len(truth)
        rows.append(row)
    frame = pd.DataFrame(rows)
    summary: dict[str, float] = {"patients": float(len(frame))}
    if len(frame):
        for k in ks:
            summary[f"recall@{k}"] = float(frame[f"recall@{k}"].mean())
        gaps = frame.dropna(subset=["predicted_gap_days"])
        if len(gaps):
            err = (gaps["predicted_gap_days"] - gaps["true_gap_days"]).abs()
            summary["gap_mae_days"] = float(err.mean())
            summary["gap_median_ae_days"] = float(err.median())
    return ForecastEvaluation(per_patient=frame, summary=summary)


def zero_shot_risks(
    model: EHRMambaForPretraining,
    vocab: Vocabulary,
    layout: SubjectLayout,
    cut: int,
    outcome_codes: dict[str, set[str]],
    *,
    config: ForecastConfig | None = None,
) -> dict[str, float]:
    """Per task: the share of sampled futures whose outcome occurs inside the task window."""
    config = config or ForecastConfig()
    result = forecast_layout(model, vocab, layout, cut=cut, config=config)
    return {
        task: result.outcome_share(codes, TASK_WINDOWS_DAYS.get(task, config.horizon_days))
        for task, codes in outcome_codes.items()
    }


def outcome_codes_for_tasks(
    vocab: Vocabulary, tasks: Sequence[str], condition_codes: dict[str, set[str]]
) -> dict[str, set[str]]:
    """Tokens that mean each task's outcome happened. ``condition_codes``: condition group ->
    MEDS codes, from the dbt seed ``reference.condition_value_sets`` (one source of truth).
    Tasks without a code-level outcome (``los_1w``) are left out."""
    known = set(vocab.token_to_id)
    out: dict[str, set[str]] = {}
    for task in tasks:
        if task == "mortality_1m":
            out[task] = {"MEDS_DEATH"} & known
        elif task == "readmission_1m":
            out[task] = {t for t in known if t == "VISIT/inpatient"}
        elif task.endswith("_1y"):
            out[task] = condition_codes.get(task.removesuffix("_1y"), set()) & known
    return {t: c for t, c in out.items() if c}
