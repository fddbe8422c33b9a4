"""Bulk Data ``$export`` download speed: this project's client beside plain ``curl``, same files.

    .venv/bin/python benchmarks/bulk_export.py [--patients 25] [--repeats 9]

A real ``sekmet`` FHIR server (the test suite's launcher) is started on a free localhost port and
loaded with the largest Synthea patients of ``../shared/data/synthea-r4`` by transaction
POSTs (the server indexes a few hundred resources a second, which bounds the size). One export
of the types the pipeline lands is kicked off and polled to completion; then the files of that
one manifest are downloaded again and again, alternating between:

- ``BulkExportClient.download``, one file at a time and four at a time (streamed to disk, lines
  counted against the manifest, staging directory renamed into place);
- ``curl``: one process fetching every URL over one connection, and ``curl --parallel`` with
  four at a time (writes the bytes, checks nothing);
- httpx streaming every file, one at a time, and discarding the bytes: what receiving alone costs
  in Python, before writing and counting.

MB/s is megabytes on disk (10^6 bytes) per wall-clock second; each figure is the median of the
repeats, run interleaved. Client and server share the machine's cores, so the ratio within one
run is what carries over, not the absolute figure. CPU ms per MB is the downloader's own CPU
time (this process for the client, the curl process, start-up included, for curl): what the
download costs the machine, independent of how busy the server is.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the sekmet launcher lives with the tests

from ehrmamba.fhir.bulk_export import BulkExportClient, ExportRequest  # noqa: E402
from ehrmamba.fhir.smart_auth import BearerToken  # noqa: E402
from tests.fhir_server_fixture import running_server, synthea_files  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "synthea-r4"


def largest_patients(data: Path, n: int) -> list[Path]:
    """The shared organisation/practitioner Bundles, then the ``n`` largest patient Bundles."""
    info = synthea_files(data, 0)
    people = sorted(
        (p for p in data.glob("*.json.gz") if p not in info), key=lambda p: -p.stat().st_size
    )
    return info + people[:n]


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def time_client(
    client: BulkExportClient, manifest: dict, out: Path, workers: int
) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (the server is another process)."""
    client.workers = workers
    shutil.rmtree(out, ignore_errors=True)
    cpu, started = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    client.download(manifest, out)
    return time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu


def time_curl(urls: list[str], token: str, out: Path, parallel: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the curl process (start-up included)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = ["curl", "--silent", "--no-progress-meter", "--fail"]
    cmd += ["--header", f"Authorization: Bearer {token}"]
    if parallel > 1:
        cmd += ["--parallel", "--parallel-max", str(parallel)]
    for i, url in enumerate(urls):
        cmd += ["--output", str(out / f"{i}.ndjson"), url]
    cpu, started = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True)  # the sekmet child is still running: not counted
    return time.perf_counter() - started, _cpu(resource.RUSAGE_CHILDREN) - cpu


def time_httpx_floor(http: httpx.Client, urls: list[str], token: str) -> tuple[float, float]:
    """Receive every file with httpx and throw the bytes away: the floor for an httpx client."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
    cpu, started = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    for url in urls:
        with http.stream("GET", url, headers=headers) as response:
            for _ in response.iter_raw():
                pass
    return time.perf_counter() - started, _cpu(resource.RUSAGE_SELF) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--patients", type=int, default=25, help="the N largest Bundles")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        work = Path(tmp)
        with running_server(work / "sekmet") as server:
            started = time.perf_counter()
            loaded = server.load_bundles(largest_patients(args.data, args.patients))
            load_s = time.perf_counter() - started
            print(f"loaded {sum(loaded.values()):,} resources in {load_s:.0f}s", flush=True)
            with (
                BulkExportClient(server.base_url, BearerToken(server.token)) as client,
                httpx.Client() as http,
            ):
                started = time.perf_counter()
                status_url = client.kick_off(ExportRequest())
                manifest = client.wait(status_url)
                prepare_s = time.perf_counter() - started
                urls = [o["url"] for o in manifest["output"]]
                token, c_dir, curl_dir = server.token, work / "client", work / "curl"
                resources = sum(int(o["count"]) for o in manifest["output"])
                first, _ = time_client(client, manifest, c_dir, 1)
                size = sum(p.stat().st_size for p in c_dir.glob("*.ndjson*"))
                print(
                    f"export: {resources:,} resources in {len(urls)} files, {size / 1e6:.1f} MB; "
                    f"server prepared it in {prepare_s:.1f}s; first download {first:.2f}s",
                    flush=True,
                )
                runs = {
                    "client, 1 file at a time": lambda: time_client(client, manifest, c_dir, 1),
                    "curl, 1 file at a time": lambda: time_curl(urls, token, curl_dir, 1),
                    "client, 4 files at a time": lambda: time_client(client, manifest, c_dir, 4),
                    "curl --parallel, 4 at a time": lambda: time_curl(urls, token, curl_dir, 4),
                    "httpx stream, bytes discarded": lambda: time_httpx_floor(http, urls, token),
                }
                rows: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
                for _ in range(args.repeats):  # interleaved, so load changes hit all rows
                    for name, run in runs.items():
                        rows[name].append(run())
                curl_size = sum(p.stat().st_size for p in curl_dir.glob("*.ndjson"))
                assert curl_size == size, (curl_size, size)  # the same bytes either way
                client.cancel(status_url)
    print()
    print("| download | seconds (median) | MB/s | vs curl | CPU ms per MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    medians = {name: statistics.median(w for w, _ in runs) for name, runs in rows.items()}
    for name, seconds in medians.items():
        pair = "curl --parallel, 4 at a time" if "4" in name else "curl, 1 file at a time"
        cpu_ms = 1000 * statistics.median(c for _, c in rows[name]) / (size / 1e6)
        print(
            f"| {name} | {seconds:.3f} | {size / 1e6 / seconds:.0f} | "
            f"{medians[pair] / seconds:.2f} | {cpu_ms:.1f} |"
        )


if __name__ == "__main__":
    main()
