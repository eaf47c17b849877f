"""Personas and recommendations from one retrain to the next (issue 42): the whole graph on a world's first
days, then retrained when the last `--new-days` arrive, the first run's results in place.

    python -m benchmarks.stability --worlds sparse few_days --seeds 0 [--new-days 7]

Each world (benchmarks/small_data.py's WORLDS, or `default`: the `small` profile's world) is generated; a
landing folder holds all but its last days, and `sessionbert run` (profile small) runs on it; then the held-back
days land as new files and `sessionbert run` retrains everything (tokenizer, pretraining, fine-tuning, the
sweep, the clusters). The
table reports what the retrain's `cluster_centroids` measured against the first run (ARI, share of users
whose persona number is unchanged, the K-means seed's noise floor, users moved), the `recommendation_table`'s
churn, and each run's ARI against the world's true personas. Writes benchmarks/results/stability.json (a row
per world and seed, with the CPU; other worlds' rows kept). Run it alone: each graph trains two or three models.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl

from benchmarks.small_data import WORLDS, _cpu, _metadata, run_graph
from sessionbert_core.config import get_profile
from sessionbert_core.personas.mapping import persona_evaluation as score_personas
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.structure import WORLD_START
from sessionbert_core.world.truth import load_truth

RESULTS = Path(__file__).resolve().parent / "results"


def retrain(name: str, seed: int, new_days: int, homes: Path) -> dict:
    size = get_profile("small").world if name == "default" else WORLDS[name]
    world = generate_world(homes / "worlds" / f"{name}-seed{seed}", size, seed)
    home, landing = homes / f"{name}-seed{seed}", homes / "landing" / f"{name}-seed{seed}"
    shutil.rmtree(home, ignore_errors=True)
    held = min(new_days, size.n_days // 3)
    row = {"data": name, "seed": seed, "days": size.n_days, "new_days": held}
    if held == 0:
        return row | {"succeeded": False, "why": "a one-day world has no days to hold back"}
    cut = WORLD_START.date() + timedelta(days=size.n_days - held)  # the first day held back
    arrives = _first_days(world.landing, landing, cut)
    truth = load_truth(world.root, "users")
    seconds, code = run_graph(home, landing, seed, world.personas_yaml, (), f"{home.name}-first.log")
    if code != 0:
        return row | {"succeeded": False, "why": "the first run failed"}
    row["first/seconds"] = round(seconds, 1)
    row["first/ari_vs_truth"] = round(score_personas(pl.read_parquet(home / "user_personas.parquet"), truth)["ari"], 4)
    arrives()  # the held-back days land as new files, as a day's export would
    seconds, code = run_graph(home, landing, seed, world.personas_yaml, (), f"{home.name}-retrain.log")
    if code != 0:
        return row | {"succeeded": False, "why": "the retrain failed"}
    row |= {"succeeded": True, "retrain/seconds": round(seconds, 1), "retrain/ari_vs_truth": round(
        score_personas(pl.read_parquet(home / "user_personas.parquet"), truth)["ari"], 4)}
    clusters, table = _metadata(home, "cluster_centroids"), _metadata(home, "recommendation_table")
    for key in ("stability/ari", "stability/unchanged_share", "stability/users_compared",
                "stability/seed_noise_floor_ari", "drift/moved_users", "k"):
        row[key] = clusters.get(key)
    for key in ("churn/share", "churn/model_share", "churn/users_compared"):
        row[key] = table.get(key)
    return row


def _first_days(source: Path, landing: Path, cut) -> Callable[[], None]:
    """`landing` holding the world's page views and bills before `cut`; the function that lands the rest."""
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    tables = {kind: pl.read_parquet(source / f"{kind}-00000.parquet") for kind in ("events", "billing")}
    day = {"events": pl.col("timestamp").dt.date(), "billing": pl.col("date")}
    for kind, frame in tables.items():
        frame.filter(day[kind] < cut).write_parquet(landing / f"{kind}-00000.parquet")

    def arrive() -> None:
        for kind, frame in tables.items():
            frame.filter(day[kind] >= cut).write_parquet(landing / f"{kind}-00001.parquet")

    return arrive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="+", default=["sparse", "few_days"], choices=["default", *WORLDS])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--new-days", type=int, default=7, help="days held back for the retrain (at most a third)")
    parser.add_argument("--homes", type=Path, default=Path("/tmp/sessionbert-stability"))
    args = parser.parse_args(argv)
    out = RESULTS / "stability.json"
    kept = json.loads(out.read_text())["runs"] if out.exists() else []  # other worlds' rows stay
    for seed in args.seeds:
        for name in args.worlds:
            row = retrain(name, seed, args.new_days, args.homes) | {"cpu": _cpu()}
            kept = [r for r in kept if (r["data"], r["seed"]) != (name, seed)] + [row]
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"runs": kept}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
