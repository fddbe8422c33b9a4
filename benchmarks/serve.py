"""Latency and throughput of ``POST /predict`` over real HTTP, on Synthea patients' Bundles.

    .venv/bin/python benchmarks/serve.py [--requests 200,10000,2000] [--clients 1,8,32]

Builds what the service needs from ``../shared/data/synthea-r4`` (ingest, ``dbt build`` up to the
splits, a vocabulary, the compiled event chain) and a randomly initialised ``small`` multitask
model with a 1,024-token context (latency does not depend on the weights' values), starts
``bentoml serve serving.service:EHRMambaService`` on it, and sends each patient's transaction
Bundle (decompressed, as a client would) from N concurrent clients, each waiting for its answer
before sending the next (closed loop). Bundles longer than the context are sent with
``truncate=true`` (the service scores their most recent 1,023 tokens). Client and server share
the machine's cores.

Also measured in-process, for the record of where the time goes: each stage of one request
(parse, the event-chain query for 1 and for 8 records, tokenization, the model), and the floor
that the model's matrix products alone put under any request over the whole Bundle mix
(:func:`model_matmul_floor`).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# in-process stages run as a model worker does: one core, no intra-op threads (serving.service)
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}


def build_platform(data: Path, work: Path) -> tuple[Path, list[bytes]]:
    """Warehouse, vocabulary, chain and a ``small`` model laid out as a servable directory."""
    import duckdb
    import torch

    from ehrmamba.fhir import ingest
    from ehrmamba.fhir.event_chain import EventChain
    from ehrmamba.fhir.request_bundle import RecordProblem, read_patient_bundle
    from ehrmamba.finetune.bundle import FinetunedModel, FinetuneSettings
    from ehrmamba.model import EHRMambaConfig, EHRMambaForMultitask
    from ehrmamba.tokenize import TokenizerConfig, fit_vocabulary
    from orchestration.dbt_project import run_dbt
    from serving.runtime import ModelRuntime

    servable = work / "servable"
    db = work / "warehouse.duckdb"
    if not servable.exists():
        ingest(data, db)
        proc = run_dbt(
            ["build", "--quiet", "--select", "+subject_splits", "--exclude", "resource_type:test"],
            duckdb_path=db,
            target_path=work / "target",
        )
        if proc.returncode != 0:
            raise SystemExit(f"dbt build failed:\n{proc.stdout[-3000:]}")
        with duckdb.connect(str(db)) as con:
            vocab = fit_vocabulary(con, TokenizerConfig(max_len=1024))
        torch.manual_seed(0)
        config = EHRMambaConfig.preset("small", vocab_size=len(vocab.tokens))
        tasks = list(vocab.config.tasks)
        model = FinetunedModel(
            EHRMambaForMultitask(config).eval(),
            vocab,
            FinetuneSettings(tasks=tasks, max_len=1024, thresholds={t: 0.5 for t in tasks}),
        )
        model.save(work / "finetuned")
        chain = EventChain.from_dbt_target(work / "target", db)
        ModelRuntime.save(work / "finetuned", chain, servable, {"model_version": "bench"})
    bodies = []
    for path in sorted(data.glob("*.json.gz")):
        body = gzip.decompress(path.read_bytes())
        try:
            read_patient_bundle(body)
        except RecordProblem:
            continue  # the organisation and practitioner Bundles hold no patient
        bodies.append(body)
    return servable, bodies


def stage_breakdown(servable: Path, bodies: list[bytes]) -> dict[str, float]:
    """Median milliseconds (thread CPU) of each stage for the median-size Bundle."""
    import torch

    from ehrmamba.fhir.request_bundle import read_patient_bundle
    from serving.runtime import ModelRuntime

    torch.set_num_threads(1)
    runtime = ModelRuntime.load(servable, engines=1)
    ordered = sorted(bodies, key=len)
    body = ordered[len(ordered) // 2]
    eight = ordered[len(ordered) // 2 - 4 : len(ordered) // 2 + 4]

    def timed(fn, repeat=5):
        fn()
        cpu = []
        for _ in range(repeat):
            start = time.thread_time()
            out = fn()
            cpu.append(time.thread_time() - start)
        return out, statistics.median(cpu) * 1e3

    record, t_parse = timed(lambda: read_patient_bundle(body))
    records8 = [read_patient_bundle(b) for b in eight]
    (events,), t_events1 = timed(lambda: runtime.events([record]))
    _, t_events8 = timed(lambda: runtime.events(records8))
    (prepared,), t_prepare = timed(lambda: runtime.prepare([events], truncate=[True]))
    _, t_predict = timed(lambda: runtime.predict(prepared))
    return {
        "bundle_bytes": len(body),
        "events": len(events.events),
        "tokens": prepared.n_tokens,
        "parse_ms": t_parse,
        "event_chain_1_record_ms": t_events1,
        "event_chain_8_records_ms": t_events8,
        "tokenize_ms": t_prepare,
        "model_6_tasks_ms": t_predict,
    }


def model_matmul_floor(servable: Path, bodies: list[bytes]) -> dict[str, float]:
    """A lower bound on one request's CPU: the model's matrix products alone, per Bundle.

    Every ``nn.Linear`` call of a real ``predict`` (history scan and task prompts) is recorded
    with its input's shape, then that product alone is timed on one thread (``F.linear`` on
    random inputs of the same shapes, its best of three). Everything else a request needs (the
    selective scan, the convolution, norms, embeddings, the event chain, tokenization, HTTP and
    JSON) comes on top, so the request rate that this time allows on the machine's cores bounds
    what the service can reach; by Little's law, N closed-loop clients then wait N / rate on
    average at least. Over the benchmark's mix: every patient Bundle, drawn uniformly, truncated
    as sent.
    """
    import torch
    import torch.nn.functional as F

    from ehrmamba.fhir.request_bundle import read_patient_bundle
    from serving.runtime import ModelRuntime

    torch.set_num_threads(1)
    runtime = ModelRuntime.load(servable, engines=1)
    linears = [m for m in runtime.model.model.modules() if isinstance(m, torch.nn.Linear)]
    calls: list[tuple[torch.nn.Linear, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: calls.append((mod, tuple(args[0].shape))))
        for m in linears
    ]

    def matmul(prepared) -> tuple[float, float]:
        """(ms, GFLOP) of the products one ``predict`` of this record makes."""
        calls.clear()
        runtime.predict(prepared)
        total = 0.0
        flop = sum(2 * math.prod(shape) * module.out_features for module, shape in calls)
        for module, shape in calls:
            x = torch.randn(shape)
            best = float("inf")
            for _ in range(3):
                start = time.thread_time()
                F.linear(x, module.weight, module.bias)
                best = min(best, time.thread_time() - start)
            total += best
        return total * 1e3, flop / 1e9

    records = [read_patient_bundle(b) for b in bodies]
    times, gflop, tokens = [], [], []
    try:
        for start in range(0, len(records), 8):
            for events in runtime.events(records[start : start + 8]):
                (prepared,) = runtime.prepare([events], truncate=[True])
                ms, work = matmul(prepared)
                times.append(ms)
                gflop.append(work)
                tokens.append(prepared.n_tokens)
    finally:
        for hook in hooks:
            hook.remove()
    cores = os.cpu_count() or 1
    peak = gemm_gflops(cores)
    mean_ms = statistics.fmean(times)

    def min_mean_latency_ms(seconds_per_request: float, clients: int = 8) -> float:
        return clients * seconds_per_request / cores * 1e3  # Little's law, closed loop

    return {
        "bundles": len(times),
        "tokens_median": statistics.median(tokens),
        "tokens_mean": statistics.fmean(tokens),
        "matmul_gflop_per_request_mean": statistics.fmean(gflop),
        "matmul_ms_median": statistics.median(times),
        "matmul_ms_mean": mean_ms,
        "matmul_gflops_per_core_achieved": sum(gflop) / (sum(times) / 1e3),
        "cores": cores,
        "max_requests_per_s": cores * 1e3 / mean_ms,
        "min_mean_latency_ms_at_8_clients": min_mean_latency_ms(mean_ms / 1e3),
        # the same bound if every product ran at the machine's large-GEMM rate
        "gemm_gflops_all_cores": peak,
        "min_mean_latency_ms_at_8_clients_at_gemm_peak": min_mean_latency_ms(
            statistics.fmean(gflop) / (peak / cores)
        ),
    }


_GEMM_PROBE = """
import time, torch
torch.set_num_threads({threads})
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
a @ b
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(2 * 2048**3 / best / 1e9)
"""


def gemm_gflops(threads: int) -> float:
    """fp32 GFLOP/s of a 2,048-square matrix product on ``threads`` threads (best of 5), in a
    fresh process: this one has pinned torch to one thread, and its pool does not grow back."""
    probe = subprocess.run(
        [sys.executable, "-c", _GEMM_PROBE.format(threads=int(threads))],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(probe.stdout.strip())


def chain_variants(servable: Path, bodies: list[bytes]) -> dict[str, float]:
    """Thread-CPU milliseconds of the ways to run the compiled dbt models on one record.

    - ``one_query``: every model a materialized CTE of one query (what the engine does, with
      DuckDB's optimizer off); ``one_query_optimized``: the same with the optimizer on;
    - ``per_model``: one ``CREATE OR REPLACE TEMP TABLE`` per model, in dependency order, as
      ``dbt run`` would materialize them;
    - ``prepared``: the one query through SQL ``PREPARE`` once and ``EXECUTE`` per record
      (DuckDB 2.0 re-plans a prepared statement at every execution, so this gains nothing).
    """
    import pyarrow as pa

    from ehrmamba.fhir.classify import CLASSIFY_SQL
    from ehrmamba.fhir.event_chain import EventChain, EventEngine
    from ehrmamba.fhir.request_bundle import read_patient_bundle
    from serving.runtime import CHAIN_SUBDIR

    chain = EventChain.load(servable / CHAIN_SUBDIR)
    body = sorted(bodies, key=len)[len(bodies) // 2]
    record = read_patient_bundle(body)
    engine = EventEngine(chain)
    con = engine.con
    engine.events([record])  # warm; it leaves the raw table empty, so land the record again
    names = pa.array(["request-0"] * record.resources.num_rows)
    con.register("_fhir_chunk", record.resources.set_column(0, "source_file", names))
    con.execute(f"CREATE OR REPLACE TEMP TABLE _classified AS {CLASSIFY_SQL}")
    con.execute(
        "INSERT INTO raw.fhir_resources SELECT resource_type, id, version_id, content_hash, "
        "subject_id, last_updated, resource, source_file, full_url, now() FROM _classified "
        "WHERE error IS NULL"
    )
    per_model = [
        f"CREATE OR REPLACE TEMP TABLE {m.relation.split('.')[-1]} AS " + _rename(m.sql, chain)
        for m in chain.models
    ]
    con.execute("PREPARE chain_query AS " + chain.query())

    def cpu(fn, repeat=5) -> float:
        fn()
        times = []
        for _ in range(repeat):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        return statistics.median(times) * 1e3

    out = {
        "one_query_ms": cpu(lambda: con.execute(chain.query()).fetchall()),
        "per_model_ms": cpu(lambda: [con.execute(sql) for sql in per_model]),
        "prepared_ms": cpu(lambda: con.execute("EXECUTE chain_query").fetchall()),
        "models": len(chain.models),
    }
    con.execute("PRAGMA enable_optimizer")  # the engine runs without it; this is the cost of it
    out["one_query_optimized_ms"] = cpu(lambda: con.execute(chain.query()).fetchall())
    return out


def _rename(sql: str, chain) -> str:
    """A model's SQL reading the temp tables of the models before it."""
    for m in chain.models:
        sql = sql.replace(m.relation, m.relation.split(".")[-1])
    return sql


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(servable: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "EHRMAMBA_MODEL_DIR": str(servable),
        "EHRMAMBA_SERVE_TOKENS": TOKEN,
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    log = open(work / "serve.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "serving.service:EHRMambaService",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--working-dir",
            str(ROOT),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import urllib.request

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((work / "serve.log").read_text()[-3000:])
        try:
            request = urllib.request.Request(f"{base}/readyz", headers=HEADERS)
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return proc, base
        except OSError:
            time.sleep(1)
    raise SystemExit("the server did not become ready in 300 s")


async def load(base: str, bodies: list[bytes], clients: int, requests: int, seed: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    remaining = iter(range(requests))
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(
        base, timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)
    ) as session:

        async def client(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            for _ in remaining:
                body = bodies[rng.randrange(len(bodies))]
                start = time.perf_counter()
                try:
                    async with session.post(
                        "/predict?truncate=true", data=body, headers=HEADERS
                    ) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                except aiohttp.ClientError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    ok = statuses.get(200, 0)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    return {
        "clients": clients,
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "statuses": statuses,
        "client_errors": errors[:5],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "throughput_rps": ok / wall,
        "seconds": wall,
    }


def batch_sizes(base: str) -> tuple[float, float]:
    """(requests, batches) of the model's ``score`` API so far, from BentoML's metrics."""
    import urllib.request

    request = urllib.request.Request(f"{base}/metrics", headers=HEADERS)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()

    def total(kind: str) -> float:
        pattern = rf'adaptive_batch_size_{kind}\{{[^}}]*method_name="score"[^}}]*\}} ([0-9.e+]+)'
        return sum(float(x) for x in re.findall(pattern, text))

    return total("sum"), total("count")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "synthea-r4")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-serve")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", default="200,10000,2000")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--stages-only", action="store_true", help="skip the HTTP load")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    servable, bodies = build_platform(args.data, args.work)
    results: dict = {
        "bundles": len(bodies),
        "stages": stage_breakdown(servable, bodies),
        "chain_variants": chain_variants(servable, bodies),
        "model_matmul_floor": model_matmul_floor(servable, bodies),
    }
    print(
        json.dumps(
            {k: results[k] for k in ("stages", "chain_variants", "model_matmul_floor")}, indent=1
        ),
        flush=True,
    )
    if args.stages_only:
        return
    proc, base = start_server(servable, args.work)
    try:
        runs = []
        for i, (clients, requests) in enumerate(
            zip(
                map(int, args.clients.split(",")),
                map(int, args.requests.split(",")),
                strict=True,
            )
        ):
            asyncio.run(load(base, bodies, clients, min(clients * 4, requests), seed=99))  # warm
            before = batch_sizes(base)
            run = asyncio.run(load(base, bodies, clients, requests, seed=i))
            after = batch_sizes(base)
            batches = after[1] - before[1]
            run["mean_batch"] = (after[0] - before[0]) / batches if batches else None
            runs.append(run)
            print(json.dumps(run), flush=True)
        results["runs"] = runs
        results["load_average"] = os.getloadavg()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print("\n| clients | requests | errors | p50 ms | p99 ms | requests/s | mean batch |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["runs"]:
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] else "-"
        print(
            f"| {r['clients']} | {r['requests']:,} | {r['errors']} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['throughput_rps']:.1f} | {batch} |"
        )


if __name__ == "__main__":
    main()
