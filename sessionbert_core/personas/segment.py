"""Segmentation: cosine K-means on unit vectors, the silhouette sweep over k, and the rule that picks k."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from sessionbert_core.personas.embed import user_vectors

K_RANGE = tuple(range(2, 13))
K_TOLERANCE = 0.01  # silhouettes this close to the best count as a tie; the smallest such k wins


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


class CosineKMeans(ClusterMixin, BaseEstimator):
    """K-means on unit-normalized vectors with unit centroids: spherical K-means, i.e. cosine distance.

    On the unit sphere the squared Euclidean distance is 2 - 2 cos, so scikit-learn's K-means on
    normalized rows groups by cosine similarity; centroids are renormalized after fitting. Shaped
    like scikit-learn's estimators: `CosineKMeans(k).fit(X)` returns itself with `cluster_centers_`,
    `labels_` and `inertia_`; `predict` gives each row's nearest centroid by cosine.
    """

    def __init__(self, n_clusters: int = 8, random_state: int = 0, n_init: int = 10):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.n_init = n_init

    def fit(self, X: np.ndarray, y=None) -> CosineKMeans:
        if len(X) < self.n_clusters:
            raise ValueError(f"cannot make {self.n_clusters} clusters of {len(X)} vectors")
        kmeans = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state).fit(_unit(X))
        self.cluster_centers_ = _unit(kmeans.cluster_centers_).astype(np.float32)
        self.inertia_ = float(kmeans.inertia_)
        self.labels_ = self.predict(X)
        return self

    @classmethod
    def from_centers(cls, centers: np.ndarray) -> CosineKMeans:
        """An estimator with the given (saved) centroids, to assign new vectors with `predict`."""
        fitted = cls(n_clusters=len(centers))
        fitted.cluster_centers_ = np.asarray(centers, dtype=np.float32)
        return fitted

    def similarities(self, X: np.ndarray) -> np.ndarray:
        return _unit(X) @ self.cluster_centers_.T.astype(np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The nearest centroid (highest cosine similarity) of each vector."""
        return self.similarities(X).argmax(axis=1) if len(X) else np.zeros(0, dtype=np.int64)


def silhouette_sweep(vectors: np.ndarray, ks: tuple[int, ...] = K_RANGE, sample_size: int = 2000,
                     seed: int = 0) -> dict[int, float]:
    """Cosine silhouette of cosine K-means for each k, on a seeded sample of at most `sample_size` rows.

    Silhouette costs O(n^2); the sample keeps it bounded, and the same rows serve every k.
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(sample_size, len(vectors)), replace=False)
    sample = _unit(vectors[np.sort(rows)])
    curve = {}
    for k in ks:
        if k >= len(sample):
            break
        labels = CosineKMeans(k, random_state=seed).fit(sample).labels_
        curve[k] = float(silhouette_score(sample, labels, metric="cosine")) if len(set(labels)) > 1 else -1.0
    return curve


def choose_k(curve: dict[int, float], tolerance: float = K_TOLERANCE) -> int:
    """The smallest k whose silhouette is within `tolerance` of the best one.

    Silhouette curves of behaviour data are often flat near their top; among near-equal scores the
    fewest clusters are the easiest to name and map to personas.
    """
    if not curve:
        raise ValueError("the silhouette sweep has no k to choose from")
    best = max(curve.values())
    return min(k for k, score in curve.items() if score >= best - tolerance)


def cluster_activity_counts(sessions: pl.DataFrame, cluster_of_user: pl.DataFrame) -> pl.DataFrame:
    """`cluster, activity, count, share`: how often each cluster's users did each activity, most frequent first."""
    return activity_shares(
        sessions.select("user_id", "activities")
        .join(cluster_of_user.select("user_id", "cluster"), on="user_id")
        .explode("activities")
        .group_by("cluster", activity="activities")
        .len("count")
    )


def activity_shares(counts: pl.DataFrame) -> pl.DataFrame:
    """`cluster, activity, count` with each activity's share of its cluster, most frequent first."""
    return (counts.with_columns(share=pl.col("count") / pl.col("count").sum().over("cluster"))
            .sort(["cluster", "count", "activity"], descending=[False, True, False]))


def top_activities(counts: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The first `n` rows of each cluster of `cluster_activity_counts`."""
    return counts.group_by("cluster", maintain_order=True).head(n)


def cluster_users(embeddings: pl.DataFrame, sessions: pl.DataFrame, k: int, n_recent: int,
                  seed: int = 0) -> pl.DataFrame:
    """`user_id, cluster`: cosine K-means of users built from `sessions` only (their rows of `embeddings`).

    Used where only part of the history may be seen (the Hit@k protocol): centroids and users both
    come from the sessions given, nothing else.
    """
    kept = embeddings.join(sessions.select("user_id", "session_id"), on=["user_id", "session_id"], how="semi")
    users, vectors = user_vectors(kept, n_recent)
    if not users:
        return pl.DataFrame(schema={"user_id": pl.String, "cluster": pl.Int64})
    labels = CosineKMeans(min(k, len(users)), random_state=seed).fit(vectors).labels_
    return pl.DataFrame({"user_id": pl.Series(users, dtype=pl.String), "cluster": labels.astype(np.int64)})
