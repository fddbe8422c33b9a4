"""Time of normalization and validation on a FHIR data set, with the row counts it produced.

    .venv/bin/python benchmarks/normalize.py [--data ../shared/data/synthea-r4]

Steps, each timed on its own: FHIR ingestion (for context), ``dbt build`` (every model, seed and
dbt test, as a subprocess like Dagster runs it) and the Great Expectations suites the Dagster
blocking checks run (events, splits, every task's labels).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "synthea-r4")
    args = parser.parse_args()

    from ehrmamba.fhir import ingest
    from ehrmamba.meds_io import label_tables
    from ehrmamba.validation import (
        ValidationConfig,
        label_support,
        validate_events,
        validate_labels,
        validate_splits,
    )
    from orchestration.dbt_project import run_dbt

    with tempfile.TemporaryDirectory(prefix="bench-normalize-") as tmp:
        db = Path(tmp) / "warehouse.duckdb"
        start = time.perf_counter()
        report = ingest(args.data, db)
        t_ingest = time.perf_counter() - start

        start = time.perf_counter()
        proc = run_dbt(["build", "--quiet"], duckdb_path=db, target_path=Path(tmp) / "target")
        t_dbt = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"dbt build failed:\n{proc.stdout[-4000:]}")

        config = ValidationConfig()
        with duckdb.connect(str(db)) as con:
            start = time.perf_counter()
            outcomes = [validate_events(con, config), validate_splits(con, config)]
            labels = label_tables(con)
            outcomes += [validate_labels(con, t, config) for t in labels]
            t_gx = time.perf_counter() - start
            events = con.execute("SELECT count(*) FROM marts.meds_events").fetchone()[0]
            by_type = con.execute(
                "SELECT event_type, count(*) FROM marts.meds_events GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
            subjects = con.execute("SELECT count(*) FROM marts.subjects").fetchone()[0]
            support = {t: label_support(con, t) for t in labels}

    print(f"data: {args.data} ({report.read:,} resources read, {report.landed:,} landed)")
    print(f"cpu cores: {os.cpu_count()}\n")
    print("| step | seconds |\n| --- | ---: |")
    print(f"| ingest (context) | {t_ingest:.1f} |")
    print(f"| dbt build (models, seeds, dbt tests; subprocess) | {t_dbt:.1f} |")
    print(f"| Great Expectations suites ({len(outcomes)}) | {t_gx:.1f} |")
    print(f"| **dbt build + all checks** | **{t_dbt + t_gx:.1f}** |\n")
    print(f"meds_events: {events:,} rows, {subjects:,} subjects")
    print("| event_type | rows |\n| --- | ---: |")
    for event_type, n in by_type:
        print(f"| {event_type} | {n:,} |")
    print("\n| task | labels | positives | prevalence |\n| --- | ---: | ---: | ---: |")
    for table, (n, pos) in support.items():
        prevalence = f"{pos / n:.2%}" if n else "-"
        print(f"| {table.split('__', 1)[1]} | {n:,} | {pos:,} | {prevalence} |")
    print("\nchecks: " + "; ".join(o.summary() for o in outcomes if not o.success) or "all passed")


if __name__ == "__main__":
    main()
