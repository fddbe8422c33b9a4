"""Gaps between finetuning recipes over their seeds, from ``benchmarks/finetune_one.py`` models.

The issue's targets compare recipes (MTF against single-task finetuning, against XGBoost), and
the training seed moves one model by as much as the gaps in question. Each recipe here is a
list of models under ``RUN/models`` (its seeds; a single-task recipe lists one model per task
and seed). The first recipe is the candidate; for every task, its gap to each other recipe and
to XGBoost fitted on the same train labels is the difference of the seed means, with an
interval from :func:`ehrmamba.evaluate.metrics.recipe_auroc_difference` (patients and seeds
resampled). Two tables: every held_out row of the tasks the models scored that way
(``every_row.parquet``), and the sampled held_out rows of every task (``predictions.parquet``).

    .venv/bin/python benchmarks/recipe_gaps.py --run /tmp/c1 \
        --recipe mtf=mtf-s0,mtf-s1 \
        --recipe single=single-hypertension-s0,single-hypertension-s1,single-fluid-s0

Writes ``RUN/recipe_gaps.json`` (or ``--out``) and prints markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

KEYS = ["task", "subject_id", "prediction_time"]
XGBOOST = "xgboost_counts"


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, sep, models = text.partition("=")
    if not sep or not models:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL,MODEL,..., not {text!r}")
    return name, models.split(",")


def load_scores(run: Path, recipes: dict[str, list[str]], file: str) -> pd.DataFrame:
    """Held_out rows of every model: KEYS, label, score, recipe, member (model directory)."""
    frames = []
    for recipe, models in recipes.items():
        for model in models:
            path = run / "models" / model / file
            if not path.exists():
                if file == "every_row.parquet" and (path.parent / "summary.json").exists():
                    continue  # the model scored no task on every row
                raise SystemExit(f"{path} does not exist: is {model} a finished model of {run}?")
            frame = pd.read_parquet(path)
            frame = frame[frame["split"] == "held_out"]
            frames.append(frame[[*KEYS, "label", "score"]].assign(recipe=recipe, member=model))
    return pd.concat(frames, ignore_index=True)


def xgboost_scores(run: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """XGBoost on code counts, fitted on the train labels the finetuning runs learned from."""
    from ehrmamba.evaluate import finetuning_train_rows, run_matched_baselines

    eval_rows = rows[KEYS].drop_duplicates()
    with duckdb.connect(str(run / "warehouse.duckdb"), read_only=True) as con:
        base = run_matched_baselines(
            con,
            sorted(eval_rows["task"].unique()),
            eval_rows=eval_rows,
            train_rows=finetuning_train_rows(run / "seq" / "labels.parquet"),
        )
    preds = base.predictions
    preds = preds[(preds["model"] == XGBOOST) & (preds["split"] == "held_out")]
    return preds[[*KEYS, "label", "score"]].assign(recipe=XGBOOST, member=XGBOOST)


def task_table(scores: pd.DataFrame, candidate: str, n_resamples: int) -> list[dict]:
    """Per task: each recipe's per-seed AUROC, and the candidate's gap to every other recipe."""
    from ehrmamba.evaluate.metrics import auroc, recipe_auroc_difference

    out = []
    for task, rows in scores.groupby("task"):
        wide = rows.pivot_table(index=KEYS, columns="member", values="score", aggfunc="first")
        labels = rows.groupby(KEYS)["label"].first().loc[wide.index]
        partial = sorted(wide.columns[wide.isna().any()])
        if partial:
            raise SystemExit(f"{task}: {partial} did not score the same rows as the others")
        by_recipe: dict[str, list[str]] = {}
        for member, recipe in rows.drop_duplicates("member")[["member", "recipe"]].values:
            by_recipe.setdefault(recipe, []).append(member)
        if candidate not in by_recipe:
            continue
        y = labels.to_numpy().astype(bool)
        groups = wide.index.get_level_values("subject_id").to_numpy()
        entry = {
            "task": task,
            "rows": len(y),
            "positive_rows": int(y.sum()),
            "positive_patients": int(pd.Series(y).groupby(groups).any().sum()),
            "auroc": {
                recipe: [round(auroc(y, wide[m].to_numpy()), 4) for m in members_]
                for recipe, members_ in by_recipe.items()
            },
            "gap": {},
        }
        seeds_a = [wide[m].to_numpy() for m in by_recipe[candidate]]
        for recipe, members_ in by_recipe.items():
            if recipe == candidate:
                continue
            gap = recipe_auroc_difference(
                y,
                seeds_a,
                [wide[m].to_numpy() for m in members_],
                groups=groups,
                n_resamples=n_resamples,
            )
            entry["gap"][recipe] = [round(gap.estimate, 4), round(gap.low, 4), round(gap.high, 4)]
        out.append(entry)
    return out


def markdown(table: list[dict], candidate: str) -> str:
    others = sorted({r for e in table for r in e["gap"]})
    head = ["task (rows, positive patients)", f"{candidate} per seed (mean)"]
    head += [f"{r} (mean)" for r in others]
    head += [f"{candidate} − {r}" for r in others]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for e in table:
        cells = [f"{e['task']} ({e['rows']:,}, {e['positive_patients']})"]
        own = e["auroc"][candidate]
        cells.append(", ".join(f"{v:.3f}" for v in own) + f" ({np.mean(own):.3f})")
        for r in others:
            v = e["auroc"].get(r)
            cells.append(f"{np.mean(v):.3f}" if v else "")
        for r in others:
            g = e["gap"].get(r)
            cells.append(f"{g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]" if g else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument(
        "--recipe",
        type=parse_recipe,
        action="append",
        required=True,
        metavar="NAME=MODEL,...",
        help="a recipe's models under RUN/models; the first recipe is the candidate",
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="default: RUN/recipe_gaps.json")
    args = parser.parse_args()
    recipes = dict(args.recipe)
    candidate = args.recipe[0][0]
    result = {"recipes": recipes}
    for name, file in (("every_row", "every_row.parquet"), ("sampled", "predictions.parquet")):
        scores = load_scores(args.run, recipes, file)
        scores = pd.concat([scores, xgboost_scores(args.run, scores)], ignore_index=True)
        result[name] = task_table(scores, candidate, args.resamples)
        title = "every held_out row" if name == "every_row" else "sampled held_out rows"
        print(f"\n{title}\n\n{markdown(result[name], candidate)}", flush=True)
    out = args.out or args.run / "recipe_gaps.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
