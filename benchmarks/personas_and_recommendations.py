"""Personas (paper 4.2-4.4, Table 7) and new-service recommendation (Table 6, appendix B), over seeds.

    python -m benchmarks.personas_and_recommendations --profile small --seeds 0 1 2

For each seed the whole asset graph runs through Dagster (`sessionbert run`) in its own
SESSIONBERT_HOME under --homes (kept, so `--reuse` re-reads a finished seed). From its artifacts:

- personas: the chosen k against the number of separable persona groups, found by the same k rule
  on the users' *true* task mixes (the representation a perfect encoder would give), the
  SessionBERT and general-language silhouette curves, ARI, NMI, persona accuracy; and the same
  figures with [CLS] pooling instead of mean pooling (the pooling choice);
- recommendation: the Hit@k table for D = 6, 10, 12 and the appendix B curve (Hit@5 at D = 10 for
  3, 5, 8, 10, 12 and 15 recent sessions), and the persona fit of the count and persona rankers.

Prints mean and standard deviation over seeds, the quality bars, and writes
benchmarks/results/personas_and_recommendations-<profile>.json and the appendix B plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from sessionbert_core import plots
from sessionbert_core.data.serialize import recent_sessions
from sessionbert_core.evaluation.next_activity import format_spread
from sessionbert_core.personas.embed import embed_sessions, load_encoder, user_vector_sessions, user_vectors
from sessionbert_core.personas.mapping import assign_personas, load_definitions, map_clusters, persona_evaluation
from sessionbert_core.personas.representation import PERSONA_SPACE, served_vectors
from sessionbert_core.personas.segment import K_RANGE, CosineKMeans, choose_k, silhouette_sweep
from sessionbert_core.recommend.hit_at_k import hit_at_k, load_recommenders, rankings, split_seen_unseen
from sessionbert_core.recommend.ranking import (
    candidates,
    observed_adoptions,
    persona_fit,
    rank_by_count,
    rank_by_persona,
    used_services,
)
from sessionbert_core.world.truth import WorldPaths, load_truth

RESULTS = Path(__file__).resolve().parent / "results"
RECENT = (3, 5, 8, 10, 12, 15)


def run_graph(home: Path, profile: str, seed: int) -> float:
    env = os.environ | {"SESSIONBERT_HOME": str(home), "SESSIONBERT_PROFILE": profile, "SESSIONBERT_SEED": str(seed),
                        "SESSIONBERT_SOURCE": "synthetic"}
    started = time.perf_counter()
    log = home.parent / f"{home.name}.log"
    home.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "sessionbert_assets.cli", "run"], env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"the graph failed for seed {seed}: see {log}")
    return time.perf_counter() - started


def separable_groups(world: WorldPaths, n_recent: int, seed: int) -> dict:
    """The k rule applied to each user's true task mix over their recent sessions."""
    starts = pl.read_parquet(world.root.parent.parent / "session_splits.parquet").select("session_id", "start")
    truth = load_truth(world.root, "sessions").join(starts, on="session_id")
    tasks = sorted(truth["task"].unique())
    recent = recent_sessions(truth, n_recent)
    mix = recent.group_by("user_id", "task").len().pivot("task", index="user_id", values="len").fill_null(0)
    mix = mix.select("user_id", *[t for t in tasks if t in mix.columns]).sort("user_id")
    vectors = mix.drop("user_id").to_numpy().astype(float)
    curve = silhouette_sweep(vectors, K_RANGE, 2000, seed)
    return {"k": choose_k(curve), "silhouette": {str(k): v for k, v in curve.items()}}


def pooling_figures(home: Path, world: WorldPaths, pooling: str, n_recent: int, seed: int) -> dict:
    """Personas with another pooling: curve, k, ARI, NMI and accuracy, by the assets' own steps."""
    sessions = pl.read_parquet(home / "session_splits.parquet")
    model, tokenizer = load_encoder(home / "pretrained_model")
    embeddings = embed_sessions(model, tokenizer, sessions, pooling)
    users, vectors = user_vectors(embeddings, n_recent)
    curve = silhouette_sweep(vectors, K_RANGE, 2000, seed)
    k = choose_k(curve)
    kmeans = CosineKMeans(k, random_state=seed).fit(vectors)
    definitions = load_definitions(world.personas_yaml)
    of_user = pl.DataFrame({"user_id": users, "cluster": kmeans.predict(vectors).astype(np.int64)})
    tags = map_clusters(sessions, of_user, definitions).tags
    assigned = assign_personas(embeddings, kmeans.cluster_centers_, tags, n_recent)
    figures = persona_evaluation(assigned, load_truth(world.root, "users"))
    return {"k": k, "silhouette": {str(kk): v for kk, v in curve.items()},
            **{key: figures[key] for key in ("ari", "nmi", "accuracy")}}


def recommendation_figures(home: Path, world: WorldPaths, seed: int) -> dict:
    """The appendix B curve and the persona fit of the count and persona rankers."""
    sessions = pl.read_parquet(home / "session_splits.parquet")
    billing = pl.read_parquet(home / "billing_records.parquet")
    # the persona ranker's clusters in the space the graph served (representation.py)
    embeddings = served_vectors(home / PERSONA_SPACE, pl.read_parquet(home / "session_embeddings.parquet"), sessions)
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    recommenders = load_recommenders(home / "finetuned_model", sessions, embeddings, sweep["k"],
                                     user_vector_sessions(sweep), None, world.root, seed=seed)
    test_users = sessions.filter(pl.col("split") == "test")["user_id"].unique()
    curve = {}
    for recent in RECENT:
        entry = hit_at_k(sessions, billing, recommenders, (10,), recent, test_users)["seen_days"]["10"]
        curve[str(recent)] = {m: entry[m]["hit@5"] for m in ("sessionbert", "sessionbert_persona", "markov")}
    predictions = recommenders.sessionbert(recent_sessions(sessions, 8))
    found = candidates(predictions, used_services(sessions, billing))
    clusters = pl.read_parquet(home / "user_personas.parquet").select("user_id", "cluster")
    definitions = load_definitions(world.personas_yaml)
    truth = load_truth(world.root, "users")
    fit = {
        "count": persona_fit(rank_by_count(found), truth, definitions.services_of_persona),
        "persona": persona_fit(rank_by_persona(found, clusters, observed_adoptions(sessions)), truth,
                               definitions.services_of_persona),
    }
    # early in the window, when users still have persona tasks to take up: the D = 10 rankings of test users
    split = split_seen_unseen(sessions, billing, 10, recommenders.used_before)
    ranked = rankings(split, recommenders, 8)
    for method in ("sessionbert", "sessionbert_persona"):
        scored = ranked[method].filter(pl.col("user_id").is_in(test_users.implode()))
        fit[f"{method}_D10"] = persona_fit(scored, truth, definitions.services_of_persona)
    return {"appendix_b": curve, "persona_fit": {k: v.get("share") for k, v in fit.items()},
            "persona_fit_per_persona": {k: v.get("per_persona") for k, v in fit.items()}}


def measure(home: Path, profile: str, seed: int, reuse: bool) -> dict:
    seconds = None
    if not (reuse and (home / "hit_at_k_evaluation.json").exists()):
        seconds = run_graph(home, profile, seed)
    world = WorldPaths(home / "worlds" / f"{profile}-seed{seed}")
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    return {
        "seed": seed, "graph_seconds": seconds,
        "personas": json.loads((home / "persona_evaluation.json").read_text()),
        "sweep": sweep,
        "separable_groups": separable_groups(world, user_vector_sessions(sweep), seed),
        "cls_pooling": pooling_figures(home, world, "cls", user_vector_sessions(sweep), seed),
        "hit_at_k": json.loads((home / "hit_at_k_evaluation.json").read_text()),
        "recommendation": recommendation_figures(home, world, seed),
    }




def print_personas(runs: list[dict], profile: str) -> None:
    print(f"\nPersonas on {profile}, {len(runs)} seeds (mean ± std)")
    print(f"  {'seed':<6}{'k':>4}{'groups':>8}{'ARI':>8}{'NMI':>8}{'accuracy':>10}  | CLS pooling: k, ARI, accuracy")
    for r in runs:
        p, c = r["personas"], r["cls_pooling"]
        print(f"  {r['seed']:<6}{p['k']:>4}{r['separable_groups']['k']:>8}{p['ari']:>8.3f}{p['nmi']:>8.3f}"
              f"{p['accuracy']:>10.3f}  | {c['k']}, {c['ari']:.3f}, {c['accuracy']:.3f}")
    personas = sorted({p for r in runs for p in r["personas"]["per_persona"]})
    print("  sensitivity per persona: " + ", ".join(
        f"{p} {format_spread([r['personas']['per_persona'].get(p, {}).get('sensitivity') for r in runs])}"
        for p in personas))
    print("  silhouette by k, SessionBERT vs general-language (same users):")
    for k in (str(k) for k in K_RANGE):
        print(f"    k={k:>2}  {format_spread([r['sweep']['silhouette']['sessionbert_same_users'][k] for r in runs])}   "
              f"{format_spread([r['sweep']['silhouette']['general_language'][k] for r in runs])}")


def _methods(runs: list[dict]) -> list[str]:
    return [m for m, v in runs[0]["hit_at_k"]["seen_days"]["10"].items() if isinstance(v, dict)]


def print_recommendations(runs: list[dict], profile: str) -> None:
    print(f"\nHit@k on {profile} (mean ± std over seeds)")
    for days in ("6", "10", "12"):
        users = format_spread([r["hit_at_k"]["seen_days"][days]["n_users"] for r in runs])
        print(f"  D = {days} ({users} users)")
        for m in _methods(runs):
            cells = [format_spread([r["hit_at_k"]["seen_days"][days][m][metric] for r in runs])
                     for metric in ("hit@3", "hit@5", "ndcg@5", "mrr")]
            print(f"    {m:<26}" + "  ".join(f"{c:>14}" for c in cells))
    print("  appendix B, Hit@5 at D = 10 by recent sessions:")
    for recent in (str(n) for n in RECENT):
        print(f"    {recent:>3} sessions  " + "  ".join(
            f"{m} {format_spread([r['recommendation']['appendix_b'][recent][m] for r in runs])}"
            for m in ("sessionbert", "sessionbert_persona", "markov")))
    print("  persona fit (share of recommended services in the true persona's tasks): " + ", ".join(
        f"{k} {format_spread([r['recommendation']['persona_fit'][k] for r in runs])}"
        for k in ("count", "persona", "sessionbert_D10", "sessionbert_persona_D10")))


def quality_bars(runs: list[dict]) -> dict[str, bool]:
    """The bars every seed must clear: the persona k, silhouette, ARI and accuracy, and Hit@5 at D = 10."""
    def d10(r, m):
        return r["hit_at_k"]["seen_days"]["10"][m]["hit@5"]

    def above_general(r):
        curves = r["sweep"]["silhouette"]
        general = curves["general_language"]
        return all(curves["sessionbert_same_users"][k] > general[k] for k in general)

    baselines = [m for m in _methods(runs) if m in ("popularity", "markov", "random")]
    bars = {"k_equals_separable_groups": all(r["personas"]["k"] == r["separable_groups"]["k"] for r in runs),
            "sessionbert_silhouette_above_general_language": all(above_general(r) for r in runs),
            "ari_at_least_0.8": all(r["personas"]["ari"] >= 0.8 for r in runs),
            "persona_accuracy_at_least_0.9": all(r["personas"]["accuracy"] >= 0.9 for r in runs)}
    for method in ("sessionbert", "sessionbert_persona"):
        bars[f"{method}_hit5_above_baselines_D10"] = all(d10(r, method) > max(d10(r, b) for b in baselines)
                                                         for r in runs)
        bars[f"{method}_hit5_at_least_80pct_of_oracle_D10"] = all(d10(r, method) >= 0.8 * d10(r, "oracle")
                                                                  for r in runs)
    return bars


def report(runs: list[dict], profile: str) -> dict[str, bool]:
    print_personas(runs, profile)
    print_recommendations(runs, profile)
    bars = quality_bars(runs)
    print("\nQuality bars (every seed):")
    for name, passed in bars.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--homes", type=Path, default=Path("/tmp/sessionbert-benchmark"))
    parser.add_argument("--reuse", action="store_true", help="re-read seeds whose graph already ran")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(measure(args.homes / f"{args.profile}-seed{seed}", args.profile, seed, args.reuse))
        print(f"seed {seed}: done", flush=True)
    bars = report(runs, args.profile)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"personas_and_recommendations-{args.profile}.json"
    out.write_text(json.dumps({"profile": args.profile, "seeds": args.seeds, "bars": bars, "runs": runs}, indent=1))
    lines = {m: {int(n): np.mean([r["recommendation"]["appendix_b"][n][m] for r in runs]) for n in
                  runs[0]["recommendation"]["appendix_b"]} for m in ("sessionbert", "sessionbert_persona", "markov")}
    fig = plots.curves(lines, xlabel="recent sessions", ylabel="Hit@5, D = 10")
    fig.savefig(RESULTS / f"appendix_b-{args.profile}.png", dpi=90)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
