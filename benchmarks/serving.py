"""Latency of the served model: `sessionbert serve` on a finished graph's serving_model, asked over loopback.

    python -m benchmarks.serving --home .sessionbert --profile small [--workers 1 2] [--requests 200]

For each worker count, starts the server, then for each request kind (one session of a user the
pipeline knows, one session of a new user, the last 8 sessions of a new user) and each number of
concurrent clients (1 and 8), sends `--requests` requests after a warm-up and reports p50/p95
latency and requests/s. Prints a table and writes benchmarks/results/serving-<profile>.json with
the machine it ran on. The clients share the machine's cores with the server: run it alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.perf import machine

RESULTS = Path(__file__).resolve().parent / "results"


def request_bodies(home: Path) -> dict[str, bytes]:
    """The request kinds, from the home's own page views (timestamps as ISO text)."""
    events = pl.read_parquet(home / "raw_sessions.parquet").with_columns(
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"))
    counts = events.group_by("user_id").agg(pl.col("session_id").n_unique().alias("n")).sort("n", "user_id")
    user = counts.filter(pl.col("n") >= 8)["user_id"][0] if counts["n"].max() >= 8 else counts["user_id"][-1]
    views = events.filter(pl.col("user_id") == user)
    sessions = views["session_id"].unique(maintain_order=True)
    last = views.filter(pl.col("session_id") == sessions[-1])
    eight = views.filter(pl.col("session_id").is_in(sessions.tail(8).implode()))

    def body(frame: pl.DataFrame) -> bytes:
        return json.dumps({"dataframe_records": frame.to_dicts()}).encode()

    new = pl.lit("benchmark-new-user")
    return {"1 session, known user": body(last),
            "1 session, new user": body(last.with_columns(user_id=new)),
            "8 sessions, new user": body(eight.with_columns(user_id=new))}


def start_server(model: Path, workers: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "sessionbert_assets.cli", "serve", "--model", str(model),
                                "--port", str(port), "--workers", str(workers)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("sessionbert serve exited; run it by hand to see why") from None
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("sessionbert serve did not answer /ping in 300 s")


def timed_requests(port: int, body: bytes, count: int) -> list[float]:
    """`count` requests over one kept-alive connection: each one's seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the server answered {response.status}")
        seconds.append(time.perf_counter() - started)
    connection.close()
    return seconds


def measure(port: int, body: bytes, clients: int, requests: int) -> dict:
    with ThreadPoolExecutor(8) as pool:  # warm-up on eight connections, so that every worker has answered
        list(pool.map(lambda _: timed_requests(port, body, 5), range(8)))
    per_client = max(1, requests // clients)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.concatenate(list(pool.map(lambda _: timed_requests(port, body, per_client), range(clients))))
    wall = time.perf_counter() - started
    p50, p95 = (round(float(np.percentile(latencies, q)) * 1e3, 1) for q in (50, 95))
    return {"clients": clients, "requests": len(latencies), "p50_ms": p50, "p95_ms": p95,
            "requests_per_second": round(len(latencies) / wall, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SESSIONBERT_HOME", ".sessionbert")))
    parser.add_argument("--profile", default="small", help="names the results file")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=200, help="per kind and client count")
    args = parser.parse_args(argv)
    bodies = request_bodies(args.home)
    rows = []
    print(f"{'workers':>7}  {'request':<22} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    for workers in args.workers:
        process, port = start_server(args.home / "serving_model", workers)
        try:
            for kind, body in bodies.items():
                for clients in args.clients:
                    row = {"workers": workers, "request": kind, **measure(port, body, clients, args.requests)}
                    rows.append(row)
                    print(f"{workers:>7}  {kind:<22} {clients:>7} {row['p50_ms']:>8} {row['p95_ms']:>8} "
                          f"{row['requests_per_second']:>7}", flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    output = RESULTS / f"serving-{args.profile}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"machine": machine(), "home": str(args.home), "rows": rows}, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()
