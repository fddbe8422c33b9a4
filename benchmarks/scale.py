"""Scale: MIMIC-flavoured cohorts through ingestion, ``dbt build`` and tokenization.

    .venv/bin/python benchmarks/scale.py                      # 1,000, 10,000 and 30,000 patients
    .venv/bin/python benchmarks/scale.py --sizes 1000 --keep  # one size, keep its files

For each size: a cohort of the ``mimic`` flavour (the 30-file MIMIC-IV on FHIR layout) is
generated (timed for context only), then each stage runs in a fresh process whose whole process
tree's resident memory is sampled every 50 ms (peak = the largest sum):

* ingestion: ``ehrmamba.fhir.ingest`` with 2 parser workers, DuckDB limited to
  ``--memory-limit``;
* dbt build: every seed, model and dbt test (as Dagster runs it), DuckDB limited to
  ``--memory-limit`` and spilling to disk beyond it (the profile's ``memory_limit``);
* tokenization: vocabulary fitted on the train split, then one 2,048-token sequence per subject
  written to parquet, streamed in batches of 512 subjects (never the whole cohort in memory).

Rows/s: resources read (ingestion), events built (dbt: ``marts.meds_events`` rows) and events
tokenized (tokenization). Results merge into ``benchmarks/results/scale.json`` (one entry per
size, so sizes can be run separately) and are drawn into ``benchmarks/results/scale.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("ingestion", "dbt_build", "tokenization")
TARGET_PEAK_GIB = 8.0


# -------------------------------------------------------------------------------- stages
def _stage_ingest(args: argparse.Namespace) -> dict:
    from ehrmamba.fhir import ingest

    report = ingest(
        args.source,
        args.db,
        workers=args.workers,
        duckdb_threads=args.threads,
        memory_limit=args.memory_limit,
    )
    if not report.balanced or report.quarantined:
        raise SystemExit(f"ingestion not clean:\n{report.table()}")
    return {"rows": report.read, "landed": report.landed, "stage_seconds": report.seconds}


def _stage_dbt(args: argparse.Namespace) -> dict:
    import duckdb

    from orchestration.dbt_project import run_dbt

    os.environ["EHRMAMBA_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
    started = time.perf_counter()
    proc = run_dbt(["build", "--quiet"], duckdb_path=Path(args.db), target_path=args.target)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"dbt build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    with duckdb.connect(args.db, read_only=True) as con:
        events = con.execute("SELECT count(*) FROM marts.meds_events").fetchone()[0]
        subjects = con.execute("SELECT count(*) FROM marts.subjects").fetchone()[0]
        labels = sum(
            con.execute(f"SELECT count(*) FROM marts.labels__{t}").fetchone()[0]
            for t in (
                "mortality_1m",
                "los_1w",
                "readmission_1m",
                "hypertension_1y",
                "fluid_electrolyte_1y",
                "lipoid_1y",
            )
        )
    return {"rows": events, "subjects": subjects, "labels": labels, "stage_seconds": seconds}


def _stage_tokenize(args: argparse.Namespace) -> dict:
    import duckdb
    import pyarrow.parquet as pq

    from ehrmamba.tokenize import TokenizerConfig, fit_vocabulary, write_pretraining_sequences

    started = time.perf_counter()
    config = {"memory_limit": args.memory_limit, "threads": args.threads}
    with duckdb.connect(args.db, read_only=True, config=config) as con:
        events = con.execute("SELECT count(*) FROM marts.meds_events").fetchone()[0]
        vocab = fit_vocabulary(con, TokenizerConfig(max_len=2048))
        path = write_pretraining_sequences(con, vocab, args.target, batch_size=512)
    seconds = time.perf_counter() - started
    meta = pq.ParquetFile(path).metadata
    lengths = pq.read_table(path, columns=["length"])["length"].to_pylist()
    return {
        "rows": events,
        "sequences": meta.num_rows,
        "tokens": int(sum(lengths)),
        "vocabulary": len(vocab.tokens),
        "parquet_bytes": path.stat().st_size,
        "stage_seconds": seconds,
    }


_STAGE_FUNCS = {
    "ingestion": _stage_ingest,
    "dbt_build": _stage_dbt,
    "tokenization": _stage_tokenize,
}


# -------------------------------------------------------------------------------- measuring
def measure(stage: str, **kwargs: str) -> dict:
    """Run ``stage`` in a fresh process; wall seconds, peak RSS of its tree, and its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage]
    for key, value in kwargs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            rss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_gib": peak / 2**30, **result}


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_size(n: int, args: argparse.Namespace, on_stage=None) -> dict:
    """Generate, then measure each stage; ``on_stage(entry)`` after each (partial results)."""
    on_stage = on_stage or (lambda entry: None)
    from ehrmamba.synth.mimic_writer import write_mimic_cohort

    work = args.work / f"n{n}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    source, db = work / "mimic-fhir", work / "warehouse.duckdb"
    started = time.perf_counter()
    summary = write_mimic_cohort(source, n, args.seed, workers=args.workers, progress=True)
    generation = time.perf_counter() - started
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    entry: dict = {
        "patients": n,
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "load_average_at_start": os.getloadavg()[0],
        "resources": sum(summary.file_counts.values()),
        "file_counts": summary.file_counts,
        "generation_seconds": generation,
        "input_gzip_bytes": _dir_bytes(source),
        "memory_limit": args.memory_limit,
        "complete": False,
        "stages": {},
    }
    print(f"\n{n:,} patients: {entry['resources']:,} resources generated in {generation:.0f} s")
    on_stage(entry)
    common = {"db": db, "memory_limit": args.memory_limit, "threads": args.threads}
    stage_args = {
        "ingestion": {"source": source, "workers": args.workers},
        "dbt_build": {"target": work / "dbt-target"},
        "tokenization": {"target": work / "sequences"},
    }
    for stage in STAGES:
        result = entry["stages"][stage] = measure(stage, **stage_args[stage], **common)
        result["rows_per_second"] = result["rows"] / result["seconds"]
        entry[f"duckdb_bytes_after_{stage}"] = _dir_bytes(db)
        if stage == "dbt_build":
            entry["events"] = result["rows"]
        print(
            f"  {stage:<13} {result['seconds']:8.1f} s, peak {result['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
        on_stage(entry)
    for result in entry["stages"].values():
        result["us_per_event"] = result["seconds"] / entry["events"] * 1e6
    entry["complete"] = True
    if not args.keep:
        shutil.rmtree(work)
    return entry


# -------------------------------------------------------------------------------- reporting
def load_results() -> dict[str, dict]:
    path = RESULTS / "scale.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(results: dict[str, dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(results.items(), key=lambda kv: int(kv[0])))
    (RESULTS / "scale.json").write_text(json.dumps(ordered, indent=1) + "\n")


def table(results: dict[str, dict]) -> str:
    lines = [
        "| patients | resources | events | stage | seconds | rows/s | us/event | peak RSS GiB |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for key in sorted(results, key=int):
        r = results[key]
        if not r.get("complete", True):
            continue
        for stage in STAGES:
            s = r["stages"][stage]
            lines.append(
                f"| {r['patients']:,} | {r['resources']:,} | {r['events']:,} | {stage} | "
                f"{s['seconds']:,.1f} | {s['rows_per_second']:,.0f} | {s['us_per_event']:.1f} | "
                f"{s['peak_rss_gib']:.2f} |"
            )
    return "\n".join(lines)


def plot(results: dict[str, dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted((k for k in results if results[k].get("complete", True)), key=int)
    patients = [results[k]["patients"] for k in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for stage in STAGES:
        secs = [results[k]["stages"][stage]["seconds"] for k in sizes]
        per_event = [results[k]["stages"][stage]["us_per_event"] for k in sizes]
        peak = [results[k]["stages"][stage]["peak_rss_gib"] for k in sizes]
        axes[0].plot(patients, secs, "o-", label=stage)
        axes[1].plot(patients, per_event, "o-", label=stage)
        axes[2].plot(patients, peak, "o-", label=stage)
    total = [sum(results[k]["stages"][s]["seconds"] for s in STAGES) for k in sizes]
    axes[0].plot(patients, total, "k--", label="total")
    if len(patients) > 1:  # a line through the smallest size with slope 1: linear cost
        axes[0].plot(
            patients, [total[0] * p / patients[0] for p in patients], ":", c="grey", label="linear"
        )
    axes[0].set(xscale="log", yscale="log", xlabel="patients", ylabel="wall seconds")
    axes[0].set_title("time per stage")
    axes[1].set(xscale="log", xlabel="patients", ylabel="microseconds per event")
    axes[1].set_title("time per event (flat = linear)")
    axes[1].set_ylim(bottom=0)
    axes[2].axhline(TARGET_PEAK_GIB, c="red", ls=":", label=f"target {TARGET_PEAK_GIB:g} GiB")
    axes[2].set(xscale="log", xlabel="patients", ylabel="peak RSS of the process tree (GiB)")
    axes[2].set_title("peak memory")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("MIMIC-flavoured cohorts: ingestion, dbt build, tokenization (2 cores)")
    fig.tight_layout()
    path = RESULTS / "scale.png"
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GB")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ehrmamba-scale"))
    parser.add_argument("--keep", action="store_true", help="keep each size's files")
    parser.add_argument("--plot-only", action="store_true", help="redraw from scale.json")
    # internal: one stage in this process
    parser.add_argument("--stage", choices=STAGES)
    parser.add_argument("--source")
    parser.add_argument("--db")
    parser.add_argument("--target")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(_STAGE_FUNCS[args.stage](args)))
        return
    results = load_results()
    if not args.plot_only:
        for n in args.sizes:

            def keep(entry: dict, n: int = n) -> None:  # a long run keeps what it measured
                results[str(n)] = entry
                save_results(results)

            keep(run_size(n, args, keep))
            plot(results)
    print(table(results))
    print(f"\nplot: {plot(results).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
