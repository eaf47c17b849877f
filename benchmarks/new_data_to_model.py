"""How long new data takes to reach users: a file dropped into the landing folder of a running
`make ui`, to a re-fine-tuned model and a refreshed recommendation table, with no other action.

    make ui &                                  # webserver and daemon (sensors on)
    python -m benchmarks.new_data_to_model     # same SESSIONBERT_HOME / PROFILE as the UI

It writes one new day of traffic (the last day's sessions again, a day later, under new session
ids) into the landing folder, the way a writer should (a dot-file renamed into place), then follows
the runs the sensors start through the Dagster instance: `read_new_files` (new-data sensor), the
ingestion run of `ingestion_automation` (declarative automation), then `finetune_and_refresh` or
`full_retrain`. Prints a table of the stages and writes
benchmarks/results/new_data_to_model-<profile>.json. The file it adds stays (remove it to undo).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl

from sessionbert_assets.instance import prepare
from sessionbert_assets.resources import SessionBertResource

RESULTS = Path(__file__).resolve().parent / "results"
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def new_day(home: Path, landing: Path) -> Path:
    raw = pl.read_parquet(home / "raw_sessions.parquet")
    last = raw["timestamp"].max()
    day = raw.filter(pl.col("timestamp").dt.date() == last.date())
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    shifted = day.with_columns(pl.col("timestamp") + pl.duration(days=1), pl.col("session_id") + f"-{stamp}")
    target = landing / f"events-new-day-{stamp}.parquet"
    staging = landing / f".{target.name}.part"
    shifted.write_parquet(staging)
    os.replace(staging, target)
    return target


def runs_since(instance: dg.DagsterInstance, job: str, after: float) -> list[dg.DagsterRun]:
    records = instance.get_run_records(dg.RunsFilter(job_name=job), limit=5)
    return [r for r in records if r.create_timestamp.timestamp() >= after]


def wait_for(instance: dg.DagsterInstance, jobs: tuple[str, ...], after: float, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for job in jobs:
            found = runs_since(instance, job, after)
            if found and found[0].dagster_run.status in DONE:
                return found[0]
        time.sleep(5)
    raise TimeoutError(f"no finished {' or '.join(jobs)} run within {timeout:.0f} s: is `make ui` running "
                       "with the sensors on?")


def stage_seconds(start: float, read, days, ingest, retrain) -> list[tuple[str, float]]:
    """Each stage from the file written to the table refreshed, from the runs' records."""
    def created(record) -> float:
        return record.create_timestamp.timestamp()

    return [
        ("file written -> read_new_files run created (sensor)", created(read) - start),
        ("read_new_files run", read.end_time - created(read)),
        ("read end -> ingest_days run created (new-days sensor)", created(days) - read.end_time),
        ("ingest_days run (the new day of raw_sessions)", days.end_time - created(days)),
        ("days end -> automation run created", created(ingest) - days.end_time),
        ("automation run (the day's session_splits, quarantine, drift)", ingest.end_time - created(ingest)),
        ("automation end -> retrain run created (sensor)", created(retrain) - ingest.end_time),
        (f"{retrain.dagster_run.job_name} run", retrain.end_time - created(retrain)),
        ("total: file written -> table refreshed", retrain.end_time - start),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    sessionbert = SessionBertResource.from_env()
    home = sessionbert.home_path
    prepare(home)
    instance = dg.DagsterInstance.get()
    start = time.time()
    path = new_day(home, sessionbert.landing_path())
    added = pl.read_parquet(path)
    size = {"page_views": added.height, "sessions": added.select("user_id", "session_id").n_unique()}
    print(f"wrote {path} ({size['page_views']} page views, {size['sessions']} sessions) at "
          f"{datetime.fromtimestamp(start):%H:%M:%S}")
    read = wait_for(instance, ("read_new_files",), start, args.timeout)
    days = wait_for(instance, ("ingest_days",), read.create_timestamp.timestamp(), args.timeout)  # new-days sensor
    ingest = wait_for(instance, ("__ASSET_JOB",), days.create_timestamp.timestamp(), args.timeout)  # automation
    retrain = wait_for(instance, ("finetune_and_refresh", "full_retrain"), ingest.create_timestamp.timestamp(),
                       args.timeout)
    stages = stage_seconds(start, read, days, ingest, retrain)
    print("\n| stage | seconds |\n| --- | --- |")
    for name, seconds in stages:
        print(f"| {name} | {seconds:.0f} |")
    print(f"\nretrain run {retrain.dagster_run.run_id[:8]}: {retrain.dagster_run.status.value}; reason: "
          f"{retrain.dagster_run.tags.get('sessionbert/reason')}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"new_data_to_model-{sessionbert.profile}.json"
    out.write_text(json.dumps({"profile": sessionbert.profile, "file": path.name, **size,
                               "stages": {name: round(s, 1) for name, s in stages},
                               "retrain_job": retrain.dagster_run.job_name,
                               "retrain_status": retrain.dagster_run.status.value,
                               "reason": retrain.dagster_run.tags.get("sessionbert/reason")}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
