"""Ingestion throughput and memory, side by side with the baselines, in one run.

    .venv/bin/python benchmarks/ingest.py [--data ../shared/data/synthea-r4] [--repeats 3]

Rows:
- ``json.load``: gzip + ``json.loads`` of every file, counting Bundle entries (no storage);
- ``fhir.resources R4B``: full pydantic validation of every resource of a sample of files
  (it runs at hundreds of resources/s, so the whole set would take many minutes);
- ``ehrmamba ingest``: this project's ingestion into a fresh DuckDB file, all of it (parse,
  validation of the fields the pipeline uses, merge, commit).

All runs read with a warm page cache (one untimed pass first). Memory: peak RSS of the ingest
process tree (parent + parser workers, summed, sampled every 20 ms) at 1x and 10x the files,
where 10x is ten copies of the data set with distinct ids.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "synthea-r4"


def _files(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.name.endswith((".json", ".json.gz")))


def bench_json_load(files: list[Path]) -> tuple[float, int, int]:
    start = time.perf_counter()
    resources = 0
    raw_bytes = 0
    for path in files:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
        raw_bytes += len(raw)
        resources += len(json.loads(raw).get("entry", []))
    return time.perf_counter() - start, resources, raw_bytes


def bench_fhir_resources(files: list[Path], sample_files: int) -> tuple[float, int]:
    from fhir.resources.R4B import get_fhir_model_class

    start = time.perf_counter()
    n = 0
    for path in files[:sample_files]:
        with gzip.open(path, "rb") as fh:
            doc = json.loads(fh.read())
        for entry in doc.get("entry", []):
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            n += 1
    return time.perf_counter() - start, n


_INGEST_SNIPPET = """
import sys, time, json
from ehrmamba.fhir import ingest
r = ingest(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), duckdb_threads=int(sys.argv[3]))
print(json.dumps({"seconds": r.seconds, "read": r.read, "landed": r.landed,
                  "quarantined": r.quarantined, "balanced": r.balanced}))
"""


def run_ingest(data: Path, workdir: Path, workers: int) -> tuple[dict, float]:
    """Ingest in a fresh process; return its report and the peak RSS of its process tree."""
    db = workdir / f"bench-{time.monotonic_ns()}.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", _INGEST_SNIPPET, str(data), str(db), str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed with exit code {proc.returncode}")
    db.unlink(missing_ok=True)
    return json.loads(out.strip().splitlines()[-1]), peak / 2**20


def make_copies(files: list[Path], dest: Path, copies: int) -> Path:
    """Ten distinct copies of a Bundle directory: ids prefixed per copy, so nothing dedupes."""
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for path in files:
            target = dest / f"c{k}_{path.name}"
            if k == 0:
                shutil.copyfile(path, target)
                continue
            with gzip.open(path, "rb") as fh:
                text = fh.read().decode()
            # Synthea ids are UUIDs; prefixing each hex run keeps references consistent
            text = text.replace('"id": "', f'"id": "c{k}').replace("urn:uuid:", f"urn:uuid:c{k}")
            with gzip.open(target, "wb", compresslevel=1) as fh:
                fh.write(text.encode())
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--validate-files", type=int, default=10)
    parser.add_argument("--scale-copies", type=int, default=10)
    args = parser.parse_args()

    files = _files(args.data)
    bench_json_load(files)  # warm the page cache
    json_runs = [bench_json_load(files) for _ in range(args.repeats)]
    json_s = statistics.median(r[0] for r in json_runs)
    n_resources, raw_bytes = json_runs[0][1], json_runs[0][2]
    gz_bytes = sum(p.stat().st_size for p in files)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        ingest_runs = [run_ingest(args.data, workdir, args.workers) for _ in range(args.repeats)]
        ingest_s = statistics.median(r[0]["seconds"] for r in ingest_runs)
        report, peak_1x = ingest_runs[0]
        assert report["read"] == n_resources and report["balanced"], report
        fr_s, fr_n = bench_fhir_resources(files, args.validate_files)

        print(
            f"data: {args.data} ({len(files)} files, {n_resources:,} resources, "
            f"{gz_bytes / 1e6:.0f} MB gz, {raw_bytes / 1e6:.0f} MB JSON)"
        )
        print(
            f"cpu cores: {os.cpu_count()}, workers: {args.workers}, "
            f"repeats: {args.repeats} (median)"
        )
        print()
        print("| method | resources/s | MB/s (JSON) | x json.load |")
        print("| --- | ---: | ---: | ---: |")
        rows = [
            ("json.load (gzip + json.loads, no storage)", n_resources / json_s, raw_bytes / json_s),
            (
                f"fhir.resources R4B validation "
                f"({fr_n:,} resources of {args.validate_files} files)",
                fr_n / fr_s,
                None,
            ),
            (
                "ehrmamba ingest into DuckDB (parse, validate, merge, commit)",
                n_resources / ingest_s,
                raw_bytes / ingest_s,
            ),
        ]
        base = n_resources / json_s
        for name, rate, mbs in rows:
            mb = f"{mbs / 1e6:,.0f}" if mbs else "-"
            print(f"| {name} | {rate:,.0f} | {mb} | {rate / base:.2f} |")

        if args.scale_copies > 1:
            scaled = make_copies(files, workdir / "scaled", args.scale_copies)
            report_nx, peak_nx = run_ingest(scaled, workdir, args.workers)
            print()
            print("| input | resources | seconds | peak RSS of process tree (MiB) |")
            print("| --- | ---: | ---: | ---: |")
            print(
                f"| 1x ({len(files)} files) | {report['read']:,} | "
                f"{report['seconds']:.1f} | {peak_1x:,.0f} |"
            )
            print(
                f"| {args.scale_copies}x ({len(files) * args.scale_copies} files) | "
                f"{report_nx['read']:,} | {report_nx['seconds']:.1f} | {peak_nx:,.0f} |"
            )
            print(f"\nmemory ratio {args.scale_copies}x / 1x: {peak_nx / peak_1x:.2f}")


if __name__ == "__main__":
    main()
