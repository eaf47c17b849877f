"""What serves on data like users have: the whole graph on worlds unlike the default, and on a real log.

    python -m benchmarks.small_data --worlds sparse few_days one_day --seeds 0 1 2 \
        [--access-log ../shared/data/apache_logs]

Each world is the synthetic generator with the settings of real logs (WORLDS: occasional users, a
second persona part of the time, short sessions, few days, one day), written to a landing folder
and read as a user's own folder would be: only the persona definitions go with it, no synthetic
truth reaches the graph. The access log is a real one. For each, `sessionbert run` (profile small)
runs in its own home under --homes; afterwards, against the world's truth, the table reports every
next-activity method's test accuracy beside the ceiling and what served (chosen on validation),
persona ARI and accuracy of what served beside every representation (TF-IDF of activities among
them), the encoder pretraining kept, and the served ranker's Hit@5 beside popularity's. Prints a
mean and standard deviation over seeds per world and writes benchmarks/results/small_data.json.
Run it alone: each graph trains two to three models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from sessionbert_core.config import WorldSize
from sessionbert_core.evaluation.next_activity import baseline_scores, format_spread
from sessionbert_core.personas.embed import user_vector_sessions
from sessionbert_core.personas.mapping import load_definitions
from sessionbert_core.personas.mapping import persona_evaluation as score_personas
from sessionbert_core.personas.representation import truth_scores
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import WorldPaths, load_truth

RESULTS = Path(__file__).resolve().parent / "results"
# what a user's first sample looks like: 600 users over 30 days, most of them occasional, a third of each
# user's sessions under a second persona, short sessions (about 6,500 sessions); two weeks of short sessions;
# one day of a site
WORLDS = {"sparse": WorldSize(n_users=600, n_days=30, sessions_per_day=1.0, occasional_share=0.6,
                              second_persona_share=0.33, session_length_scale=0.5),
          "few_days": WorldSize(n_users=1500, n_days=14, sessions_per_day=0.7, occasional_share=0.3,
                                session_length_scale=0.5),
          "one_day": WorldSize(n_users=4000, n_days=1, sessions_per_day=1.5, second_persona_share=0.2)}


def run_graph(home: Path, source: Path, seed: int, personas: Path | None, args: tuple[str, ...] = (),
              log: str | None = None) -> tuple[float, int]:
    env = os.environ | {"SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": "small", "SESSIONBERT_SEED": str(seed),
                        "SESSIONBERT_SOURCE": str(source), "DAGSTER_HOME": str(home / "dagster")}
    if personas:
        env["SESSIONBERT_PERSONAS"] = str(personas)
    home.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (home.parent / (log or f"{home.name}.log")).open("w") as out:
        done = subprocess.run([sys.executable, "-m", "sessionbert_assets.cli", "run", *args], env=env, stdout=out,
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
    for days in ("10", "6"):
        entry = hits["seen_days"].get(days, {})
        row[f"D{days}/users"] = entry.get("n_users", 0)
        for method in {hits["served_ranker"], "popularity", "sessionbert"}:
            if method in entry:
                row[f"D{days}/{method}/hit@5"] = round(entry[method]["hit@5"], 4)
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    row["persona_representation"] = sweep.get("representation", "sessionbert")
    row["encoder"] = _metadata(home, "pretrained_model").get("encoder", "")
    return row


def truth_figures(home: Path, world: WorldPaths, seed: int) -> dict:
    """Against the world's truth, after the run: the next-activity ceiling, and persona ARI and
    accuracy of what served and of every representation the choice compared."""
    sessions = pl.read_parquet(home / "session_splits.parquet")
    row = {}
    ceiling = baseline_scores(sessions.filter(pl.col("split") == "train"), sessions.filter(pl.col("split") == "test"),
                              load_truth(world.root, "sessions"))
    for head in ("service", "page"):
        if "ceiling" in ceiling[head]:
            row[f"{head}/ceiling"] = round(ceiling[head]["ceiling"]["accuracy"], 4)
    truth = load_truth(world.root, "users")
    served = score_personas(pl.read_parquet(home / "user_personas.parquet"), truth)
    row["personas/served/ari"], row["personas/served/accuracy"] = round(served["ari"], 4), round(served["accuracy"], 4)
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    ks = {name: c["k"] for name, c in sweep["representations"]["candidates"].items()}
    scores = truth_scores(pl.read_parquet(home / "session_embeddings.parquet"), sessions, ks, truth,
                          load_definitions(world.personas_yaml), user_vector_sessions(sweep), seed)
    for name, found in scores.items():
        row[f"personas/{name}/ari"], row[f"personas/{name}/accuracy"] = (round(found["ari"], 4),
                                                                          round(found["accuracy"], 4))
    return row


def _metadata(home: Path, asset: str) -> dict:
    """The metadata values of `asset`'s latest materialization in the home's Dagster instance."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        if event is None or event.asset_materialization is None:
            return {}
        return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()
                if isinstance(getattr(v, "value", v), int | float | str)}


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds of every figure, per data set; what served, counted."""
    summary = []
    for data in dict.fromkeys(r["data"] for r in rows):
        runs = [r for r in rows if r["data"] == data and r["succeeded"]]
        entry: dict = {"data": data, "runs": len(runs), "failed": sum(1 for r in rows if r["data"] == data) - len(runs)}
        for key in dict.fromkeys(k for r in runs for k in r):
            values = [r[key] for r in runs if key in r]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) and key != "seed":
                entry[key] = format_spread(values)
            elif all(isinstance(v, str) for v in values):
                entry[key] = ", ".join(f"{v} x{values.count(v)}" for v in dict.fromkeys(values))
        summary.append(entry)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="*", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--access-log", type=Path, help="a landing folder with a web server log")
    parser.add_argument("--homes", type=Path, default=Path("/tmp/sessionbert-small-data"))
    args = parser.parse_args(argv)
    # a seed of every data set before the next seed: a run cut short still covers them all
    runs = [("access_log", 0)] if args.access_log else []
    runs += [(name, seed) for seed in args.seeds for name in args.worlds]
    rows = []
    for name, seed in runs:
        home = args.homes / f"{name}-seed{seed}"
        world = None if name == "access_log" else generate_world(args.homes / "worlds" / f"{name}-seed{seed}",
                                                                  WORLDS[name], seed)
        source = args.access_log.resolve() if world is None else world.landing
        seconds, code = run_graph(home, source, seed, world.personas_yaml if world else None)
        row = {"data": name, "seed": seed, "seconds": round(seconds, 1), "succeeded": code == 0}
        if code == 0:
            row |= figures(home) | (truth_figures(home, world, seed) if world else {})
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "small_data.json").write_text(json.dumps({"runs": rows, "summary": summarize(rows),
                                                             "cpu": _cpu()}, indent=2) + "\n")
    for entry in summarize(rows):
        print("\n".join(f"{k:32s} {v}" for k, v in entry.items()), end="\n\n")
    print(f"written: {RESULTS / 'small_data.json'}")


def _cpu() -> str:
    found = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in found.splitlines() if line.startswith("Model name")), "")


if __name__ == "__main__":
    main()
