"""ehrmamba.tokenize on a real warehouse (synthetic FHIR -> ingest -> dbt build, once per module)
and on hand-made timelines: vocabulary, bins, gap tokens, label cuts, truncation, batching."""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from ehrmamba.tokenize import (
    GAP_TOKENS,
    SPECIAL_TOKENS,
    LabelSample,
    SequenceDataset,
    TokenizerConfig,
    TokenType,
    Vocabulary,
    collate_sequences,
    fit_vocabulary,
    gap_token,
    tokenize_events,
    write_label_sequences,
    write_pretraining_sequences,
)

TASKS = [
    "mortality_1m",
    "los_1w",
    "readmission_1m",
    "hypertension_1y",
    "fluid_electrolyte_1y",
    "lipoid_1y",
]


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ehrmamba.fhir import ingest
    from ehrmamba.synth import write_cohort
    from orchestration.dbt_project import run_dbt

    tmp = tmp_path_factory.mktemp("tok")
    write_cohort(tmp / "fhir", 40, 7)
    db = tmp / "wh.duckdb"
    ingest(tmp / "fhir", db, workers=2)
    proc = run_dbt(["build", "--quiet"], duckdb_path=db, target_path=tmp / "target")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return db


@pytest.fixture(scope="module")
def con(warehouse: Path):
    c = duckdb.connect(str(warehouse), read_only=True)
    yield c
    c.close()


@pytest.fixture(scope="module")
def vocab(con) -> Vocabulary:
    return fit_vocabulary(con, TokenizerConfig())


@pytest.fixture(scope="module")
def written(con, vocab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("seq")
    return {
        "pretrain": write_pretraining_sequences(con, vocab, out, batch_size=16),
        # untruncated, so that the label test can count every event
        "labels": write_label_sequences(con, vocab, out, TASKS, batch_size=16, max_len=FULL),
    }


def _events(rows: list[tuple]) -> pd.DataFrame:
    cols = ["time", "code", "numeric_value", "unit", "visit_id", "event_type"]
    df = pd.DataFrame(rows, columns=cols)
    df.insert(0, "subject_id", 1)
    df["text_value"] = None
    return df


BIRTH = datetime(1970, 1, 1)
FULL = 1_000_000


def _visit(vid: str, t: datetime, extra: list[tuple] = ()) -> list[tuple]:
    return [
        (t, "VISIT/ambulatory", None, None, vid, "visit_start"),
        *extra,
        (t, "VISIT_END/ambulatory", None, None, vid, "visit_end"),
    ]


def _static() -> list[tuple]:
    return [
        (BIRTH, "MEDS_BIRTH", None, None, None, "birth"),
        (BIRTH, "GENDER/female", None, None, None, "demographic"),
    ]


# ------------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------------
def test_vocabulary_layout(vocab: Vocabulary) -> None:
    n_fixed = len(SPECIAL_TOKENS) + len(GAP_TOKENS)
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab.token_to_id["[PAD]"] == 0
    assert vocab.tokens[len(SPECIAL_TOKENS) : n_fixed] == list(GAP_TOKENS)
    assert GAP_TOKENS[:4] == ("[W_0]", "[W_1]", "[W_2]", "[W_3]") and GAP_TOKENS[-1] == "[LT]"
    assert vocab.tokens[n_fixed : n_fixed + 6] == [
        "[MOR_1M]",
        "[LOS_1W]",
        "[REA_1M]",
        "[C0]",
        "[C1]",
        "[C2]",
    ]
    concepts = vocab.tokens[n_fixed + 6 :]
    assert concepts == sorted(concepts) and len(concepts) > 100
    assert "LOINC/2160-0_bin0" in concepts and "LOINC/2160-0_bin4" in concepts
    assert "VISIT_END/inpatient" not in concepts  # a visit end is the [VE] marker
    assert vocab.token_type(vocab.id("LOINC/2160-0_bin2")) == TokenType.LAB_BIN
    assert vocab.token_type(vocab.id("[C1]")) == TokenType.TASK
    # a task outside the mapping gets [TASK_<name>]
    cfg = TokenizerConfig(tasks=["mortality_1m", "sepsis_6h"])
    v2 = Vocabulary(["A/1"], {}, cfg)
    assert v2.task_token("sepsis_6h") == "[TASK_sepsis_6h]" and v2.task_id("sepsis_6h") > 0


def test_round_trip_and_save_load(vocab: Vocabulary, tmp_path: Path) -> None:
    ids = list(range(len(vocab)))
    assert vocab.encode(vocab.decode(ids)) == ids
    assert vocab.decode(vocab.encode(vocab.tokens)) == vocab.tokens
    path = vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.version == vocab.version
    assert loaded.tokens == vocab.tokens and loaded.bins == vocab.bins
    assert loaded.config == vocab.config
    # ids do not depend on the order the concepts come in
    concepts = vocab.tokens[len(SPECIAL_TOKENS) + len(GAP_TOKENS) + 6 :]
    shuffled = random.Random(0).sample(concepts, len(concepts))
    assert Vocabulary(shuffled, vocab.bins, vocab.config, vocab.code_counts) == vocab
    assert vocab.id("NOT/A_CODE") == vocab.unk_id


def test_bins_ignore_held_out_and_row_order(warehouse: Path, vocab: Vocabulary, tmp_path) -> None:
    """Shuffle the event rows and change every held-out/tuning value wildly: same vocabulary.
    Change train values: different bins (so the check can fail)."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, db)
    c = duckdb.connect(str(db))
    c.execute(
        """CREATE OR REPLACE TABLE marts.meds_events AS
        SELECT * FROM marts.meds_events ORDER BY hash(subject_id, time, code, numeric_value) DESC"""
    )
    changed = c.execute(
        """UPDATE marts.meds_events SET numeric_value = numeric_value * 1000 + 12345
        WHERE numeric_value IS NOT NULL AND subject_id IN
        (SELECT subject_id FROM marts.subject_splits WHERE split <> 'train')"""
    ).fetchone()[0]
    assert changed > 100
    refit = fit_vocabulary(c, TokenizerConfig())
    assert refit.to_dict() == vocab.to_dict() and refit.version == vocab.version
    c.execute(
        """UPDATE marts.meds_events SET numeric_value = numeric_value * 3 WHERE subject_id IN
        (SELECT subject_id FROM marts.subject_splits WHERE split = 'train')"""
    )
    assert fit_vocabulary(c, TokenizerConfig()).bins != vocab.bins
    c.close()


def test_per_unit_bins() -> None:
    c = duckdb.connect()
    c.execute("CREATE SCHEMA marts")
    c.execute("CREATE TABLE marts.subject_splits (subject_id BIGINT, split VARCHAR)")
    c.execute("INSERT INTO marts.subject_splits VALUES (1, 'train'), (2, 'held_out')")
    rows = [(1, f"2020-01-{d:02d}", "LOINC/X", float(d), "mg/dL") for d in range(1, 11)]
    rows += [(1, f"2020-02-{d:02d}", "LOINC/X", 100.0 * d, "umol/L") for d in range(1, 11)]
    rows += [(2, "2020-01-01", "LOINC/X", 5.0, "g/L")]  # held-out only unit: not fitted
    rows += [(1, "2020-01-01", "SNOMED/1", None, None)]
    ev = pd.DataFrame(rows, columns=["subject_id", "time", "code", "numeric_value", "unit"])
    ev["time"] = pd.to_datetime(ev["time"])
    ev["numeric_value"] = ev["numeric_value"].astype("float32")
    ev["event_type"] = np.where(ev["numeric_value"].notna(), "lab", "condition")
    ev["visit_id"] = None
    ev["text_value"] = None
    c.execute("CREATE TABLE marts.meds_events AS SELECT * FROM ev")
    v = fit_vocabulary(c, TokenizerConfig(n_bins=5))
    assert set(v.bins["LOINC/X"]) == {"mg/dL", "umol/L"}
    assert v.bin_index("LOINC/X", "mg/dL", 1.0) == 0 and v.bin_index("LOINC/X", "mg/dL", 10) == 4
    assert v.bin_index("LOINC/X", "umol/L", 100.0) == 0
    assert v.bin_index("LOINC/X", "umol/L", 1000.0) == 4
    assert v.bin_index("LOINC/X", "g/L", 5.0) is None
    # every train value became a bin token of its own unit; the plain code stays for the rest
    seq = tokenize_events(ev[ev.subject_id == 1], v)
    toks = v.decode(seq["input_ids"])
    bins = [t for t in toks if "_bin" in t]
    assert len(bins) == 20 and toks.count("LOINC/X_bin0") == 4 and toks.count("LOINC/X_bin4") == 4
    assert "SNOMED/1" in toks and "[UNK]" not in toks
    held = v.decode(tokenize_events(ev[ev.subject_id == 2], v)["input_ids"])
    assert "LOINC/X" in held  # unit without bins: the plain code, not dropped


# ------------------------------------------------------------------------------------------------
# Sequences
# ------------------------------------------------------------------------------------------------
def test_gap_tokens() -> None:
    assert [gap_token(d) for d in (0, 6, 7, 13.9, 27, 27.99, 28, 59, 60, 365, 365.5, 400)] == [
        "[W_0]",
        "[W_0]",
        "[W_1]",
        "[W_1]",
        "[W_3]",
        "[W_3]",
        "[M_0]",
        "[M_1]",
        "[M_2]",
        "[M_12]",
        "[LT]",
        "[LT]",
    ]
    t0 = datetime(2020, 1, 1, 8)
    times = [t0]
    for days in (6, 27, 28, 400):
        times.append(times[-1] + timedelta(days=days))
    rows = _static()
    for i, t in enumerate(times):
        rows += _visit(f"v{i}", t, [(t, "SNOMED/1", None, None, f"v{i}", "condition")])
    v = Vocabulary(
        ["SNOMED/1", "VISIT/ambulatory", "GENDER/female", "MEDS_BIRTH"], {}, TokenizerConfig()
    )
    seq = tokenize_events(_events(rows), v)
    toks = v.decode(seq["input_ids"])
    assert [t for t in toks if t in GAP_TOKENS] == ["[W_0]", "[W_3]", "[M_0]", "[LT]"]
    assert toks[:3] == ["[CLS]", "GENDER/female", "MEDS_BIRTH"]
    assert toks[3:8] == ["[VS]", "VISIT/ambulatory", "SNOMED/1", "[VE]", "[W_0]"]
    assert seq["visit_order"].tolist()[:9] == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert seq["visit_segment"].tolist()[:9] == [0, 0, 0, 1, 1, 1, 1, 0, 2]
    assert seq["token_type_ids"].tolist()[:8] == [1, 7, 7, 3, 4, 4, 3, 2]
    np.testing.assert_allclose(
        seq["time_weeks"][-1], (times[-1] - BIRTH).total_seconds() / 86400 / 7, rtol=1e-6
    )
    np.testing.assert_allclose(
        seq["age_years"][3], (t0 - BIRTH).total_seconds() / 86400 / 365.25, rtol=1e-5
    )
    # a cut inside a visit drops the events after it and its [VE]; the task prompt (the task
    # token, repeated) ends it
    rows2 = [*rows, (times[-1] + timedelta(hours=5), "SNOMED/2", None, None, "v4", "condition")]
    rows2[-2] = (times[-1] + timedelta(hours=6), *rows2[-2][1:])  # the visit now ends later
    cut = v.decode(
        tokenize_events(_events(rows2), v, prediction_time=times[-1], task="mortality_1m")[
            "input_ids"
        ]
    )
    assert cut[-7:] == ["[VS]", "VISIT/ambulatory", "SNOMED/1", *["[MOR_1M]"] * 4]
    # events without a visit: a pseudo-visit per time
    lone = [*_static(), (t0, "SNOMED/1", None, None, None, "condition")]
    assert v.decode(tokenize_events(_events(lone), v)["input_ids"])[3:] == [
        "[VS]",
        "SNOMED/1",
        "[VE]",
    ]


def test_single_patient_matches_batch_writer_and_row_order(con, vocab, written) -> None:
    pre = pq.read_table(written["pretrain"]).to_pandas()
    labels = pq.read_table(written["labels"]).to_pandas()
    assert len(pre) == 40 and set(pre["split"]) <= {"train", "tuning", "held_out"}
    assert (pre.length <= 2048).all() and (pre.length == 2048).any()  # truncated, [CLS] kept
    assert all(ids[0] == vocab.id("[CLS]") for ids in pre.input_ids)
    row = labels.iloc[len(labels) // 2]
    sid = int(row.subject_id)
    ev = con.execute("SELECT * FROM marts.meds_events WHERE subject_id = ?", [sid]).df()
    shuffled = ev.sample(frac=1.0, random_state=3)
    birth = con.execute(
        "SELECT birth_time FROM marts.subjects WHERE subject_id=?", [sid]
    ).fetchone()
    seq = tokenize_events(shuffled, vocab, birth_time=birth[0])
    want = pre[pre.subject_id == sid].iloc[0]
    for k in seq:
        np.testing.assert_array_equal(seq[k], np.asarray(want[k]), err_msg=k)
    cut = tokenize_events(
        ev, vocab, prediction_time=row.prediction_time, task=row.task, max_len=FULL
    )
    for k in cut:
        np.testing.assert_array_equal(cut[k], np.asarray(row[k]), err_msg=k)


def test_label_sequences_hold_no_future_event(con, vocab, written) -> None:
    """Every label row, checked against marts.meds_events directly: its event tokens are exactly
    the events at or before prediction_time, its [VE]s the visit ends (and pseudo-visits) then."""
    labels = pq.read_table(written["labels"]).to_pandas()
    expected = sum(
        con.execute(f"SELECT count(*) FROM marts.labels__{t}").fetchone()[0] for t in TASKS
    )
    assert len(labels) == expected > 100
    ve, n_types = vocab.id("[VE]"), (TokenType.CONCEPT, TokenType.LAB_BIN, TokenType.STATIC)
    rows = pd.DataFrame(
        {
            "task": labels.task,
            "subject_id": labels.subject_id,
            "prediction_time": labels.prediction_time,
            "n_event_tokens": [int(np.isin(t, n_types).sum()) for t in labels.token_type_ids],
            "n_ve": [int((np.asarray(i) == ve).sum()) for i in labels.input_ids],
            "length": labels.length,
            "last": [int(i[-1]) for i in labels.input_ids],
        }
    )
    check = con.execute(
        """
        SELECT r.*,
          count(*) FILTER (WHERE e.event_type <> 'visit_end') AS n_events,
          count(*) FILTER (WHERE e.event_type = 'visit_end') AS n_visit_ends,
          count(DISTINCT e.time) FILTER (WHERE e.visit_id IS NULL
              AND e.event_type NOT IN ('birth', 'demographic')) AS n_pseudo,
          (SELECT count(*) FROM marts.meds_events f WHERE f.subject_id = r.subject_id
              AND f.time > r.prediction_time) AS n_future
        FROM rows r LEFT JOIN marts.meds_events e
          ON e.subject_id = r.subject_id AND e.time <= r.prediction_time
        GROUP BY ALL
        """
    ).df()
    assert len(check) == len(rows)
    assert (check.length < FULL).all() and (check.length > 2048).any()  # untruncated
    assert (check.n_event_tokens == check.n_events).all()
    assert (check.n_ve == check.n_visit_ends + check.n_pseudo).all()
    assert (check.n_future > 0).mean() > 0.9  # the cut does cut
    task_ids = check.task.map(vocab.task_id)
    assert (check["last"] == task_ids).all()
    # and no token time is later than the prediction time
    for r in labels.itertuples():
        assert max(r.time_weeks[:-1]) <= r.time_weeks[-1] + 1e-3


def test_task_token_survives_truncation(con, vocab, tmp_path: Path) -> None:
    path = write_label_sequences(
        con, vocab, tmp_path / "end", ["los_1w", "lipoid_1y"], max_len=32, batch_size=7
    )
    t = pq.read_table(path).to_pandas()
    assert len(t) > 0 and (t.length <= 32).all() and (t.length == 32).mean() > 0.9
    cls = vocab.id("[CLS]")
    repeats = vocab.config.task_token_repeats
    assert repeats == 4
    for r in t.itertuples():
        assert r.input_ids[0] == cls
        assert list(r.input_ids[-repeats:]) == [vocab.task_id(r.task)] * repeats
        assert list(r.token_type_ids[-repeats:]) == [TokenType.TASK] * repeats
        assert vocab.task_id(r.task) not in list(r.input_ids[:-repeats])
    start = write_label_sequences(
        con, vocab, tmp_path / "start", ["los_1w"], max_len=32, task_token_position="start"
    )
    s = pq.read_table(start).to_pandas()
    task = vocab.id("[LOS_1W]")
    for r in s.itertuples():
        assert r.input_ids[0] == cls and list(r.input_ids[1 : 1 + repeats]) == [task] * repeats
        assert task not in list(r.input_ids[1 + repeats :])
    # the truncated history is the most recent part of the full one
    full = write_label_sequences(con, vocab, tmp_path / "full", ["los_1w"])
    f = pq.read_table(full).to_pandas()
    room = 32 - 1 - repeats
    for a, b in zip(s.itertuples(), f.itertuples(), strict=True):
        assert list(a.input_ids[1 + repeats :]) == list(b.input_ids[1:-repeats][-room:])


def test_task_token_repeats_config() -> None:
    assert TokenizerConfig().task_token_repeats == 4
    saved = TokenizerConfig().to_dict()
    assert TokenizerConfig.from_dict(saved).task_token_repeats == 4
    # vocabularies saved before the prompt had repeats wrote the task token once, had no such
    # key, and must still load under the version (content hash) they were saved with
    single = Vocabulary(["SNOMED/1"], {}, TokenizerConfig(task_token_repeats=1)).to_dict()
    assert "task_token_repeats" not in single["config"]
    assert Vocabulary.from_dict(single).config.task_token_repeats == 1
    assert Vocabulary.from_dict(single).version == single["version"]
    four = Vocabulary(["SNOMED/1"], {}, TokenizerConfig()).to_dict()
    assert Vocabulary.from_dict(four).config.task_token_repeats == 4
    assert four["version"] != single["version"]
    with pytest.raises(ValueError, match="task_token_repeats must be at least 1"):
        TokenizerConfig(task_token_repeats=0)


def test_batching_and_padding(written) -> None:
    ds = SequenceDataset(written["labels"], splits=["train"], tasks=["los_1w", "mortality_1m"])
    assert len(ds) > 0 and set(ds.tasks) <= {"los_1w", "mortality_1m"}
    loader = DataLoader(ds, batch_size=8, shuffle=False, collate_fn=collate_sequences)
    batch = next(iter(loader))
    lengths = torch.tensor([len(ds[i]["input_ids"]) for i in range(len(batch["labels"]))])
    assert batch["input_ids"].shape == (len(lengths), int(lengths.max()))
    assert batch["input_ids"].dtype == torch.long and batch["time_weeks"].dtype == torch.float32
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["input_ids"][pad] == 0).all()
    assert (batch["token_type_ids"][pad] == 0).all()
    assert (batch["input_ids"][~pad] != 0).all()
    assert batch["labels"].shape == (len(lengths),) and len(batch["task"]) == len(lengths)
    pre = SequenceDataset(written["pretrain"])
    assert len(pre) == 40 and "labels" not in collate_sequences([pre[0], pre[1]])


def test_label_sample_enriches_train_only_and_keeps_evaluation_prevalence() -> None:
    """A positive share shapes the train rows alone: tuning and held_out rows are the same
    uniform draw with or without it, so their prevalence stays the population's."""
    db = duckdb.connect()
    db.execute("CREATE SCHEMA marts")
    db.execute(
        "CREATE TABLE marts.subject_splits AS SELECT i::BIGINT AS subject_id, "
        "CASE WHEN i < 100 THEN 'train' WHEN i < 200 THEN 'tuning' ELSE 'held_out' END AS split "
        "FROM range(300) t(i)"
    )
    labels = (
        "SELECT 'hypertension_1y' AS task, i::BIGINT AS subject_id, "
        "TIMESTAMP '2020-01-01' AS prediction_time, i % 10 = 0 AS boolean_value "
        "FROM range(300) t(i)"
    )
    caps = {"train": 50, "tuning": 40, "held_out": 50}

    def drawn(share: float | None) -> dict[str, set[int]]:
        sample = LabelSample(caps, share).sql(labels, "marts")
        rows = db.execute(
            f"SELECT split, subject_id, boolean_value FROM ({sample}) "
            "JOIN marts.subject_splits USING (subject_id)"
        ).fetchall()
        out: dict[str, set[int]] = {}
        for split, subject, positive in rows:
            out.setdefault(split, set()).add(subject)
            out.setdefault(f"{split}+", set()).update([subject] if positive else [])
        return out

    enriched, natural = drawn(0.3), drawn(None)
    # train: all 10 positives (under the 15 that 30% of 50 allows), negatives fill the cap
    assert len(enriched["train"]) == 50 and len(enriched["train+"]) == 10
    for split in ("tuning", "held_out"):
        assert len(enriched[split]) == caps[split]
        assert enriched[split] == natural[split]
        assert enriched[f"{split}+"] == natural.get(f"{split}+", set())


def test_label_sample_caps_per_task_and_split(con, vocab, tmp_path: Path) -> None:
    tasks = ["hypertension_1y", "readmission_1m"]
    everything = (
        con.execute(
            """SELECT l.task, sp.split, count(*) AS n,
            count(*) FILTER (WHERE l.boolean_value) AS pos
        FROM (SELECT 'hypertension_1y' AS task, * FROM marts.labels__hypertension_1y
              UNION ALL SELECT 'readmission_1m', * FROM marts.labels__readmission_1m) l
        JOIN marts.subject_splits sp USING (subject_id) GROUP BY ALL"""
        )
        .df()
        .set_index(["task", "split"])
    )
    sample = LabelSample({"train": 20, "tuning": 5}, train_positive_share=0.5, seed=3)
    path = write_label_sequences(con, vocab, tmp_path / "a", tasks, sample=sample, max_len=64)
    got = pq.read_table(path, columns=["task", "split", "label"]).to_pandas()
    counts = got.groupby(["task", "split"]).size()
    positives = got[got.label].groupby(["task", "split"]).size()
    for (task, split), row in everything.iterrows():
        n = int(counts.get((task, split), 0))
        if split == "held_out":  # not capped: kept whole
            assert n == row.n
        elif split == "tuning":
            assert n == min(5, row.n)
        else:  # train: positives first up to half the cap, negatives fill the rest
            want_pos = min(int(row.pos), 10)
            assert int(positives.get((task, split), 0)) == want_pos
            assert n == min(20, want_pos + int(row.n - row.pos))
    again = write_label_sequences(con, vocab, tmp_path / "b", tasks, sample=sample, max_len=64)
    assert pq.read_table(again).equals(pq.read_table(path))  # deterministic
