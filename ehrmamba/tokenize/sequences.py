"""Events -> token sequences (one code path for the batch writers and for one patient).

Layout per subject: ``[CLS]``, static tokens (demographics at birth), then per visit
``[gap] [VS] tokens... [VE]`` in visit start order (no gap before the first visit). Events
without a visit form one pseudo-visit per distinct time, closed by a synthetic ``[VE]``. A
real visit's ``[VE]`` is its VISIT_END event, at that event's time, so a cut at a prediction
time drops it when the visit ends later.

Cutting at a prediction time keeps exactly the tokens whose time is <= the cut: events by their
own time, visit markers and gap tokens by their visit's start. The gap before visit g is
``start(g) - (last event of visit g-1 at or before start(g))``, so it never depends on data
after the cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrmamba.tokenize.vocab import (
    CLS,
    VE,
    VISIT_END_CODE_PREFIX,
    VISIT_END_EVENT_TYPE,
    VS,
    TokenType,
    Vocabulary,
    bin_token,
    gap_token,
)

NS_PER_DAY = 86_400 * 10**9
NS_PER_WEEK = 7 * NS_PER_DAY
NS_PER_YEAR = 365.25 * NS_PER_DAY

FEATURES = (
    "input_ids",
    "token_type_ids",
    "time_weeks",
    "age_years",
    "visit_order",
    "visit_segment",
)
_DTYPES = {
    "input_ids": np.int32,
    "token_type_ids": np.int8,
    "time_weeks": np.float32,
    "age_years": np.float32,
    "visit_order": np.int32,
    "visit_segment": np.int8,
}
SEQUENCE_LIST_TYPES = {
    "input_ids": pa.list_(pa.int32()),
    "token_type_ids": pa.list_(pa.int8()),
    "time_weeks": pa.list_(pa.float32()),
    "age_years": pa.list_(pa.float32()),
    "visit_order": pa.list_(pa.int32()),
    "visit_segment": pa.list_(pa.int8()),
}
EVENT_COLUMNS = (
    "subject_id",
    "time",
    "code",
    "numeric_value",
    "text_value",
    "unit",
    "visit_id",
    "event_type",
)

# kinds in a subject layout
_CLS, _STATIC, _GAP, _VS, _EVENT, _PVE = range(6)


# ------------------------------------------------------------------ encoding events (vectorized)
def _as_frame(events: pd.DataFrame | pa.Table) -> pd.DataFrame:
    df = events.to_pandas() if isinstance(events, pa.Table) else events.copy()
    for col in EVENT_COLUMNS:
        if col not in df.columns:
            df[col] = 0 if col == "subject_id" else None
    df = df.loc[:, list(EVENT_COLUMNS)].reset_index(drop=True)
    df["time"] = pd.to_datetime(df["time"], utc=False)
    if getattr(df["time"].dt, "tz", None) is not None:
        df["time"] = df["time"].dt.tz_convert("UTC").dt.tz_localize(None)
    return df


def encode_events(events: pd.DataFrame | pa.Table, vocab: Vocabulary) -> pd.DataFrame:
    """Per event: token id and type, its visit group, and the keys that order it.

    Sorted by (subject, static first, visit start, visit key, time, priority, code, value, unit,
    text): the order never depends on the input's row order.
    """
    cfg = vocab.config
    df = _as_frame(events)
    code = df["code"].astype(str)
    etype = df["event_type"].astype("string").fillna("")
    is_ve = (etype == VISIT_END_EVENT_TYPE) | code.str.startswith(VISIT_END_CODE_PREFIX)
    is_static = etype.isin(cfg.static_event_types)
    for prefix in cfg.static_code_prefixes:
        is_static |= code.str.startswith(prefix)
    is_static &= ~is_ve
    # float32 like the warehouse, so a served value bins like the same value stored there
    nv = pd.to_numeric(df["numeric_value"], errors="coerce").astype(np.float32).astype(np.float64)
    unit = df["unit"].astype("string").fillna("")
    # tokens are written into a NumPy object array: item assignment into pandas' Arrow-backed
    # strings copies the column each time (most of this function's cost on a served record)
    token = code.to_numpy(dtype=object, copy=True)
    numeric = np.flatnonzero(np.isfinite(nv.to_numpy()) & ~is_static.to_numpy())
    if len(numeric):
        sub = pd.DataFrame(
            {"code": token[numeric], "unit": unit.to_numpy(dtype=object)[numeric]}, copy=False
        )
        values = nv.to_numpy()[numeric]
        for (c, u), rows in sub.groupby(["code", "unit"], sort=False).indices.items():
            edges = vocab._edges.get((c, u))
            if edges is None:
                continue
            ks = np.searchsorted(edges, values[rows], side="right")
            token[numeric[rows]] = [bin_token(c, int(k)) for k in ks]
    tok = pd.Series(token, index=df.index).map(vocab.token_to_id).fillna(vocab.unk_id)
    tok = tok.astype(np.int32)
    tok[is_ve] = vocab.token_to_id[VE]
    ttype = pd.Series(vocab.token_types[tok.to_numpy()], index=df.index)
    ttype[is_static] = TokenType.STATIC
    t = df["time"].astype("datetime64[ns]").astype(np.int64)
    visit = df["visit_id"].astype("string")
    pseudo = visit.isna() & ~is_static
    gkey = visit.fillna("")
    gkey[pseudo] = "\x00" + t[pseudo].astype(str)
    prio = np.where(etype.eq("visit_start") | code.str.startswith("VISIT/"), 0, 1)
    prio = np.where(is_ve, 2, prio)
    out = pd.DataFrame(
        {
            "subject_id": df["subject_id"].astype(np.int64),
            "t": t,
            "tok": tok,
            "ttype": ttype.astype(np.int8),
            "static": is_static.astype(bool),
            "pseudo": pseudo.astype(bool),
            "gkey": gkey.astype(str),
            "prio": prio.astype(np.int8),
            "code": code,
            "nv": nv,
            "unit": unit.astype(str),
            "text": df["text_value"].astype("string").fillna("").astype(str),
        }
    )
    out["gstart"] = out.groupby(["subject_id", "static", "gkey"])["t"].transform("min")
    out["nonstatic"] = ~out["static"]
    keys = ["subject_id", "nonstatic", "gstart", "gkey", "t", "prio", "code", "nv", "unit", "text"]
    return out.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


# ------------------------------------------------------------------ one subject's layout
@dataclass
class SubjectLayout:
    """The full token layout of one subject; a cut is a mask over it."""

    subject_id: int
    tok: np.ndarray  # int32
    ttype: np.ndarray  # int8
    t: np.ndarray  # int64 ns, the token's time (markers: their visit's start)
    vorder: np.ndarray  # int32
    vseg: np.ndarray  # int8
    first_t: int
    birth_t: int | None

    @classmethod
    def build(cls, enc: pd.DataFrame, vocab: Vocabulary, birth_t: int | None) -> SubjectLayout:
        """``enc``: one subject's rows of :func:`encode_events`, in its order."""
        sid = int(enc["subject_id"].iloc[0]) if len(enc) else 0
        t = enc["t"].to_numpy()
        tok = enc["tok"].to_numpy()
        ttype = enc["ttype"].to_numpy()
        static = enc["static"].to_numpy()
        n_static = int(static.sum())  # static rows come first
        first_t = int(t.min()) if len(t) else 0
        if birth_t is None:
            births = enc.loc[enc["code"] == "MEDS_BIRTH", "t"]
            birth_t = int(births.min()) if len(births) else None
        gkey = enc["gkey"].to_numpy()[n_static:]
        pseudo = enc["pseudo"].to_numpy()[n_static:]
        bounds = np.flatnonzero(np.r_[True, gkey[1:] != gkey[:-1]]) if len(gkey) else []
        bounds = [*map(int, bounds), len(gkey)]
        cls_id, vs_id, ve_id = (vocab.token_to_id[x] for x in (CLS, VS, VE))
        p_tok = [np.array([cls_id]), tok[:n_static]]
        p_type = [np.array([TokenType.SPECIAL]), ttype[:n_static]]
        p_t = [np.array([first_t]), t[:n_static]]
        p_vo = [np.array([0]), np.zeros(n_static)]
        p_seg = [np.array([0]), np.zeros(n_static)]
        ev_t = t[n_static:]
        prev_times: np.ndarray | None = None
        for g in range(len(bounds) - 1):
            a, b = bounds[g], bounds[g + 1]
            gt = ev_t[a:b]
            start = int(gt[0])
            seg = 1 if g % 2 == 0 else 2
            if prev_times is not None:
                before = prev_times[prev_times <= start]
                last = int(before.max()) if len(before) else start
                gap_id = vocab.token_to_id[gap_token((start - last) / NS_PER_DAY)]
                p_tok.append(np.array([gap_id]))
                p_type.append(np.array([TokenType.GAP]))
                p_t.append(np.array([start]))
                p_vo.append(np.array([g + 1]))
                p_seg.append(np.array([0]))
            close = bool(pseudo[a])
            n = b - a + 1 + int(close)
            p_tok.append(np.r_[vs_id, tok[n_static + a : n_static + b], [ve_id] if close else []])
            p_type.append(
                np.r_[
                    TokenType.VISIT,
                    ttype[n_static + a : n_static + b],
                    [TokenType.VISIT] if close else [],
                ]
            )
            p_t.append(np.r_[start, gt, [start] if close else []])
            p_vo.append(np.full(n, g + 1))
            p_seg.append(np.full(n, seg))
            prev_times = gt
        return cls(
            subject_id=sid,
            tok=np.concatenate(p_tok).astype(np.int32),
            ttype=np.concatenate(p_type).astype(np.int8),
            t=np.concatenate(p_t).astype(np.int64),
            vorder=np.concatenate(p_vo).astype(np.int32),
            vseg=np.concatenate(p_seg).astype(np.int8),
            first_t=first_t,
            birth_t=birth_t,
        )

    def sequence(
        self,
        vocab: Vocabulary,
        *,
        cut: int | None = None,
        task: str | None = None,
        max_len: int | None = None,
        task_token_position: str | None = None,
        with_times: bool = False,
    ) -> dict[str, np.ndarray]:
        """Token features, cut at ``cut`` (ns, inclusive), with the task token, truncated.

        ``with_times`` adds ``time_ns``, each token's absolute time (to name events)."""
        cfg = vocab.config
        max_len = max_len or cfg.max_len
        position = task_token_position or cfg.task_token_position
        idx = np.arange(len(self.tok)) if cut is None else np.flatnonzero(self.t <= cut)
        idx = idx[idx > 0]  # [CLS] is added back below
        repeats = cfg.task_token_repeats if task is not None else 0
        keep = max_len - 1 - repeats
        idx = idx[-keep:] if keep > 0 else idx[:0]
        tok = [np.array([self.tok[0]]), self.tok[idx]]
        ttype = [np.array([TokenType.SPECIAL]), self.ttype[idx]]
        t = [np.array([self.first_t]), self.t[idx]]
        vo = [np.array([0]), self.vorder[idx]]
        seg = [np.array([0]), self.vseg[idx]]
        if task is not None:
            task_t = cut if cut is not None else int(self.t.max())
            task_visit = 0 if position == "start" or not len(idx) else self.vorder[idx[-1]]
            item = (
                np.full(repeats, vocab.task_id(task)),
                np.full(repeats, TokenType.TASK),
                np.full(repeats, task_t),
                np.full(repeats, task_visit),
                np.zeros(repeats, dtype=np.int64),
            )
            at = 1 if position == "start" else len(tok)
            for parts, x in zip((tok, ttype, t, vo, seg), item, strict=True):
                parts.insert(at, x)
        times = np.concatenate(t).astype(np.int64)
        birth = self.birth_t
        extra = {"time_ns": times} if with_times else {}
        return extra | {
            "input_ids": np.concatenate(tok).astype(np.int32),
            "token_type_ids": np.concatenate(ttype).astype(np.int8),
            "time_weeks": ((times - self.first_t) / NS_PER_WEEK).astype(np.float32),
            "age_years": (
                ((times - birth) / NS_PER_YEAR) if birth is not None else np.zeros(len(times))
            ).astype(np.float32),
            "visit_order": np.concatenate(vo).astype(np.int32),
            "visit_segment": np.concatenate(seg).astype(np.int8),
        }


def _to_ns(ts: Any) -> int:
    return int(pd.Timestamp(ts).as_unit("ns").value) if ts is not None else None  # type: ignore[return-value]


def tokenize_events(
    events: pd.DataFrame | pa.Table,
    vocab: Vocabulary,
    *,
    birth_time: datetime | None = None,
    prediction_time: datetime | None = None,
    task: str | None = None,
    max_len: int | None = None,
    task_token_position: str | None = None,
) -> dict[str, np.ndarray]:
    """Tokenize ONE patient's events (MEDS columns; ``event_type``/``visit_id``/``unit``
    optional), e.g. from a FHIR Bundle at serving time. Same code path as the batch writers.
    ``birth_time`` defaults to the MEDS_BIRTH event; ``prediction_time`` cuts (inclusive)."""
    enc = encode_events(events, vocab)
    if enc["subject_id"].nunique() > 1:
        raise ValueError("tokenize_events takes one patient's events")
    layout = SubjectLayout.build(enc, vocab, _to_ns(birth_time) if birth_time else None)
    cut = _to_ns(prediction_time) if prediction_time is not None else None
    return layout.sequence(
        vocab, cut=cut, task=task, max_len=max_len, task_token_position=task_token_position
    )


# ------------------------------------------------------------------ batch writers
def _subject_batches(
    con: duckdb.DuckDBPyConnection, schema: str, splits: Sequence[str] | None, batch_size: int
) -> Iterator[pd.DataFrame]:
    where = ""
    if splits:
        where = "WHERE sp.split IN (" + ", ".join(f"'{s}'" for s in splits) + ")"
    subjects = con.execute(
        f"""SELECT s.subject_id, s.birth_time, coalesce(sp.split, 'unknown') AS split
        FROM {schema}.subjects s LEFT JOIN {schema}.subject_splits sp USING (subject_id)
        {where} ORDER BY s.subject_id"""
    ).df()
    for i in range(0, len(subjects), batch_size):
        yield subjects.iloc[i : i + batch_size].reset_index(drop=True)


def _layouts(
    con: duckdb.DuckDBPyConnection, vocab: Vocabulary, schema: str, subjects: pd.DataFrame
) -> dict[int, SubjectLayout]:
    ids = subjects["subject_id"].astype(np.int64).tolist()
    cols = ", ".join(EVENT_COLUMNS)
    events = con.execute(
        f"SELECT {cols} FROM {schema}.meds_events WHERE subject_id IN (SELECT unnest(?::BIGINT[]))",
        [ids],
    ).df()
    enc = encode_events(events, vocab)
    births = dict(zip(subjects["subject_id"].astype(np.int64), subjects["birth_time"], strict=True))
    sid = enc["subject_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1], True]) if len(sid) else [0]
    out = {}
    for a, b in itertools.pairwise(bounds):
        s = int(sid[a])
        birth = births.get(s)
        birth_ns = _to_ns(birth) if birth is not None and not pd.isna(birth) else None
        out[s] = SubjectLayout.build(enc.iloc[a:b], vocab, birth_ns)
    return out


def load_layouts(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    subject_ids: Sequence[int],
    *,
    schema: str = "marts",
) -> dict[int, SubjectLayout]:
    """Token layouts of some subjects straight from the warehouse (forecasting, explanations)."""
    subjects = con.execute(
        f"SELECT subject_id, birth_time FROM {schema}.subjects "
        "WHERE subject_id IN (SELECT unnest(?::BIGINT[])) ORDER BY subject_id",
        [[int(s) for s in subject_ids]],
    ).df()
    return _layouts(con, vocab, schema, subjects)


def _write_rows(writer_box: list, path: Path, rows: list[dict], schema: pa.Schema) -> None:
    if not rows:
        return
    table = pa.Table.from_pylist(rows, schema=schema)
    if not writer_box:
        writer_box.append(pq.ParquetWriter(path, schema))
    writer_box[0].write_table(table)


def _row_features(seq: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: seq[k].tolist() for k in FEATURES} | {"length": len(seq["input_ids"])}


PRETRAIN_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("split", pa.string()), ("length", pa.int32())]
    + [(k, v) for k, v in SEQUENCE_LIST_TYPES.items()]
)
LABEL_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("label", pa.bool_()),
        ("split", pa.string()),
        ("length", pa.int32()),
    ]
    + [(k, v) for k, v in SEQUENCE_LIST_TYPES.items()]
)


def write_pretraining_sequences(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    out_dir: Path | str,
    *,
    schema: str = "marts",
    splits: Sequence[str] | None = None,
    batch_size: int = 512,
    max_len: int | None = None,
) -> Path:
    """One row per subject -> ``out_dir/pretraining.parquet`` (a row group per batch)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pretraining.parquet"
    box: list = []
    try:
        for subjects in _subject_batches(con, schema, splits, batch_size):
            layouts = _layouts(con, vocab, schema, subjects)
            rows = []
            for sid, split in zip(subjects["subject_id"], subjects["split"], strict=True):
                if int(sid) not in layouts:
                    continue
                seq = layouts[int(sid)].sequence(vocab, max_len=max_len)
                rows.append({"subject_id": int(sid), "split": split, **_row_features(seq)})
            _write_rows(box, path, rows, PRETRAIN_SCHEMA)
    finally:
        if box:
            box[0].close()
    if not box:
        pq.write_table(PRETRAIN_SCHEMA.empty_table(), path)
    return path


@dataclass(frozen=True)
class LabelSample:
    """A deterministic cap on the labels per (task, split), so finetuning and evaluation fit a
    compute budget. ``tuning`` and ``held_out`` are sampled uniformly (their prevalence stays
    what it is: metrics must describe the real population); ``train`` may over-represent
    positives up to ``train_positive_share`` (a per-task balancing option; None keeps the
    natural share). The choice is a hash of (seed, task, subject, time): re-runs pick the same
    rows."""

    max_per_task: dict[str, int]  # split -> cap; a split not named is kept whole
    train_positive_share: float | None = None
    seed: int = 0

    def sql(self, labels_sql: str, schema: str) -> str:
        caps = ", ".join(f"('{k}', {int(v)})" for k, v in self.max_per_task.items())
        share = self.train_positive_share
        positive_cap = (
            f"CASE WHEN split = 'train' AND boolean_value THEN floor(cap * {float(share)}) "
            f"WHEN split = 'train' THEN cap - least(n_pos, floor(cap * {float(share)})) "
            "ELSE cap END"
            if share is not None
            else "cap"
        )
        # only train is drawn per class; tuning and held_out are drawn uniformly, whatever
        # the share, so that their prevalence (and every metric that depends on it) holds
        group = (
            "task, split, CASE WHEN split = 'train' THEN boolean_value END"
            if share is not None
            else "task, split"
        )
        return f"""
        WITH l AS (
            SELECT l.*, coalesce(sp.split, 'unknown') AS split,
                hash({int(self.seed)}, l.task, l.subject_id, l.prediction_time) AS h
            FROM ({labels_sql}) l LEFT JOIN {schema}.subject_splits sp USING (subject_id)
        ), c AS (
            SELECT l.*, caps.cap,
                count(*) FILTER (WHERE boolean_value) OVER (PARTITION BY task, split) AS n_pos,
                row_number() OVER (PARTITION BY {group} ORDER BY h) AS rn
            FROM l LEFT JOIN (VALUES {caps or "('', 0)"}) caps(split, cap) USING (split)
        )
        SELECT task, subject_id, prediction_time, boolean_value FROM c
        WHERE cap IS NULL OR rn <= {positive_cap}
        """


def write_label_sequences(
    con: duckdb.DuckDBPyConnection,
    vocab: Vocabulary,
    out_dir: Path | str,
    tasks: Sequence[str] | None = None,
    *,
    schema: str = "marts",
    splits: Sequence[str] | None = None,
    batch_size: int = 512,
    max_len: int | None = None,
    task_token_position: str | None = None,
    sample: LabelSample | None = None,
) -> Path:
    """One row per (task, subject, prediction_time) of ``<schema>.labels__<task>``: the history
    cut at prediction_time (inclusive) plus the task token -> ``out_dir/labels.parquet``.

    ``sample`` caps the labels kept per (task, split); see :class:`LabelSample`."""
    tasks = list(tasks or vocab.config.tasks)
    for task in tasks:
        vocab.task_id(task)  # fail early on an unknown task
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "labels.parquet"
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS task, subject_id, prediction_time, boolean_value "
        f"FROM {schema}.labels__{t}"
        for t in tasks
    )
    if sample is not None:
        union = sample.sql(union, schema)
    box: list = []
    try:
        for subjects in _subject_batches(con, schema, splits, batch_size):
            ids = subjects["subject_id"].astype(np.int64).tolist()
            labels = con.execute(
                f"SELECT * FROM ({union}) WHERE subject_id IN (SELECT unnest(?::BIGINT[])) "
                "ORDER BY task, subject_id, prediction_time",
                [ids],
            ).df()
            if labels.empty:
                continue
            layouts = _layouts(con, vocab, schema, subjects)
            split_of = dict(
                zip(subjects["subject_id"].astype(np.int64), subjects["split"], strict=True)
            )
            rows = []
            for row in labels.itertuples(index=False):
                sid = int(row.subject_id)
                layout = layouts.get(sid)
                if layout is None:
                    continue
                seq = layout.sequence(
                    vocab,
                    cut=_to_ns(row.prediction_time),
                    task=row.task,
                    max_len=max_len,
                    task_token_position=task_token_position,
                )
                rows.append(
                    {
                        "task": row.task,
                        "subject_id": sid,
                        "prediction_time": pd.Timestamp(row.prediction_time).to_pydatetime(),
                        "label": bool(row.boolean_value),
                        "split": split_of[sid],
                        **_row_features(seq),
                    }
                )
            _write_rows(box, path, rows, LABEL_SCHEMA)
    finally:
        if box:
            box[0].close()
    if not box:
        pq.write_table(LABEL_SCHEMA.empty_table(), path)
    return path
