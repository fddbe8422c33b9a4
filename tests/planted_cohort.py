"""A synthetic cohort whose label is carried by one planted code: the known answer that the
explanation tests and ``benchmarks/explain_convergence.py`` hold integrated gradients to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask
from ehrmamba.tokenize import TokenizerConfig, Vocabulary, tokenize_events
from ehrmamba.tokenize.sequences import SubjectLayout, encode_events

CODES = [f"SNOMED/{1000 + i}" for i in range(30)]
PLANTED = "SNOMED/999999"
TASK = "mortality_1m"


def vocabulary() -> Vocabulary:
    return Vocabulary(
        [*CODES, PLANTED, "MEDS_BIRTH", "MEDS_DEATH", "VISIT/inpatient", "VISIT_END/inpatient"],
        {},
        TokenizerConfig(max_len=128),
    )


def patient(rng: np.random.Generator, sid: int, planted: bool, n_visits: int = 6) -> pd.DataFrame:
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


def layout(vocab: Vocabulary, events: pd.DataFrame) -> SubjectLayout:
    return SubjectLayout.build(encode_events(events, vocab), vocab, None)


def batch(seqs: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
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


def cohort(vocab: Vocabulary, seed: int, n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``n`` patients of four visits, every other one planted (label 1)."""
    rng = np.random.default_rng(seed)
    patients = [patient(rng, i, planted=i % 2 == 0, n_visits=4) for i in range(n)]
    seqs = [tokenize_events(ev, vocab, task=TASK) for ev in patients]
    return batch(seqs), torch.tensor([float(i % 2 == 0) for i in range(n)])


def train_planted_model(
    vocab: Vocabulary, torch_seed: int = 0
) -> tuple[EHRMambaForMultitask, float]:
    """A tiny model trained until it finds the plant; its accuracy on 64 unseen patients.

    256 training patients: with 64 the model memorized them and scored fresh planted patients
    low, and then no explanation can point at a plant the model does not use."""
    train, labels = cohort(vocab, 1, 256)
    unseen, unseen_labels = cohort(vocab, 2, 64)
    torch.manual_seed(torch_seed)
    model = EHRMambaForMultitask(EHRMambaConfig.preset("tiny", vocab_size=len(vocab), dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    accuracy = 0.0
    for step in range(300):  # until the plant is learned (about 40 steps)
        model.train()
        loss = model(**train, labels=labels).loss
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
    return model.eval(), accuracy


def fresh_planted_patient(seed: int) -> pd.DataFrame:
    """A planted patient none of the training cohorts holds (the plant at a random visit)."""
    return patient(np.random.default_rng(seed), 999, planted=True, n_visits=4)
