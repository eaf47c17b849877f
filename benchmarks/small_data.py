"""What serves on small data: the whole graph on worlds smaller and sparser than the default, and on a real log.

    python benchmarks/small_data.py --worlds sparse few_days --seeds 0 1 [--access-log ../shared/data/apache_logs]

Each world is the synthetic generator at another size (WORLDS), written to a landing folder and
read as a user's own folder would be (no synthetic truth reaches the graph); the access log is a
real one. For each, `sessionbert run` (profile small) runs in its own home under --homes, then
the table reports every next-activity method's test accuracy beside what served (chosen on
validation), and the served ranker's Hit@5 at D = 6 beside popularity's. Prints the table and
writes benchmarks/results/small_data.json. Run it alone: each graph trains two models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sessionbert_core.config import WorldSize
from sessionbert_core.world import generate_world

RESULTS = Path(__file__).resolve().parent / "results"
# sizes a user's first sample has: 600 users over 30 days (about 6,500 sessions), and two weeks of traffic
WORLDS = {"sparse": WorldSize(n_users=600, n_days=30, sessions_per_day=0.36),
          "few_days": WorldSize(n_users=1500, n_days=14, sessions_per_day=0.7)}


def run_graph(home: Path, source: Path, seed: int) -> tuple[float, int]:
    env = os.environ | {"SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": "small", "SESSIONBERT_SEED": str(seed),
                        "SESSIONBERT_SOURCE": str(source)}
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (home.parent / f"{home.name}.log").open("w") as out:
        done = subprocess.run([sys.executable, "-m", "sessionbert_assets.cli", "run"], env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    return time.perf_counter() - started, done.returncode


def figures(home: Path) -> dict:
    """Next-activity accuracies (test) with what served, and Hit@5 of the served ranker and popularity."""
    evaluation = json.loads((home / "model_evaluation.json").read_text())
    row: dict = {"test_sessions": evaluation["n_sessions"]}
    for head in ("service", "page"):
        for method, scores in evaluation[head].items():
            row[f"{head}/{method}"] = round(scores["accuracy"], 4)
        row[f"{head}/served"] = evaluation["served"][head]
    hits = json.loads((home / "hit_at_k_evaluation.json").read_text())
    row["served_ranker"] = hits["served_ranker"]
    entry = hits["seen_days"].get("6", {})
    row["D6/users"] = entry.get("n_users", 0)
    for method in (hits["served_ranker"], "popularity", "sessionbert"):
        if method in entry:
            row[f"D6/{method}/hit@5"] = round(entry[method]["hit@5"], 4)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="*", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--access-log", type=Path, help="a landing folder with a web server log")
    parser.add_argument("--homes", type=Path, default=Path("/tmp/sessionbert-small-data"))
    args = parser.parse_args(argv)
    runs = [(name, seed) for name in args.worlds for seed in args.seeds]
    if args.access_log:
        runs.append(("access_log", 0))
    rows = []
    for name, seed in runs:
        home = args.homes / f"{name}-seed{seed}"
        if name == "access_log":
            source = args.access_log.resolve()
        else:
            source = generate_world(args.homes / "worlds" / f"{name}-seed{seed}", WORLDS[name], seed).landing
        seconds, code = run_graph(home, source, seed)
        row = {"data": name, "seed": seed, "seconds": round(seconds, 1), "succeeded": code == 0}
        if code == 0:
            row |= figures(home)
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "small_data.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {RESULTS / 'small_data.json'}")


if __name__ == "__main__":
    main()
