"""`session_splits` on each engine: polars in the step's process against the Spark job launched through Dagster
Pipes (a local `spark-submit`), through the asset itself (`sessionbert run --select session_splits`).

    python -m benchmarks.engines --profile small --repeats 3

Each run is its own process on a home whose page views are already ingested, so the figures are what a
user waits for: wall time of the run (Dagster's and Spark's start included) and the peak resident memory
of the run's processes together (sampled every 0.2 s: the step, and for Spark its driver JVM and Python
workers). Both engines must write the same rows: the script checks it and says so. Prints a table and
writes `benchmarks/results/engines-<profile>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.perf import RssSampler, machine

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("polars", "spark")


def _run(home: Path, profile: str, selection: str, engine: str = "polars") -> dict:
    """One `sessionbert run` in a child process: its wall time and the children's peak RSS (MiB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONBERT_", "DAGSTER_"))}
    env |= {"SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": profile, "SESSIONBERT_ENGINE": engine}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "sessionbert"), "run", "--select", selection],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        sampler = RssSampler(process.pid)
        code = process.wait()
        seconds = time.perf_counter() - started
        if code:
            log.seek(0)
            raise RuntimeError(f"{selection} on {engine} failed:\n{log.read()[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(max(rss for _, rss in sampler.samples) / 2**20)}


def measure(profile: str, repeats: int, home: Path) -> dict:
    _run(home, profile, "landing_folder,landing_files,raw_sessions")
    figures, outputs = {}, {}
    for engine in ENGINES:
        runs = [_run(home, profile, "session_splits", engine) for _ in range(repeats)]
        outputs[engine] = pl.read_parquet(home / "session_splits.parquet")
        seconds = [r["seconds"] for r in runs]
        figures[engine] = {"seconds_median": statistics.median(seconds), "seconds": seconds,
                           "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
    raw = pl.scan_parquet(home / "raw_sessions.parquet").select(pl.len()).collect().item()
    return {"profile": profile, "repeats": repeats, "machine": machine(), "page_views": raw,
            "sessions": outputs["polars"].height, "same_rows": outputs["polars"].equals(outputs["spark"]),
            "engines": figures}


def table(result: dict) -> str:
    lines = [f"session_splits on {result['profile']}: {result['page_views']:,} page views -> {result['sessions']:,} "
             f"sessions; both engines wrote the same rows: {result['same_rows']}",
             "| engine | median wall s | runs (s) | peak RSS, the run's processes together (MiB) |",
             "| --- | --- | --- | --- |"]
    for engine, f in result["engines"].items():
        lines.append(f"| {engine} | {f['seconds_median']} | {', '.join(map(str, f['seconds']))} | "
                     f"{f['peak_rss_mib']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None, help="a home to use ('' = a fresh temporary one)")
    args = parser.parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="sb-engines-")) / "home"
    result = measure(args.profile, args.repeats, home)
    print(table(result))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"engines-{args.profile}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
