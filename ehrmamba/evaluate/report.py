"""The evaluation as a markdown report: what a reviewer reads in MLflow or the Dagster UI.

One table per task with every model side by side (AUROC and AUPRC with their intervals, F1 at
the tuning-chosen threshold, ECE), a subgroup table (AUROC by sex and age band), the plots, and
plain-language notes for what could not be evaluated, so an empty cell always has a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ehrmamba.evaluate.plots import plot_name

if TYPE_CHECKING:
    from ehrmamba.evaluate.evaluation import EvaluationConfig


def _num(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _with_ci(row: pd.Series, name: str) -> str:
    if not row["evaluable"]:
        return "n/a"
    return f"{_num(row[name])} [{_num(row[f'{name}_low'])}, {_num(row[f'{name}_high'])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _subgroup_cell(row: pd.Series) -> str:
    return f"{_num(row['auroc'])} (n={int(row['n'])}, pos={int(row['n_positive'])})"


def write_report(
    path: Path,
    *,
    metrics: pd.DataFrame,
    subgroups: pd.DataFrame,
    summary: pd.DataFrame,
    plot_paths: Sequence[Path],
    config: EvaluationConfig,
    notes: Sequence[str] = (),
    title: str = "Evaluation on held_out",
    paired: pd.DataFrame | None = None,
) -> Path:
    """Write the report to ``path`` (plots are linked relative to it) and return the path."""
    pct = round(config.confidence * 100)
    binning = "equal-width" if config.bin_strategy == "uniform" else "equal-mass"
    lines = [
        f"# {title}",
        "",
        f"Metrics on the `held_out` split. Intervals: {pct}% percentile bootstrap, "
        f"{config.n_resamples} {'stratified ' if config.stratified_bootstrap else ''}resamples "
        f"of {'patients' if config.bootstrap_unit == 'subject' else 'label rows'} "
        f"(seed {config.seed}). F1 at the threshold that maximizes F1 on `tuning`. "
        f"ECE: {config.n_bins} {binning} bins.",
        "",
        "## Summary",
        "",
    ]
    lines += _table(
        ["model", "mean AUROC", "mean AUPRC", "tasks evaluable"],
        [
            [r.model, _num(r.mean_auroc), _num(r.mean_auprc), f"{r.n_tasks_evaluable}/{r.n_tasks}"]
            for r in summary.itertuples(index=False)
        ],
    )
    lines.append("")
    if paired is not None and len(paired):
        lines += _paired_section(paired, pct)
    not_evaluable = []
    plots = {p.name: p for p in plot_paths}
    for task in sorted(metrics["task"].unique()):
        part = metrics[metrics["task"] == task]
        lines += [f"## {task}", ""]
        lines += _table(
            ["model", "n", "positives", "AUROC", "AUPRC", "F1 (threshold)", "ECE"],
            [
                [
                    r["model"],
                    int(r["n"]),
                    int(r["n_positive"]),
                    _with_ci(r, "auroc"),
                    _with_ci(r, "auprc"),
                    f"{_num(r['f1'])} ({_num(r['threshold'])})" if r["evaluable"] else "n/a",
                    _num(r["ece"]),
                ]
                for _, r in part.iterrows()
            ],
        )
        for _, r in part.iterrows():
            if not r["evaluable"]:
                not_evaluable.append(f"`{task}` / `{r['model']}`: {r['note']}")
            elif r["threshold_source"] != "tuning":
                lines.append(f"\n- `{r['model']}`: F1 threshold is the {r['threshold_source']}.")
        sub = subgroups[subgroups["task"] == task] if len(subgroups) else subgroups
        if len(sub):
            groups = list(dict.fromkeys(zip(sub["attribute"], sub["group"], strict=True)))
            rows = []
            for model in part["model"]:
                mine = sub[sub["model"] == model]
                cells = {(a, g): _subgroup_cell(r) for (a, g), r in _index(mine).items()}
                rows.append([model, *(cells.get(k, "") for k in groups)])
            lines += ["", "AUROC by subgroup:", ""]
            lines += _table(["model", *(f"{a}: {g}" for a, g in groups)], rows)
        images = [
            f"![{kind} {task}](plots/{name})"
            for kind, name in (
                ("ROC", plot_name("roc", task)),
                ("Reliability", plot_name("reliability", task)),
            )
            if name in plots
        ]
        if images:
            lines += ["", " ".join(images)]
        lines.append("")
    if not_evaluable or notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in not_evaluable]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def _gap_reading(row: pd.Series, prefix: str = "auroc_diff") -> str:
    low, high = row[f"{prefix}_low"], row[f"{prefix}_high"]
    if math.isnan(low):
        return row["note"] or "n/a"
    if high < 0:
        return "below, beyond the interval"
    if low > 0:
        return "above, beyond the interval"
    return "within the interval"


def _gap(row: pd.Series, prefix: str) -> str:
    return (
        f"{_num(row[prefix], 4)} [{_num(row[f'{prefix}_low'], 4)}, "
        f"{_num(row[f'{prefix}_high'], 4)}]"
    )


def _paired_section(paired: pd.DataFrame, pct: int) -> list[str]:
    lines = [
        "## Paired AUROC differences",
        "",
        f"AUROC of the model minus the reference's on the held_out rows both scored, {pct}% "
        "interval from the same resamples for both (a paired bootstrap): the interval of the "
        "gap itself, narrower than either model's own when their errors move together.",
        "",
    ]
    over_seeds = "recipe_diff" in paired and paired["recipe_diff"].notna().any()
    if over_seeds:
        lines += [
            "That interval holds the patients' noise, not the training seed's: another seed of "
            "either model can land outside it. *Over seeds* compares the recipes: the mean "
            "AUROC over each side's seeds (seeds: model v reference) on the rows every seed "
            "scored, each resample drawing the patients once for all and each side's seeds "
            "with replacement. Judge a recipe (is multitask finetuning below single-task?) on "
            "that column, and the models in hand on the first.",
            "",
        ]
    rows = []
    for _, r in paired.iterrows():
        row = [
            f"{r.model} − {r.reference}",
            r.task,
            int(r.n),
            int(r.n_positive),
            _gap(r, "auroc_diff"),
            _gap_reading(r),
        ]
        if over_seeds:
            has = not math.isnan(r["recipe_diff"])
            row += [
                f"{int(r.seeds_model)} v {int(r.seeds_reference)}"
                if not math.isnan(r["seeds_model"])
                else "",
                _gap(r, "recipe_diff") if has else "",
                _gap_reading(r, "recipe_diff") if has else "",
            ]
        rows.append(row)
    header = ["model − reference", "task", "n", "positives", "AUROC gap", "reading"]
    if over_seeds:
        header += ["seeds", "gap over seeds", "reading over seeds"]
    lines += _table(header, rows)
    lines.append("")
    return lines


def _index(frame: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    return {(r["attribute"], r["group"]): r for _, r in frame.iterrows()}
