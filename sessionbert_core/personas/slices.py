"""The persona steps at any scale: clusters fitted on a seeded sample of users, every user then assigned one
part (a range of users) of the session and embedding tables at a time.

The sweep, the choice of representation and the centroids need every vector of the users they fit at
once; past `CLUSTER_USERS` users they fit on a seeded sample of that many, and memory is bounded by the
sample. Assigning a user to their nearest centroid, and counting what each cluster's users did, needs only
that user's own sessions, so it runs part by part of the tables (`storage.Parts`: the same part of
`session_splits` and of `session_embeddings` holds the same users) and memory holds one part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from sessionbert_core import storage
from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.mapping import nearest_clusters
from sessionbert_core.personas.representation import PersonaSpace
from sessionbert_core.personas.segment import activity_shares, cluster_activity_counts

CLUSTER_USERS = 20_000  # users the sweep and the centroids fit on; every user is assigned whatever the number
SESSION_COLUMNS = ["user_id", "session_id", "activities"]  # what the spaces and the counts read of a session


def sampled_users(sessions: pl.LazyFrame, n: int | None, seed: int = 0) -> tuple[pl.Series | None, int]:
    """A seeded sample of `n` of the users of `sessions`, sorted (None where `n` is None or covers them all),
    and how many users there are."""
    users = sessions.select(pl.col("user_id").unique()).collect(engine="streaming")["user_id"].sort()
    if n is None or len(users) <= n:
        return None, len(users)
    if n < 1:
        raise ValueError(f"the persona clusters need a sample of at least one user, not {n}")
    rows = np.sort(np.random.default_rng(seed).choice(len(users), size=n, replace=False))
    return users.gather(rows), len(users)


@dataclass(frozen=True)
class Sample:
    embeddings: pl.DataFrame  # the session embeddings of the sampled users
    sessions: pl.DataFrame  # their sessions
    users: int  # users in the tables
    sampled: int  # users in the sample


def sample_tables(embeddings: pl.LazyFrame, sessions: pl.LazyFrame, n: int | None, seed: int = 0) -> Sample:
    """The embeddings and sessions of `sampled_users(sessions, n, seed)`, in memory."""
    users, total = sampled_users(sessions, n, seed)
    return Sample(of_users(embeddings, users), of_users(sessions, users), total,
                  total if users is None else len(users))


def of_users(table: pl.LazyFrame, users: pl.Series | None) -> pl.DataFrame:
    """The rows of `table` of the given users (all of them where `users` is None), streamed from its parts."""
    if users is not None:
        table = table.join(pl.LazyFrame({"user_id": users}), on="user_id", how="semi")
    return table.collect(engine="streaming")


def paired_parts(embeddings: Path, sessions: Path) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Each part of `embeddings` with the part of `sessions` it was embedded from (same name, same users);
    a table written as one file is one part."""
    if not Path(embeddings).is_dir() or not Path(sessions).is_dir():
        yield storage.read_table(embeddings), storage.scan_table(sessions).select(SESSION_COLUMNS).collect()
        return
    session_parts = {path.name: path for path in storage.part_paths(sessions)}
    for path in storage.part_paths(embeddings):
        if path.name not in session_parts:
            raise ValueError(f"{path} has no part of the same users in {sessions}: re-materialize session_embeddings")
        yield pl.read_parquet(path), pl.read_parquet(session_parts[path.name], columns=SESSION_COLUMNS)


def user_vectors_in_parts(embeddings: Path, sessions: Path, space: PersonaSpace, n_recent: int,
                          users: pl.Series | None = None) -> tuple[list[str], np.ndarray]:
    """`embed.user_vectors` in `space` of the given users (all where None), part by part: memory holds one
    part and the users' vectors, not their sessions."""
    ids, vectors = [], []
    for embedded, part in paired_parts(embeddings, sessions):
        if users is not None:
            embedded = embedded.filter(pl.col("user_id").is_in(users.implode()))
        found, found_vectors = user_vectors(space.session_vectors(embedded, part), n_recent)
        ids += found
        vectors.append(found_vectors)
    return ids, np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True)
class Assigned:
    of_user: pl.DataFrame  # user_id, cluster: every user's nearest centroid
    counts: pl.DataFrame  # cluster, activity, count, share: what each cluster's users did (every session)


def clusters_in_parts(embeddings: Path, sessions: Path, space: PersonaSpace, centroids: np.ndarray,
                      n_recent: int) -> Assigned:
    """Every user at their nearest centroid in `space`, and each cluster's activity counts, part by part."""
    users, counts = [], []
    for embedded, part in paired_parts(embeddings, sessions):
        of_user = nearest_clusters(space.session_vectors(embedded, part), centroids, n_recent)
        users.append(of_user)
        counts.append(cluster_activity_counts(part, of_user).select("cluster", "activity", "count"))
    schema = {"cluster": pl.Int64, "activity": pl.String, "count": pl.Int64}
    summed = activity_shares((pl.concat([c.cast(schema) for c in counts]) if counts else pl.DataFrame(schema=schema))
                             .group_by("cluster", "activity").agg(pl.col("count").sum()))
    of_user = pl.concat(users) if users else pl.DataFrame(schema={"user_id": pl.String, "cluster": pl.Int64})
    return Assigned(of_user.sort("user_id"), summed)
