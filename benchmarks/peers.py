"""Next-activity peers (issue 38): SASRec, GRU4Rec, V-SKNN and a higher-order Markov chain beside SessionBERT.

    python -m benchmarks.peers --profile small --seeds 0 1 2
    python -m benchmarks.peers --profile small --seeds 0 1 2 --homes /tmp/sessionbert-benchmark   # the graph's splits

For each seed, the session splits: a whole-graph home's `session_splits.parquet` where --homes holds
one (`<homes>/<profile>-seed<N>/`, as benchmarks/personas_and_recommendations.py leaves them; its
SessionBERT test figures are then shown beside the peers), else a synthetic world generated,
ingested, serialized and split as the pipeline does (benchmarks/world_difficulty.py's way), kept
under --work and reused. Each peer (sessionbert_core/peers/) trains on train with its published
settings, chooses its epochs (or its one setting) on validation, and is scored on test under the
project's protocol: next service and next page from the prefix, the last activity the target.
Popularity, first-order Markov and the ceiling come from `baseline_scores`. Prints mean ± sd over
seeds with training seconds, and writes benchmarks/results/peers-<profile>.json with the CPU model.
Run it alone on an idle machine: the seconds are half its point.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from benchmarks.small_data import _cpu
from sessionbert_core.config import get_profile
from sessionbert_core.data.combine import ingest_landing
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.evaluation.next_activity import baseline_scores, format_spread, scores
from sessionbert_core.peers.gru4rec import GRU4Rec
from sessionbert_core.peers.markov import HigherOrderMarkov
from sessionbert_core.peers.protocol import NextActivityPeer
from sessionbert_core.peers.sasrec import SASRec
from sessionbert_core.peers.sknn import VSKNN
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import load_truth

RESULTS = Path(__file__).resolve().parent / "results"
PEERS: dict[str, Callable[[int], NextActivityPeer]] = {
    "sasrec": lambda seed: SASRec(seed=seed),
    "gru4rec": lambda seed: GRU4Rec(seed=seed),
    "v_sknn": lambda seed: VSKNN(),
    "markov3": lambda seed: HigherOrderMarkov(order=3),
}
BESIDE = ("sessionbert", "markov", "popularity", "ceiling")  # from the graph or baseline_scores, not trained here
HEADS = ("service", "page")


def session_splits(profile: str, seed: int, homes: Path | None, work: Path) -> tuple[pl.DataFrame, Path, Path | None]:
    """The seed's sessions with their split, the world root holding its truth, and the graph home they came from."""
    home = homes / f"{profile}-seed{seed}" if homes else None
    if home and (home / "session_splits.parquet").exists():
        return pl.read_parquet(home / "session_splits.parquet"), home / "worlds" / f"{profile}-seed{seed}", home
    folder = work / f"{profile}-seed{seed}"
    world = generate_world(folder / "world", get_profile(profile).world, seed)  # reused when already there
    kept = folder / "session_splits.parquet"
    if not kept.exists():
        ingested = ingest_landing(world.landing, b"benchmark")
        split_sessions(serialize_sessions(ingested.events, ingested.billing), seed=seed).write_parquet(kept)
    return pl.read_parquet(kept), world.root, None


def measure(profile: str, seed: int, peers: list[str], homes: Path | None, work: Path) -> dict:
    sessions, world, home = session_splits(profile, seed, homes, work)
    train, validation, test = (sessions.filter(pl.col("split") == s) for s in ("train", "validation", "test"))
    try:
        truth = load_truth(world, "sessions")
    except FileNotFoundError:
        truth = None
    result = {"seed": seed, "source": str(home or world.parent),
              "sessions": {"train": train.height, "validation": validation.height, "test": test.height},
              "beside": baseline_scores(train, test, truth), "peers": {}}
    if home and (home / "model_evaluation.json").exists():
        evaluation = json.loads((home / "model_evaluation.json").read_text())
        for head in HEADS:
            result["beside"][head]["sessionbert"] = evaluation[head]["sessionbert"]
    for name in peers:
        started = time.perf_counter()
        peer = PEERS[name](seed).fit(train, validation)
        fitted = time.perf_counter()
        predicted = peer.predict(test)
        result["peers"][name] = {head: scores(predicted[f"target_{head}"], predicted[f"predicted_{head}"])
                                 for head in HEADS}
        result["peers"][name] |= {"train_seconds": round(fitted - started, 1),
                                  "predict_seconds": round(time.perf_counter() - fitted, 1), "summary": peer.summary_}
        print(f"seed {seed} {name}: service {result['peers'][name]['service']['accuracy']:.4f}, page "
              f"{result['peers'][name]['page']['accuracy']:.4f}, {fitted - started:.1f} s training, "
              f"{peer.summary_.get('epochs', '-')} epochs", flush=True)
    return result


def table(runs: list[dict], peers: list[str]) -> list[dict]:
    """One row per method: mean ± sd over seeds of test accuracy and weighted F1 per head, and training seconds."""
    rows = []
    for name in [*peers, *BESIDE]:
        found = [r["peers"].get(name) or {h: r["beside"][h].get(name) for h in HEADS} for r in runs]
        if not all(f and all(f.get(h) for h in HEADS) for f in found):
            continue
        row = {"method": name}
        for head in HEADS:
            for metric in ("accuracy", "f1_weighted"):
                row[f"{head} {metric}"] = format_spread([f[head][metric] for f in found])
        row["train seconds"] = format_spread([f.get("train_seconds") for f in found], 1)
        row["epochs"] = format_spread([f.get("summary", {}).get("epochs") for f in found], 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--homes", type=Path, help="whole-graph homes to take the splits (and SessionBERT) from")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionbert-peers"),
                        help="where generated worlds and their splits are kept for the next run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the peers")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [measure(args.profile, seed, args.peers, args.homes, args.work) for seed in args.seeds]
    rows = table(runs, args.peers)
    print(f"\nnext activity on the test split, profile {args.profile}, seeds {args.seeds} (mean ± sd), "
          f"{args.threads} threads of {_cpu() or 'an unknown CPU'}")
    widths = {key: max(len(key), *(len(r[key]) for r in rows)) for key in rows[0]}
    print("  ".join(f"{key:<{w}}" for key, w in widths.items()))
    for row in rows:
        print("  ".join(f"{row[key]:<{w}}" for key, w in widths.items()))
    out = RESULTS / f"peers-{args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "seeds": args.seeds, "cpu": _cpu(), "threads": args.threads,
                               "torch": torch.__version__, "table": rows, "runs": runs}, indent=2, default=str) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
