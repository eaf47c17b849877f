"""Persona stability across retrains: the new clusters matched to the previous ones so that numbers persist,
and how many users moved, where to and why.

K-means numbers its clusters arbitrarily: retrained on next week's data, "cluster 3" may be last week's
cluster 0, and a user whose behaviour did not change may still "move". `match_clusters` pairs each new
cluster with a previous one (the Hungarian assignment, scipy's `linear_sum_assignment`) and gives it the
previous number when the pair is close enough, a number never used before otherwise; `relabel` renumbers
any frame with a `cluster` column; `stability` and `drift_report` then measure what moved.

Two ways to compare clusters, the first preferred:

    users       both runs' `user_id, cluster` given: the overlap matrix of users seen in both runs,
                previous x new. Pairs are scored by Jaccard |p ∩ n| / |p ∪ n| (users in both runs
                only), which needs no shared vector space: it works across a retrained encoder or
                a changed persona space.
    centroids   cosine of the L2-normalised centroids. Only meaningful when both runs' centroids
                live in the same space (same encoder weights, same persona space): a retrained
                SessionBERT or a refitted TF-IDF SVD has other axes and the cosine says nothing.

Thresholds (module constants, each a parameter):

    MIN_JACCARD = 0.5      a pair of clusters shares at least half of their users: the same people
    MIN_SIMILARITY = 0.5   centroids at most 60 degrees apart; refits of one cluster in one space
                           are usually above 0.9, so 0.5 refuses only real changes
    PART_SHARE = 0.25      a split: a previous cluster with two or more new clusters each holding at
                           least a quarter of its users (seen in both runs); a merge: a new cluster
                           with two or more previous clusters each giving at least a quarter of its
                           users. On centroids the users are replaced by the clusters' sizes (or
                           equal weights) among the new clusters nearest to one previous centroid,
                           and the other way round. A cluster scattered into many parts of under a
                           quarter each is no split: it reads as `vanished` and its parts as `new`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

MIN_JACCARD = 0.5
MIN_SIMILARITY = 0.5
PART_SHARE = 0.25
EVENTS = ("same", "split", "merge", "new", "vanished")
EVENT_SCHEMA = {"event": pl.String, "previous": pl.List(pl.Int64), "new": pl.List(pl.Int64)}


@dataclass(frozen=True)
class ClusterMatch:
    """What `match_clusters` found. `events` names clusters by their previous numbers and, for new
    clusters, by their kept numbers (what readers see after `relabel`)."""

    mapping: dict[int, int]  # new cluster (the K-means row) -> its kept number
    events: pl.DataFrame  # event, previous (list of numbers), new (list of kept numbers)
    basis: str  # "users" or "centroids": what the pairs were scored on
    scores: np.ndarray  # previous x new: the Jaccard or cosine the Hungarian assignment maximised


def match_clusters(previous_centroids: np.ndarray, new_centroids: np.ndarray,
                   previous_assignment: pl.DataFrame | None = None, new_assignment: pl.DataFrame | None = None,
                   previous_sizes: Sequence[float] | None = None, new_sizes: Sequence[float] | None = None,
                   previous_numbers: Sequence[int] | None = None, first_fresh: int | None = None,
                   min_similarity: float = MIN_SIMILARITY, min_jaccard: float = MIN_JACCARD,
                   part_share: float = PART_SHARE) -> ClusterMatch:
    """Match the new clusters to the previous ones; on shared users when both assignments are given and
    share a user, on centroids otherwise.

    `previous_centroids` (k_prev, d) row i is the cluster numbered `previous_numbers[i]` (default i: the
    numbers may have gaps once clusters vanished); `new_centroids` (k_new, d) row j is new cluster j, as
    K-means numbered it. Assignments are `user_id, cluster` frames: the previous one in previous numbers,
    the new one in K-means numbers. Sizes (users per cluster, in row order) weigh the centroid-based
    split and merge rule; they are unused on users. A cluster matched at or above the threshold keeps
    its partner's number; the others get fresh numbers from `first_fresh` (default: one past the
    largest previous number; pass the stored next number so a vanished number is never reused).
    """
    previous_centroids, new_centroids = np.atleast_2d(previous_centroids), np.atleast_2d(new_centroids)
    numbers = (np.arange(len(previous_centroids)) if previous_numbers is None
               else np.asarray(previous_numbers, dtype=np.int64))
    if len(numbers) != len(previous_centroids) or len(set(numbers.tolist())) != len(numbers):
        raise ValueError(f"previous_numbers must be {len(previous_centroids)} distinct numbers, one per centroid")
    overlap = (_overlap(previous_assignment, new_assignment, numbers, len(new_centroids))
               if previous_assignment is not None and new_assignment is not None else None)
    if overlap is not None and overlap.sum() > 0:
        union = overlap.sum(axis=1, keepdims=True) + overlap.sum(axis=0, keepdims=True) - overlap
        scores = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
        basis, threshold, split_flow, merge_flow = "users", min_jaccard, overlap, overlap
    else:
        scores = _cosine(previous_centroids, new_centroids)
        basis, threshold = "centroids", min_similarity
        split_flow, merge_flow = _nearest_flows(scores, min_similarity, previous_sizes, new_sizes)
    pairs = _hungarian(scores, threshold)
    mapping = _kept_numbers(pairs, numbers, len(new_centroids), first_fresh)
    events = _events(split_flow, merge_flow, pairs, part_share)
    named = sorted(((event, [int(numbers[p]) for p in ps], [mapping[n] for n in ns]) for event, ps, ns in events),
                   key=lambda e: (EVENTS.index(e[0]), e[1] or e[2]))
    return ClusterMatch(mapping, pl.DataFrame(named, schema=EVENT_SCHEMA, orient="row"), basis, scores)


def _kept_numbers(pairs: list[tuple[int, int]], numbers: np.ndarray, k_new: int,
                  first_fresh: int | None) -> dict[int, int]:
    """New cluster -> its partner's number, or the next fresh one (in K-means order)."""
    fresh = int(first_fresh if first_fresh is not None else (numbers.max() + 1 if len(numbers) else 0))
    kept = {n: int(numbers[p]) for p, n in pairs}
    mapping = {}
    for n in range(k_new):
        if n in kept:
            mapping[n] = kept[n]
        else:
            mapping[n], fresh = fresh, fresh + 1
    return mapping


def _check_assignment(frame: pl.DataFrame, name: str) -> None:
    missing = {"user_id", "cluster"} - set(frame.columns)
    if missing:
        raise ValueError(f"{name} needs `user_id, cluster` columns; missing {sorted(missing)}")
    if frame["user_id"].is_duplicated().any():
        raise ValueError(f"{name} has a user in more than one row: an assignment gives each user one cluster")


def _overlap(previous: pl.DataFrame, new: pl.DataFrame, numbers: np.ndarray, k_new: int) -> np.ndarray:
    """Users seen in both runs, counted by (previous row, new cluster)."""
    _check_assignment(previous, "previous_assignment")
    _check_assignment(new, "new_assignment")
    rows = pl.DataFrame({"previous": numbers, "row": np.arange(len(numbers))})
    both = (previous.select("user_id", previous=pl.col("cluster").cast(pl.Int64))
            .join(new.select("user_id", new=pl.col("cluster").cast(pl.Int64)), on="user_id")
            .join(rows, on="previous", how="left"))
    unknown = both.filter(pl.col("row").is_null())["previous"].unique().sort().to_list()
    if unknown:
        raise ValueError(f"previous_assignment names clusters {unknown} that have no previous centroid")
    if not both["new"].is_between(0, k_new - 1).all():
        raise ValueError(f"new_assignment names clusters outside 0..{k_new - 1}, the rows of new_centroids")
    overlap = np.zeros((len(numbers), k_new))
    np.add.at(overlap, (both["row"].to_numpy(), both["new"].to_numpy()), 1.0)
    return overlap


def _cosine(previous: np.ndarray, new: np.ndarray) -> np.ndarray:
    if previous.shape[1] != new.shape[1]:
        raise ValueError(f"centroids of {previous.shape[1]} and {new.shape[1]} dimensions live in different "
                         "spaces: match on users instead (both assignments, with users in common)")

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)

    return unit(previous) @ unit(new).T


def _nearest_flows(scores: np.ndarray, floor: float, previous_sizes, new_sizes) -> tuple[np.ndarray, np.ndarray]:
    """Centroid stand-ins for the user overlap. Split flow: each new cluster's weight goes to its nearest
    previous centroid; merge flow: each previous cluster's weight goes to its nearest new centroid (pairs
    under `floor` carry nothing)."""
    k_prev, k_new = scores.shape
    split_flow, merge_flow = np.zeros_like(scores), np.zeros_like(scores)
    if not k_prev or not k_new:
        return split_flow, merge_flow
    weight_new = np.ones(k_new) if new_sizes is None else np.asarray(new_sizes, dtype=np.float64)
    weight_prev = np.ones(k_prev) if previous_sizes is None else np.asarray(previous_sizes, dtype=np.float64)
    if len(weight_new) != k_new or len(weight_prev) != k_prev:
        raise ValueError(f"sizes need one number per centroid: {k_prev} previous and {k_new} new")
    nearest_prev, nearest_new = scores.argmax(axis=0), scores.argmax(axis=1)
    for n, p in enumerate(nearest_prev):
        if scores[p, n] >= floor:
            split_flow[p, n] = weight_new[n]
    for p, n in enumerate(nearest_new):
        if scores[p, n] >= floor:
            merge_flow[p, n] = weight_prev[p]
    return split_flow, merge_flow


def _hungarian(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(previous row, new cluster) pairs of the assignment that maximises the total score, those at or
    above `threshold` only: the Hungarian pairs every cluster it can, close or not."""
    if not scores.size:
        return []
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return [(int(p), int(n)) for p, n in zip(rows, cols, strict=True) if scores[p, n] >= threshold]


def _parts(flow: np.ndarray, share: float) -> set[int]:
    total = flow.sum()
    return {int(i) for i in np.flatnonzero(flow >= share * total)} if total > 0 else set()


def _events(split_flow: np.ndarray, merge_flow: np.ndarray, pairs: list[tuple[int, int]],
            share: float) -> list[tuple[str, list[int], list[int]]]:
    """Every previous and every new cluster in at least one event (rows and K-means numbers here).

    A kept pair is `same` unless a split or merge already names both; a split or merge also names the
    cluster that kept the number, so the continuation is visible beside the other parts."""
    keeper = dict(pairs)  # previous row -> new cluster that kept its number
    kept_from = {n: p for p, n in pairs}
    events = []
    for p in range(split_flow.shape[0]):
        parts = _parts(split_flow[p], share)
        if len(parts) >= 2:
            events.append(("split", [p], sorted(parts | ({keeper[p]} if p in keeper else set()))))
    for n in range(merge_flow.shape[1]):
        parts = _parts(merge_flow[:, n], share)
        if len(parts) >= 2:
            events.append(("merge", sorted(parts | ({kept_from[n]} if n in kept_from else set())), [n]))
    named_prev = {p for _, ps, _ in events for p in ps}
    named_new = {n for _, _, ns in events for n in ns}
    events += [("same", [p], [n]) for p, n in pairs
               if not any(p in ps and n in ns for _, ps, ns in events)]
    events += [("vanished", [p], []) for p in range(split_flow.shape[0]) if p not in keeper and p not in named_prev]
    events += [("new", [], [n]) for n in range(split_flow.shape[1]) if n not in kept_from and n not in named_new]
    return events


def relabel(assignment: pl.DataFrame, mapping: Mapping[int, int]) -> pl.DataFrame:
    """`assignment` (any frame with a `cluster` column: users, centroids, persona tags) renumbered by
    `mapping` (`ClusterMatch.mapping`); a cluster the mapping lacks is an error, not a silent null."""
    return assignment.with_columns(pl.col("cluster").replace_strict(
        {int(k): int(v) for k, v in mapping.items()}, return_dtype=pl.Int64))


def stability(previous: pl.DataFrame, new: pl.DataFrame, mapping: Mapping[int, int] | None = None) -> dict:
    """How much two `user_id, cluster` assignments agree, over the users in both.

    `ari`: adjusted Rand index (scikit-learn), blind to numbering: 1 when the same users group together,
    about 0 for chance. `unchanged_share`: users whose cluster number is the same, which is only
    meaningful once `new` carries kept numbers (give `mapping`, or pass it through `relabel` first).
    Both are None when no user is in both. Also the users compared and those in one run only.
    """
    _check_assignment(previous, "previous")
    _check_assignment(new, "new")
    if mapping is not None:
        new = relabel(new, mapping)
    both = previous.select("user_id", before="cluster").join(new.select("user_id", after="cluster"), on="user_id")
    compared = both.height
    return {
        "ari": float(adjusted_rand_score(both["before"], both["after"])) if compared else None,
        "unchanged_share": float((both["before"] == both["after"]).mean()) if compared else None,
        "n_users_compared": compared,
        "n_only_previous": previous.height - compared,
        "n_only_new": new.height - compared,
    }


@dataclass(frozen=True)
class DriftReport:
    transitions: pl.DataFrame  # from, to, users: moved users only, largest first
    activity_shifts: pl.DataFrame  # from, to, users, activity, shift, direction: the top transitions' why


def drift_report(previous: pl.DataFrame, new: pl.DataFrame, sessions_previous: pl.DataFrame,
                 sessions_new: pl.DataFrame, top: int = 5, n_activities: int = 3) -> DriftReport:
    """Where moved users went and, for the `top` largest moves, which activities grew and shrank.

    `previous` and `new` are `user_id, cluster` in kept numbers (`relabel` the new one first). The
    sessions are `user_id, activities` (a list of `service;page`), each run's window of each user: what
    the persona read, e.g. `recent_sessions(session_splits up to that run's last day, user_vector_sessions)`.
    A shift is the mean over the transition's users of (share of the activity in the user's new window -
    its share in the previous one), users without the activity counting 0: each user weighs the same,
    so one heavy user cannot make a move's explanation. The `n_activities` largest rises (`grew`) and
    falls (`shrank`) of each transition are kept.
    """
    moved = (previous.select("user_id", pl.col("cluster").alias("from"))
             .join(new.select("user_id", to="cluster"), on="user_id").filter(pl.col("from") != pl.col("to")))
    transitions = (moved.group_by("from", "to").len("users")
                   .sort(["users", "from", "to"], descending=[True, False, False]))
    largest = transitions.head(top)
    users = moved.join(largest.select("from", "to"), on=["from", "to"], how="semi")
    shares = (_activity_shares(sessions_previous, users, "before")
              .join(_activity_shares(sessions_new, users, "after"), on=["user_id", "activity"], how="full",
                    coalesce=True)
              .with_columns(shift=pl.col("after").fill_null(0.0) - pl.col("before").fill_null(0.0))
              .join(users, on="user_id")
              .group_by("from", "to", "activity").agg(pl.col("shift").sum())
              .join(largest, on=["from", "to"])
              .with_columns(pl.col("shift") / pl.col("users")))
    grew = shares.filter(pl.col("shift") > 0).sort("shift", "activity", descending=[True, False])
    shrank = shares.filter(pl.col("shift") < 0).sort("shift", "activity")
    shifts = pl.concat([
        grew.group_by("from", "to", maintain_order=True).head(n_activities).with_columns(direction=pl.lit("grew")),
        shrank.group_by("from", "to", maintain_order=True).head(n_activities).with_columns(direction=pl.lit("shrank")),
    ]).join(largest.with_row_index("order"), on=["from", "to", "users"])
    shifts = (shifts.sort(["order", "direction", pl.col("shift").abs()], descending=[False, False, True])
              .select("from", "to", "users", "activity", "shift", "direction"))
    return DriftReport(transitions, shifts)


def _activity_shares(sessions: pl.DataFrame, users: pl.DataFrame, name: str) -> pl.DataFrame:
    """`user_id, activity, <name>`: each activity's share of the user's activities in `sessions`."""
    return (sessions.join(users.select("user_id"), on="user_id", how="semi")
            .select("user_id", activity="activities").explode("activity").drop_nulls()
            .group_by("user_id", "activity").len("n")
            .select("user_id", "activity", (pl.col("n") / pl.col("n").sum().over("user_id")).alias(name)))


def dense_numbering(match: ClusterMatch, k: int) -> dict[int, int]:
    """`match.mapping` made a permutation of 0..k-1, for code that reads a cluster's number as its centroid's row:
    a kept number below k stays; the rest (fresh numbers, numbers of clusters that vanished when k fell) take
    the free numbers in increasing order. New K-means row -> its number."""
    kept = {row: number for row, number in sorted(match.mapping.items()) if number < k}
    seen: set[int] = set()
    for row, number in list(kept.items()):  # a number held twice (it cannot be from the assignment): first wins
        if number in seen:
            del kept[row]
        seen.add(number)
    free = iter(sorted(set(range(k)) - set(kept.values())))
    return {row: kept[row] if row in kept else next(free) for row in range(k)}


def renumbered_events(match: ClusterMatch, numbering: Mapping[int, int]) -> pl.DataFrame:
    """`match.events` with each new cluster named by its number under `numbering` (`dense_numbering`)."""
    number_of_kept = {kept: numbering[row] for row, kept in match.mapping.items()}
    return match.events.with_columns(pl.col("new").list.eval(
        pl.element().replace_strict(number_of_kept, return_dtype=pl.Int64)))


def seed_noise_floor(vectors: np.ndarray, k: int, seed: int) -> float:
    """ARI between K-means fits of the same user vectors with seeds `seed` and `seed + 1`: what moves with nothing
    changed but the start, the floor under which a retrain's ARI says nothing about the data."""
    from sessionbert_core.personas.segment import CosineKMeans

    first = CosineKMeans(k, random_state=seed).fit(vectors).labels_
    second = CosineKMeans(k, random_state=seed + 1).fit(vectors).labels_
    return float(adjusted_rand_score(first, second))
