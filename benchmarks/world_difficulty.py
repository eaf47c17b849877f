"""How hard the synthetic world is: next-activity ceiling against Markov and popularity, over several seeds.

    python -m benchmarks.world_difficulty --profile small --seeds 0 1 2

Prints one table (mean and standard deviation over seeds) and writes
benchmarks/results/world_difficulty-<profile>.json. Each seed is a new world, generated, ingested,
serialized and split exactly as the pipeline does, with the baselines fitted on its train split
and scored on its test split.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from sessionbert_core.config import get_profile
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.evaluation.next_activity import baseline_scores, mean_and_spread
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import load_truth


def measure(profile: str, seed: int, folder: Path) -> dict:
    started = time.perf_counter()
    world = generate_world(folder / f"{profile}-{seed}", get_profile(profile).world, seed)
    generated = time.perf_counter()
    ingested = ingest_landing(world.landing, b"benchmark")
    sessions = split_sessions(serialize_sessions(ingested.events, ingested.billing), seed=seed)
    prepared = time.perf_counter()
    scores = baseline_scores(sessions.filter(pl.col("split") == "train"), sessions.filter(pl.col("split") == "test"),
                             load_truth(world.root, "sessions"))
    scores["seconds"] = {"generate": generated - started, "ingest_and_serialize": prepared - generated}
    scores["sessions"] = sessions.height
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {seed: measure(args.profile, seed, Path(tmp)) for seed in args.seeds}
    rows, summary = [], {}
    for head in ("service", "page"):
        for method in ("popularity", "markov", "ceiling"):
            for metric in ("accuracy", "f1_weighted", "f1_macro"):
                mean, spread = mean_and_spread(runs[s][head][method][metric] for s in args.seeds)
                summary[f"{head}/{method}/{metric}"] = {"mean": mean, "std": spread}
                rows.append((head, method, metric, mean, spread))
        mean, spread = mean_and_spread(runs[s][head]["ceiling"]["accuracy"] - runs[s][head]["markov"]["accuracy"]
                                       for s in args.seeds)
        summary[f"{head}/ceiling_minus_markov/accuracy"] = {"mean": mean, "std": spread}
        rows.append((head, "ceiling - markov", "accuracy", mean, spread))
    print(f"\nworld difficulty, profile {args.profile}, seeds {args.seeds} "
          f"({np.mean([r['n_sessions'] for r in runs.values()]):.0f} test sessions per seed)")
    print(f"{'head':<8} {'method':<18} {'metric':<12} {'mean':>7} {'std':>7}")
    for head, method, metric, mean, std in rows:
        print(f"{head:<8} {method:<18} {metric:<12} {mean:7.4f} {std:7.4f}")
    out = Path(__file__).parent / "results" / f"world_difficulty-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "seeds": args.seeds, "summary": summary,
                               "runs": {str(k): v for k, v in runs.items()}}, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
