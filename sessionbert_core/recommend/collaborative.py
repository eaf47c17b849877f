"""Collaborative rankers on the users x services matrix of what users used: EASE and item-kNN.

The recommender-systems engineer's answer to "which service next": no sessions, no model of
activities, only which services go together across users. Both are item-item models: a service x
service weight matrix W, a user's scores X_u W (X the binary matrix of used services, catalogue
columns only), the services the user already used never ranked. A user with nothing used scores 0
everywhere; ties (theirs, and any other) go to the service more users used, then to its name, so
such a user gets the most used services: popularity of use, the only evidence there is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from sessionbert_core.recommend.ranking import N_RECOMMENDATIONS, RANKED

NEIGHBOURS = 20  # item-kNN's k (Deshpande & Karypis 2004 found 10 to 30 best); every other service when fewer
# EASE's L2 weight, as multiples of the mean diagonal of X^T X (users per service): Steck's 500 on ML-20M and
# 200 on MSD are about 1 and 0.25 of their mean, and on a catalogue of tens of services with hundreds of users
# an absolute 500 would drown the data. The multiple is picked by holding out one used service per user.
L2_MULTIPLES = (0.01, 0.03, 0.1, 0.3, 1.0)
HOLDOUT_USERS = 5_000  # users with a service held out to pick L2: plenty for a Hit@5, bounded in time
BLOCK = 4_096  # users scored at once: memory bounded by the block, not by the number of users


@dataclass(frozen=True)
class ItemItemRanker:
    """A fitted item-item model: scores X_u W over the catalogue, the top `n` unused services per user."""

    services: tuple[str, ...]  # the catalogue, sorted by name (so a column's index orders names)
    weights: np.ndarray  # service x service: how much using the row service speaks for the column one
    usage: np.ndarray  # users per service in the fit: the tie-break
    name: str = ""
    l2: float | None = None  # EASE's, as picked

    def rank(self, users: pl.Series, used: pl.DataFrame, n: int = N_RECOMMENDATIONS) -> pl.DataFrame:
        """The RANKED frame: each of `users`' top `n` catalogue services absent from `used` (user_id, service)."""
        users = users.unique().sort()
        parts = [self._rank_block(users.slice(start, BLOCK), used, n) for start in range(0, users.len(), BLOCK)]
        return pl.concat(parts) if parts else pl.DataFrame(schema=RANKED)

    def _rank_block(self, users: pl.Series, used: pl.DataFrame, n: int) -> pl.DataFrame:
        x = usage_matrix(used.filter(pl.col("user_id").is_in(users.implode())), users, self.services)
        rows, columns, scores = self.top_unused(x, n)
        frame = pl.DataFrame({"user_id": users.to_numpy()[rows], "service": np.asarray(self.services, dtype=object)[
            columns], "score": scores}, schema_overrides={"service": pl.String})
        return (frame.group_by("user_id", maintain_order=True).head(n)
                .with_columns(rank=pl.int_range(1, pl.len() + 1).over("user_id"))
                .select(list(RANKED)).cast(RANKED))

    def top_unused(self, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and score of the best-scored unused services of each row of X (users x catalogue), rows
        in order and each row best first: at least its `n` best (fewer when it used nearly everything)."""
        scores = np.round(x @ self.weights, 10)  # equal sums of unequal float paths tie, then by usage and name
        names = np.broadcast_to(np.arange(len(self.services)), scores.shape)
        order = np.lexsort((names, np.broadcast_to(-self.usage, scores.shape), -scores), axis=-1)[:, :n + int(
            x.sum(axis=1).max(initial=0))]  # enough columns for n after the used ones are dropped
        rows = np.broadcast_to(np.arange(len(x))[:, None], order.shape)
        keep = x[rows, order] == 0
        return rows[keep], order[keep], scores[rows[keep], order[keep]]


def usage_matrix(used: pl.DataFrame, users: pl.Series, services: tuple[str, ...]) -> np.ndarray:
    """X: one row per user of `users` (in order), one column per catalogue service, 1 where used."""
    index = (used.join(pl.DataFrame({"user_id": users, "row": np.arange(users.len())}), on="user_id")
             .join(pl.DataFrame({"service": list(services), "column": np.arange(len(services))}), on="service"))
    x = np.zeros((users.len(), len(services)))
    x[index["row"].to_numpy(), index["column"].to_numpy()] = 1.0
    return x


def gram(used: pl.DataFrame, services: tuple[str, ...]) -> np.ndarray:
    """X^T X (users who used both services) over every user of `used`, a block of users at a time."""
    users = used["user_id"].unique().sort()
    g = np.zeros((len(services), len(services)))
    for start in range(0, users.len(), BLOCK):
        block = users.slice(start, BLOCK)
        x = usage_matrix(used.filter(pl.col("user_id").is_in(block.implode())), block, services)
        g += x.T @ x
    return g


def fit_item_knn(used: pl.DataFrame, services: list[str], k: int = NEIGHBOURS) -> ItemItemRanker:
    """Item-based kNN (Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001;
    top-N as in Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004).

    Cosine similarity between service columns of X; each service keeps its `k` most similar others (ties by
    name); a candidate's score is the sum of its similarities to the user's used services, among their
    neighbours. Similarities are not normalised per row (Deshpande's option): with binary use, raw sums
    keep a service close to many of the user's services ahead of one close to a single one.
    """
    catalogue = tuple(sorted(set(services)))
    g = gram(used, catalogue)
    norms = np.sqrt(np.diag(g))
    similarity = np.divide(g, np.outer(norms, norms), out=np.zeros_like(g), where=np.outer(norms, norms) > 0)
    np.fill_diagonal(similarity, 0.0)
    k = min(k, len(catalogue) - 1)
    names = np.broadcast_to(np.arange(len(catalogue)), similarity.shape)
    order = np.lexsort((names, -np.round(similarity, 12)), axis=-1)
    weights = np.zeros_like(similarity)
    rows = np.arange(len(catalogue))[:, None]
    weights[rows, order[:, :k]] = similarity[rows, order[:, :k]]
    return ItemItemRanker(catalogue, weights, np.diag(g).copy(), "item_knn")


def ease_weights(g: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form: P = (G + l2 I)^-1, B = -P / diag(P) column-wise, diag(B) = 0."""
    p = np.linalg.inv(g + l2 * np.eye(len(g)))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def fit_ease(used: pl.DataFrame, services: list[str], l2: float | None = None, seed: int = 0) -> ItemItemRanker:
    """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): B minimises
    ||X - X B||^2 + l2 ||B||^2 with diag(B) = 0, in closed form.

    `l2` None: picked from L2_MULTIPLES x the mean of diag(X^T X) by Hit@5 at recovering one used service
    held out per user (of users with two or more, at most HOLDOUT_USERS, seeded); ties go to the larger,
    the more shrunk toward popularity. Only `used` is read: no adoption, nothing of the scored future.
    """
    catalogue = tuple(sorted(set(services)))
    g = gram(used, catalogue)
    if l2 is None:
        l2 = _holdout_l2(used, catalogue, g, seed)
    return ItemItemRanker(catalogue, ease_weights(g, l2), np.diag(g).copy(), "ease", l2)


def _holdout_l2(used: pl.DataFrame, catalogue: tuple[str, ...], g: np.ndarray, seed: int) -> float:
    """The L2 whose EASE, fit without one used service per user, ranks it in that user's top 5 most often."""
    mean = float(np.diag(g).mean()) or 1.0
    grid = [m * mean for m in L2_MULTIPLES]
    used = used.filter(pl.col("service").is_in(list(catalogue)))
    eligible = used.group_by("user_id").len().filter(pl.col("len") >= 2)["user_id"].sort()
    if eligible.len() == 0:
        return grid[-1]
    users = eligible.sample(min(eligible.len(), HOLDOUT_USERS), seed=seed).sort()
    held = (used.filter(pl.col("user_id").is_in(users.implode())).sort("user_id", "service")
            .with_columns(draw=pl.int_range(pl.len()).shuffle(seed=seed).over("user_id"))
            .filter(pl.col("draw") == 0).select("user_id", "service"))
    kept = used.join(held, on=["user_id", "service"], how="anti")
    g_kept = gram(kept, catalogue)
    hits = []
    for l2 in grid:
        ranker = ItemItemRanker(catalogue, ease_weights(g_kept, l2), np.diag(g_kept).copy())
        top = ranker.rank(users, kept)
        hits.append(top.join(held, on=["user_id", "service"]).height / users.len())
    best = max(hits)
    return max(l2 for l2, hit in zip(grid, hits, strict=True) if hit == best)
