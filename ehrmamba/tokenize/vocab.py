"""The vocabulary: special, time-gap, task and concept tokens, numeric bins and their config.

Fitted on the TRAIN split only (code counts and per (code, unit) quantile bins), with SQL
aggregates in DuckDB so that no cohort-sized data is held in Python. Saved as one versioned JSON
artifact whose ``version`` is a hash of its content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

FORMAT = "ehrmamba.vocabulary/1"

PAD, UNK, MASK, CLS, VS, VE, REG = "[PAD]", "[UNK]", "[MASK]", "[CLS]", "[VS]", "[VE]", "[REG]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, MASK, CLS, VS, VE, REG)
WEEK_TOKENS: tuple[str, ...] = tuple(f"[W_{i}]" for i in range(4))
MONTH_TOKENS: tuple[str, ...] = tuple(f"[M_{i}]" for i in range(13))
LONG_TERM = "[LT]"
GAP_TOKENS: tuple[str, ...] = (*WEEK_TOKENS, *MONTH_TOKENS, LONG_TERM)

DEFAULT_TASKS: tuple[str, ...] = (
    "mortality_1m",
    "los_1w",
    "readmission_1m",
    "hypertension_1y",
    "fluid_electrolyte_1y",
    "lipoid_1y",
)
DEFAULT_TASK_TOKENS: dict[str, str] = {
    "mortality_1m": "[MOR_1M]",
    "los_1w": "[LOS_1W]",
    "readmission_1m": "[REA_1M]",
    "hypertension_1y": "[C0]",
    "fluid_electrolyte_1y": "[C1]",
    "lipoid_1y": "[C2]",
}

# Events placed after [CLS], outside any visit (demographics at birth).
DEFAULT_STATIC_EVENT_TYPES: tuple[str, ...] = ("birth", "demographic")
DEFAULT_STATIC_CODE_PREFIXES: tuple[str, ...] = ("MEDS_BIRTH", "GENDER/")
VISIT_END_EVENT_TYPE = "visit_end"
VISIT_END_CODE_PREFIX = "VISIT_END/"


class TokenType:
    """Token type ids (small int enum, stored as int8)."""

    PAD = 0
    SPECIAL = 1  # [CLS] [MASK] [REG] [UNK] as a special
    GAP = 2  # [W_k] [M_k] [LT]
    VISIT = 3  # [VS] [VE]
    CONCEPT = 4  # a code (or [UNK] for a rare one)
    LAB_BIN = 5  # CODE_bin{k}
    TASK = 6  # task token
    STATIC = 7  # demographic token after [CLS]


def gap_token(days: float) -> str:
    """Time-gap token between two visits: [W_0..3] under 28 days (weeks = days // 7),
    [M_0..12] from 28 to 365 days (months = days // 30, capped at 12), [LT] beyond."""
    days = max(float(days), 0.0)
    if days < 28:
        return f"[W_{min(int(days // 7), 3)}]"
    if days <= 365:
        return f"[M_{min(int(days // 30), 12)}]"
    return LONG_TERM


def task_token_name(task: str, mapping: dict[str, str]) -> str:
    return mapping.get(task, f"[TASK_{task}]")


def bin_token(code: str, k: int) -> str:
    return f"{code}_bin{k}"


@dataclass
class TokenizerConfig:
    """Everything that decides the tokens; saved inside the vocabulary artifact."""

    n_bins: int = 5
    min_count: int = 1
    max_len: int = 2048
    task_token_position: Literal["end", "start"] = "end"
    # the task token written this many times in a row: each copy is one more step of
    # task-conditioned computation after the shared history (see BENCHMARKS.md, MTF)
    task_token_repeats: int = 4
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    task_tokens: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TASK_TOKENS))
    static_event_types: list[str] = field(default_factory=lambda: list(DEFAULT_STATIC_EVENT_TYPES))
    static_code_prefixes: list[str] = field(
        default_factory=lambda: list(DEFAULT_STATIC_CODE_PREFIXES)
    )
    train_split: str = "train"

    def __post_init__(self) -> None:
        if self.task_token_position not in ("end", "start"):
            raise ValueError("task_token_position must be 'end' or 'start'")
        if self.task_token_repeats < 1:
            raise ValueError("task_token_repeats must be at least 1")
        if self.n_bins < 1 or self.min_count < 1 or self.max_len < 4:
            raise ValueError("n_bins >= 1, min_count >= 1 and max_len >= 4 are required")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["task_token_repeats"] == 1:
            # vocabularies saved before repeats existed wrote the task token once and have no
            # such key: leaving it out keeps their content hash, so they still load
            del d["task_token_repeats"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return cls(**{"task_token_repeats": 1, **d})


class Vocabulary:
    """Token <-> id, numeric bins per (code, unit), and the config they were made with."""

    def __init__(
        self,
        concept_tokens: list[str],
        bins: dict[str, dict[str, list[float]]],
        config: TokenizerConfig,
        code_counts: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.bins = {
            c: {u: [float(x) for x in e] for u, e in sorted(us.items())}
            for c, us in sorted(bins.items())
        }
        self.code_counts = dict(sorted((code_counts or {}).items()))
        task_toks = [task_token_name(t, config.task_tokens) for t in config.tasks]
        fixed = [*SPECIAL_TOKENS, *GAP_TOKENS, *dict.fromkeys(task_toks)]
        concepts = sorted(set(concept_tokens) - set(fixed))
        self.tokens: list[str] = [*fixed, *concepts]
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        self._edges = {
            (c, u): np.asarray(e, dtype=np.float64)
            for c, us in self.bins.items()
            for u, e in us.items()
        }
        self.token_types = np.full(len(self.tokens), TokenType.CONCEPT, dtype=np.int8)
        bin_toks = {bin_token(c, k) for c in self.bins for k in range(config.n_bins)}
        for i, tok in enumerate(self.tokens):
            if tok == PAD:
                self.token_types[i] = TokenType.PAD
            elif tok in (VS, VE):
                self.token_types[i] = TokenType.VISIT
            elif tok in GAP_TOKENS:
                self.token_types[i] = TokenType.GAP
            elif tok == UNK:
                self.token_types[i] = TokenType.CONCEPT
            elif tok in SPECIAL_TOKENS:
                self.token_types[i] = TokenType.SPECIAL
            elif tok in task_toks:
                self.token_types[i] = TokenType.TASK
            elif tok in bin_toks:
                self.token_types[i] = TokenType.LAB_BIN
        self.version = self._hash()

    # ---------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self.token_to_id[UNK]

    def id(self, token: str) -> int:
        return self.token_to_id.get(token, self.unk_id)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def task_token(self, task: str) -> str:
        return task_token_name(task, self.config.task_tokens)

    def task_id(self, task: str) -> int:
        tok = self.task_token(task)
        if tok not in self.token_to_id:
            raise KeyError(f"task {task!r} ({tok}) is not in this vocabulary's tasks")
        return self.token_to_id[tok]

    def bin_index(self, code: str, unit: str | None, value: float) -> int | None:
        """Quantile bin (0..n_bins-1) of ``value`` within (code, unit); None when not fitted."""
        edges = self._edges.get((code, unit or ""))
        if edges is None or value is None or not np.isfinite(value):
            return None
        return int(np.searchsorted(edges, np.float64(np.float32(value)), side="right"))

    def token_type(self, token_id: int) -> int:
        return int(self.token_types[token_id])

    # ---------------------------------------------------------------- artifact
    def _content(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "tokens": self.tokens,
            "bins": self.bins,
            "code_counts": self.code_counts,
        }

    def _hash(self) -> str:
        blob = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self._content()}

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), sort_keys=True, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a vocabulary artifact of format {FORMAT}: {d.get('format')}")
        config = TokenizerConfig.from_dict(d["config"])
        vocab = cls(d["tokens"], d["bins"], config, d.get("code_counts"))
        if vocab.tokens != d["tokens"]:
            raise ValueError("vocabulary tokens are not in canonical order")
        if d.get("version") not in (None, vocab.version):
            raise ValueError(f"vocabulary version {d['version']} != content hash {vocab.version}")
        return vocab

    @classmethod
    def load(cls, path: Path | str) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))


# -------------------------------------------------------------------- fitting
def _static_sql(config: TokenizerConfig) -> str:
    types = ", ".join(f"'{t}'" for t in config.static_event_types) or "NULL"
    prefixes = " OR ".join(f"starts_with(code, '{p}')" for p in config.static_code_prefixes)
    return f"(event_type IN ({types}){' OR ' + prefixes if prefixes else ''})"


def fit_vocabulary(
    con: duckdb.DuckDBPyConnection,
    config: TokenizerConfig | None = None,
    *,
    schema: str = "marts",
) -> Vocabulary:
    """Count codes and fit per (code, unit) quantile bins on the TRAIN split only."""
    config = config or TokenizerConfig()
    train = f"SELECT subject_id FROM {schema}.subject_splits WHERE split = '{config.train_split}'"
    events = (
        f"SELECT e.* FROM {schema}.meds_events e WHERE e.subject_id IN ({train})"
        f" AND coalesce(e.event_type, '') <> '{VISIT_END_EVENT_TYPE}'"
        f" AND NOT starts_with(e.code, '{VISIT_END_CODE_PREFIX}')"
    )
    counts = dict(
        con.execute(f"SELECT code, count(*) FROM ({events}) GROUP BY code ORDER BY code").fetchall()
    )
    kept = {c for c, n in counts.items() if n >= config.min_count}
    qs = [k / config.n_bins for k in range(1, config.n_bins)]
    rows = con.execute(
        f"""
        SELECT code, coalesce(unit, '') AS unit, count(*) AS n,
               quantile_cont(CAST(numeric_value AS DOUBLE), {qs!r}) AS edges
        FROM ({events})
        WHERE numeric_value IS NOT NULL AND NOT isnan(numeric_value)
          AND NOT {_static_sql(config)}
        GROUP BY ALL ORDER BY code, unit
        """
        if qs
        else f"""
        SELECT code, coalesce(unit, '') AS unit, count(*) AS n, [] AS edges
        FROM ({events}) WHERE numeric_value IS NOT NULL AND NOT isnan(numeric_value)
          AND NOT {_static_sql(config)} GROUP BY ALL ORDER BY code, unit
        """
    ).fetchall()
    bins: dict[str, dict[str, list[float]]] = {}
    for code, unit, n, edges in rows:
        if code in kept and n >= config.min_count:
            bins.setdefault(code, {})[unit] = [float(x) for x in edges]
    concept = set(kept)
    for code in bins:
        concept.update(bin_token(code, k) for k in range(config.n_bins))
    return Vocabulary(sorted(concept), bins, config, {c: int(n) for c, n in counts.items()})
