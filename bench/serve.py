"""Serve benchmark: latency of `python -m tuwen serve` against the one-shot `python -m tuwen search`.

For each run (the demo, and a run over bench-scale's contest-shaped folder with a 50,000-image
gallery), in one invocation:

- one-shot: `python -m tuwen search CAPTION` as a user runs it (a new process each time:
  torch import, model load, shards read, one query), the median of 3;
- the server: started once (its start-up to first answer is reported), then text queries
  (GET /api/search?q=...) and image queries (POST of a query image), one client and 8
  concurrent clients, each on its own keep-alive connection; p50 / p99 of the latency each
  client sees, and the errors.

Usage: python -m bench.serve [--gallery 50000] [--queries 5000] [--workdir runs/bench-serve]
    [--skip-demo] [--skip-large] [--report FILE]
The large run is built once with the workflow (tuwen-tiny-rn, training off, as bench-scale)
and kept under the work folder; later invocations reuse it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from bench.scale import DEFAULT_SAMPLE, WORKFLOW_CONFIG, prepare_data, run_workflow
from tests.test_serve import Server
from tuwen.run import layout
from tuwen.run.declaration import IMAGES, TEXTS

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8


def build_demo(workdir: Path, cores: int) -> Path:
    run = workdir / "demo"
    if not (run / "results" / "result1.csv").exists():
        config = workdir / "demo-config.yaml"
        config.write_text(yaml.safe_dump({"train": {"enabled": False}}))
        run_workflow("demo", run, config, cores)
    return run


def build_large(workdir: Path, gallery: int, queries: int, cores: int) -> Path:
    run = workdir / f"large-{gallery}x{queries}"
    if not (run / "results" / "result1.csv").exists():
        sample = DEFAULT_SAMPLE if (DEFAULT_SAMPLE / "附件1" / "ImageWordData.csv").exists() else None
        data = prepare_data(workdir, gallery, queries, sample, cores)
        config = workdir / f"large-{gallery}x{queries}.yaml"
        config.write_text(yaml.safe_dump({**WORKFLOW_CONFIG, "data_root": str(data.resolve())}))
        started = time.time()
        run_workflow("large", run, config, cores)
        print(f"built {run} in {time.time() - started:.0f} s", file=sys.stderr)
    return run


def one_shot(run: Path, caption: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tuwen", "search", caption, "--run", str(run)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def client(port: int, requests: list[tuple[str, str, bytes | None, dict]]) -> tuple[list[float], int]:
    """Send requests on one keep-alive connection; give each latency (s) and the error count."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, errors = [], 0
    for method, path, body, headers in requests:
        started = time.perf_counter()
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200 or not json.loads(payload).get("hits"):
            errors += 1
    connection.close()
    return latencies, errors


def measure(port: int, requests: list, clients: int, per_client: int) -> dict:
    plans = [
        [requests[(c * per_client + i) % len(requests)] for i in range(per_client)] for c in range(clients)
    ]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda plan: client(port, plan), plans))
    wall = time.perf_counter() - started
    latencies = sorted(x for lat, _ in results for x in lat)
    return {
        "clients": clients,
        "queries": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "per_s": len(latencies) / wall,
        "errors": sum(e for _, e in results),
    }


def bench_run(name: str, run: Path) -> list[dict]:
    captions = pd.read_parquet(run / layout.manifest("t2i_queries", TEXTS))["caption"].tolist()[:200]
    images = pd.read_parquet(run / layout.manifest("i2t_images", IMAGES))
    images = images[images["status"] == "ok"]["path"].tolist()[:50]
    gallery = len(pd.read_parquet(run / layout.assignment("t2i_gallery")))
    texts = [("GET", "/api/search?" + urllib.parse.urlencode({"q": c, "k": 10}), None, {}) for c in captions]
    pictures = []
    for path in images:
        full = Path(path) if Path(path).is_absolute() else run / path
        pictures.append(("POST", "/api/search?k=10", full.read_bytes(), {"Content-Type": "image/jpeg"}))
    shots = sorted(one_shot(run, c) for c in captions[:3])
    rows = [
        {
            "run": name,
            "gallery": gallery,
            "what": "one-shot `python -m tuwen search` (text)",
            "clients": 1,
            "queries": 3,
            "p50_ms": 1000 * shots[1],
            "p99_ms": 1000 * shots[-1],
            "per_s": 3 / sum(shots),
            "errors": 0,
        }
    ]
    started = time.perf_counter()
    server = Server(run)
    ready = time.perf_counter() - started
    try:
        client(server.port, texts[:5] + pictures[:2])  # first requests: thread pool and caches warm
        for what, requests, per_client in (("text", texts, 50), ("image", pictures, 10)):
            for clients in (1, CLIENTS):
                measured = measure(
                    server.port, requests, clients, per_client if clients > 1 else 2 * per_client
                )
                rows.append({"run": name, "gallery": gallery, "what": f"server, {what} query", **measured})
    finally:
        server.stop()
    rows.append({"run": name, "gallery": gallery, "what": f"server start-up to first answer: {ready:.1f} s"})
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        f"{os.cpu_count()} cores, tuwen-tiny-rn, training off; latency as each client sees it "
        "(keep-alive connection, JSON parsed)",
        "",
        "| run | gallery images | what | clients | queries | p50 ms | p99 ms | queries/s | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "p50_ms" not in row:
            lines.append(f"| {row['run']} | {row['gallery']:,} | {row['what']} | | | | | | |")
            continue
        lines.append(
            f"| {row['run']} | {row['gallery']:,} | {row['what']} | {row['clients']} | {row['queries']} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['per_s']:.1f} | {row['errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build the runs, measure nothing")
    parser.add_argument("--report", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    if not args.skip_demo:
        runs.append(("demo", build_demo(args.workdir, args.cores)))
    if not args.skip_large:
        runs.append(("large", build_large(args.workdir, args.gallery, args.queries, args.cores)))
    if args.build_only:
        return
    rows = [row for name, run in runs for row in bench_run(name, run)]
    report = table(rows)
    print(report)
    if args.report:
        args.report.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
