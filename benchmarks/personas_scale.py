"""The persona steps at the paper's scale: clusters fitted on a seeded sample of users, every user assigned
slice by slice of users (`sessionbert_core.personas.slices`), against the whole table held at once.

    python -m benchmarks.personas_scale                         # 200k users, 37 sessions each, 768 wide
    python -m benchmarks.personas_scale --users 20000 50000     # peak memory against the data's size

For each number of users, a table of sessions and session embeddings is written in parts of
`--users-per-part` users (random unit vectors: what is measured is the data's size, not what the vectors
say; the paper's 7.4M sessions of BERT-base are 22.8 GB of float32), then each step runs in its own process:

- imports: the process with the libraries loaded and nothing read (what every peak below includes);
- sample: what `cluster_sweep` holds: the sessions and embeddings of the seeded sample of `CLUSTER_USERS`
  users, read from the parts (a semi-join streamed over them), and their user vectors;
- fit: `cluster_centroids`' fitting half: the same users' vectors computed slice by slice, cosine K-means
  at k = 8;
- assign: every user to their nearest centroid and each cluster's activity counts, slice by slice
  (`clusters_in_parts`: what `cluster_centroids`, `persona_mapping` and `user_personas` run);
- whole: the same assignment with both tables read whole (the path before the parts), only where the
  tables take under a third of the machine's memory.

Seconds and peak resident memory of the child (sampled every 0.1 s) per step; JSON in
benchmarks/results/personas-scale.json. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ACTIVITIES = [f"service{i % 12};page{i}" for i in range(60)]
K, N_RECENT = 8, 20
STEPS = ("imports", "sample", "fit", "assign", "whole")


def write_tables(folder: Path, users: int, sessions_per_user: int, dimension: int, users_per_part: int,
                 seed: int = 0) -> dict:
    """Sessions and embeddings of `users` users in parts of `users_per_part`, each part generated alone."""
    from sessionbert_core import storage

    rng = np.random.default_rng(seed)
    with storage.PartsWriter(folder / "sessions") as sessions, storage.PartsWriter(folder / "embeddings") as vectors:
        for number, low in enumerate(range(0, users, users_per_part)):
            part = _part(rng, low, min(low + users_per_part, users), sessions_per_user, dimension)
            name = f"part-{number:05d}"
            sessions.write(part.drop("embedding"), name)
            vectors.write(part.select("user_id", "session_id", "start", "embedding"), name)
        rows = sessions.rows
        sessions.commit(), vectors.commit()
    return {"users": users, "sessions": rows, "dimension": dimension, "parts": number + 1,
            "embeddings_gb": round(_folder_bytes(folder / "embeddings") / 1e9, 2)}


def _part(rng: np.random.Generator, low: int, high: int, sessions_per_user: int, dimension: int) -> pl.DataFrame:
    counts = rng.poisson(sessions_per_user - 1, size=high - low) + 1
    user = np.repeat(np.arange(low, high), counts)
    number = np.concatenate([np.arange(c) for c in counts])
    vectors = rng.standard_normal((len(user), dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(ACTIVITIES), size=(len(user), 5))
    ids = [f"u{u:07d}" for u in user]
    return pl.DataFrame({
        "user_id": ids, "session_id": [f"{u}-{n}" for u, n in zip(ids, number, strict=True)],
        "start": pl.Series(number * 3_600_000_000, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "split": "train", "activities": [[ACTIVITIES[i] for i in row] for row in picks],
        "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, dimension)),
    })


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.parquet"))


def child(step: str, folder: Path) -> dict:
    """One step in this process: its seconds and what it found."""
    from sessionbert_core import storage
    from sessionbert_core.personas.embed import user_vectors
    from sessionbert_core.personas.mapping import nearest_clusters
    from sessionbert_core.personas.representation import PersonaSpace
    from sessionbert_core.personas.segment import CosineKMeans, cluster_activity_counts
    from sessionbert_core.personas.slices import (
        CLUSTER_USERS,
        clusters_in_parts,
        sample_tables,
        sampled_users,
        user_vectors_in_parts,
    )

    started = time.perf_counter()
    embeddings, sessions = folder / "embeddings", folder / "sessions"
    found = {}
    space = PersonaSpace("sessionbert")
    if step == "sample":
        sample = sample_tables(storage.scan_table(embeddings), storage.scan_table(sessions), CLUSTER_USERS)
        found = {"sampled_users": len(user_vectors(sample.embeddings, N_RECENT)[0])}
    elif step == "fit":
        users, vectors = user_vectors_in_parts(embeddings, sessions, space, N_RECENT,
                                               sampled_users(storage.scan_table(sessions), CLUSTER_USERS)[0])
        np.save(folder / "centroids.npy", CosineKMeans(K, random_state=0).fit(vectors).cluster_centers_)
        found = {"fitted_on_users": len(users)}
    elif step == "assign":
        assigned = clusters_in_parts(embeddings, sessions, space, np.load(folder / "centroids.npy"), N_RECENT)
        found = {"users": assigned.of_user.height, "activity_rows": assigned.counts.height}
    elif step == "whole":
        of_user = nearest_clusters(storage.read_table(embeddings), np.load(folder / "centroids.npy"), N_RECENT)
        counts = cluster_activity_counts(storage.read_table(sessions), of_user)
        found = {"users": of_user.height, "activity_rows": counts.height}
    return {"seconds": round(time.perf_counter() - started, 1), **found}


def run_step(step: str, folder: Path) -> dict:
    """`child` in its own process, its resident memory sampled from here (`ru_maxrss` would start from this
    process's, which it inherits at the fork)."""
    from benchmarks.perf import MIB, RssSampler

    process = subprocess.Popen([sys.executable, "-m", "benchmarks.personas_scale", "--child", step, str(folder)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = RssSampler(process.pid, every=0.1)
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"step {step} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]) | {
        "peak_rss_mib": round(max(rss for _, rss in sampler.samples) / MIB)}


def measure(users: int, args: argparse.Namespace) -> dict:
    """The tables of `users` users written, then every step in its own process."""
    folder = args.work / f"users-{users}-{args.sessions_per_user}-{args.dimension}-{args.users_per_part}"
    if not (folder / "data.json").exists():  # written once, kept for the next run
        started = time.perf_counter()
        data = write_tables(folder, users, args.sessions_per_user, args.dimension, args.users_per_part)
        (folder / "data.json").write_text(json.dumps(data | {"write_seconds": round(time.perf_counter() - started)}))
    result = {"data": json.loads((folder / "data.json").read_text())}
    print(f"  {users} users: {result['data']}", flush=True)
    fits = result["data"]["embeddings_gb"] * 1e9 * 3 < psutil.virtual_memory().total
    for step in STEPS:
        result[step] = run_step(step, folder) if step != "whole" or fits else {
            "skipped": "the tables take over a third of the machine's memory"}
        print(f"  {users} users, {step:<7} {result[step]}", flush=True)
    return result


def table(results: dict) -> str:
    rows = [("users", "sessions", "embeddings GB", "step", "seconds", "peak MiB")]
    for users, result in results["runs"].items():
        data = result["data"]
        rows += [(users, f"{data['sessions']:,}", data["embeddings_gb"], step, result[step].get("seconds", "-"),
                  result[step].get("peak_rss_mib", result[step].get("skipped", "-"))) for step in STEPS]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[200_000])
    parser.add_argument("--sessions-per-user", type=int, default=37)  # the paper profile's 7.4M / 200k
    parser.add_argument("--dimension", type=int, default=768)  # BERT-base, the paper's
    parser.add_argument("--users-per-part", type=int, default=3000)  # what raw_sessions made at the paper's scale
    parser.add_argument("--work", type=Path, default=Path("/tmp/sessionbert-personas-scale"))
    parser.add_argument("--child", nargs=2, metavar=("STEP", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    from benchmarks.perf import machine

    results = {"machine": machine(), "k": K, "user_vector_sessions": N_RECENT,
               "runs": {str(users): measure(users, args) for users in args.users}}
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "personas-scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
