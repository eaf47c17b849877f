"""The persona steps at any scale: clusters fitted on a seeded sample of users, every user then assigned one
slice (a range of users) of the session and embedding tables at a time.

The sweep, the choice of representation and the centroids need every vector of the users they fit at
once; past `CLUSTER_USERS` users they fit on a seeded sample of that many, and memory is bounded by the
sample. Assigning a user to their nearest centroid, and counting what each cluster's users did, needs only
that user's own sessions, so it runs slice by slice: the users of a range, read from every part (a day) of
`session_splits` and `session_embeddings` (each part sorted by user in small row groups, so a range reads
its own rows), and memory holds one slice.
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
USERS_PER_SLICE = 5_000  # users assigned at once: at the paper's 37 sessions a user, about 0.6 GiB of vectors
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


def user_ranges(sessions: Path, users_per_slice: int = USERS_PER_SLICE) -> list[pl.Expr]:
    """The slices of the users of a table (one file or parts): a filter on `user_id` for each range of
    `users_per_slice` users, in order."""
    users = storage.scan_table(sessions).select(pl.col("user_id").unique()).collect(engine="streaming")["user_id"]
    bounds = users.sort()[::max(users_per_slice, 1)].to_list()[1:]
    ranges, low = [], None
    for high in [*bounds, None]:
        ranges.append((pl.lit(True) if low is None else pl.col("user_id") >= low)
                      & (pl.lit(True) if high is None else pl.col("user_id") < high))
        low = high
    return ranges


def paired_parts(embeddings: Path, sessions: Path, users_per_slice: int = USERS_PER_SLICE
                 ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """The embeddings and sessions of each slice of users, read from every part of both tables."""
    for users in user_ranges(sessions, users_per_slice):
        yield (storage.scan_table(embeddings).filter(users).collect(),
               storage.scan_table(sessions).select(SESSION_COLUMNS).filter(users).collect())


def user_vectors_in_parts(embeddings: Path, sessions: Path, space: PersonaSpace, n_recent: int,
                          users: pl.Series | None = None, users_per_slice: int = USERS_PER_SLICE
                          ) -> tuple[list[str], np.ndarray]:
    """`embed.user_vectors` in `space` of the given users (all where None), slice by slice: memory holds one
    slice and the users' vectors, not their sessions."""
    ids, vectors = [], []
    for embedded, part in paired_parts(embeddings, sessions, users_per_slice):
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
                      n_recent: int, users_per_slice: int = USERS_PER_SLICE) -> Assigned:
    """Every user at their nearest centroid in `space`, and each cluster's activity counts, slice by slice."""
    users, counts = [], []
    for embedded, part in paired_parts(embeddings, sessions, users_per_slice):
        of_user = nearest_clusters(space.session_vectors(embedded, part), centroids, n_recent)
        users.append(of_user)
        counts.append(cluster_activity_counts(part, of_user).select("cluster", "activity", "count"))
    schema = {"cluster": pl.Int64, "activity": pl.String, "count": pl.Int64}
    summed = activity_shares((pl.concat([c.cast(schema) for c in counts]) if counts else pl.DataFrame(schema=schema))
                             .group_by("cluster", "activity").agg(pl.col("count").sum()))
    of_user = pl.concat(users) if users else pl.DataFrame(schema={"user_id": pl.String, "cluster": pl.Int64})
    return Assigned(of_user.sort("user_id"), summed)
