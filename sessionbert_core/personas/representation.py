"""What a user is for the persona clusters: SessionBERT, a bag of activities (TF-IDF), or both; and the choice.

The paper clusters users by the mean of their SessionBERT session embeddings. On little data an
undertrained encoder knows less than the plain counts of what a user did, so three spaces compete:

    sessionbert   the mean of the user's recent session embeddings (the paper)
    tfidf         TF-IDF of the activities of the user's recent sessions, IDF over users, reduced by
                  truncated SVD (the rows are unnormalized, so a user's mean is their TF-IDF vector)
    combined      both halves side by side, each a unit vector scaled by 1 / sqrt(2)

Every space is written as one vector per session, so a user is always `embed.user_vectors` of
their rows: the clusters, the persona of a user never seen and the Hit@k protocol need no change.

The choice needs no ground truth and rewards a stable trait over the task of the day: each user's
sessions (train and validation splits only, never test) are cut in time into a first and a second
half; users are clustered on their first halves (at the k the silhouette rule picks for that
space), and each cluster's activity distribution, from first halves only, predicts the activities
of its users' second halves. The score is the mean log-likelihood gain per activity over the
overall distribution, per user. The simplest space within one standard error of the best serves
(tfidf, then sessionbert, then combined).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import polars as pl
from scipy import sparse

from sessionbert_core import storage
from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.segment import CosineKMeans, choose_k, silhouette_sweep

Representation = Literal["tfidf", "sessionbert", "combined"]  # simplest first: a tie within the noise goes to it
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)
PERSONA_SPACE = "persona_space"  # the served space's folder in the home and in the served model
TFIDF_DIMENSION = 64
SMOOTHING = 50.0  # activities of prior mass, toward the overall distribution, in each cluster's distribution


@dataclass(frozen=True)
class PersonaSpace:
    """A fitted representation: its name and, for the TF-IDF part, the vocabulary, IDF and SVD axes."""

    name: str
    activities: tuple[str, ...] = ()
    idf: np.ndarray | None = None
    components: np.ndarray | None = None  # (dimension, activities)

    @classmethod
    def fit(cls, name: str, sessions: pl.DataFrame, dimension: int = TFIDF_DIMENSION, seed: int = 0) -> PersonaSpace:
        """Fit the space on `sessions` (user_id, activities); SessionBERT's needs nothing fitted."""
        if name not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {', '.join(REPRESENTATIONS)}, not {name!r}")
        if name == "sessionbert":
            return cls(name)
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        vocabulary = sessions["activities"].explode().drop_nulls().unique().sort()
        counts = _count_matrix(sessions.select("user_id", "activities"), "user_id", vocabulary)
        transformer = TfidfTransformer().fit(counts)
        n_activities = counts.shape[1]
        if n_activities > 2:
            svd = TruncatedSVD(n_components=min(dimension, n_activities - 1), random_state=seed)
            components = svd.fit(transformer.transform(counts)).components_.astype(np.float32)
        else:  # nothing to reduce
            components = np.eye(n_activities, dtype=np.float32)
        return cls(name, tuple(vocabulary.to_list()), transformer.idf_.astype(np.float32), components)

    def session_vectors(self, embeddings: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
        """`user_id, session_id, start, embedding` in this space for the sessions of `embeddings`
        (SessionBERT's session embeddings), their activities read from `sessions`."""
        if self.name == "sessionbert":
            return embeddings
        # a session id is unique only within its user (two users of one request may both send "s1")
        activities = embeddings.select("user_id", "session_id").join(
            sessions.select("user_id", "session_id", "activities"), on=["user_id", "session_id"], how="left",
            maintain_order="left")
        tfidf = self._tfidf(activities["activities"])
        if self.name == "tfidf":
            vectors = tfidf
        else:
            unit = tfidf / np.clip(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12, None)
            vectors = np.hstack([embeddings["embedding"].to_numpy().astype(np.float32), unit]) / math.sqrt(2.0)
        return embeddings.select("user_id", "session_id", "start").with_columns(
            embedding=pl.Series(vectors.astype(np.float32), dtype=pl.Array(pl.Float32, vectors.shape[1])))

    def _tfidf(self, activities: pl.Series) -> np.ndarray:
        rows = pl.DataFrame({"row": np.arange(len(activities)), "activities": activities})
        counts = _count_matrix(rows, "row", pl.Series(self.activities, dtype=pl.String))
        return np.asarray(counts.multiply(self.idf[None, :]) @ self.components.T, dtype=np.float32)

    def save(self, folder: Path) -> Path:
        """The space as `persona_space.json` plus, for TF-IDF, a parquet of activity, idf and axis weights."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.components is not None:
            storage.write_parquet(pl.DataFrame({
                "activity": list(self.activities), "idf": self.idf,
                "axes": pl.Series(self.components.T, dtype=pl.Array(pl.Float32, self.components.shape[0]))}),
                folder / "persona_space.parquet")
        storage.write_json({"representation": self.name}, folder / "persona_space.json")
        return folder

    @classmethod
    def load(cls, folder: Path) -> PersonaSpace:
        folder = Path(folder)
        manifest = folder / "persona_space.json"
        if not manifest.exists():  # a model saved before the choice existed clustered SessionBERT vectors
            return cls("sessionbert")
        name = json.loads(manifest.read_text())["representation"]
        if name == "sessionbert":
            return cls(name)
        table = pl.read_parquet(folder / "persona_space.parquet")
        return cls(name, tuple(table["activity"].to_list()), table["idf"].to_numpy().astype(np.float32),
                   np.ascontiguousarray(table["axes"].to_numpy().T.astype(np.float32)))


def served_vectors(folder: Path, embeddings: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    """Session vectors in the space saved in `folder` (the cluster sweep's choice)."""
    return PersonaSpace.load(folder).session_vectors(embeddings, sessions)


def _count_matrix(frame: pl.DataFrame, key: str, vocabulary: pl.Series) -> sparse.csr_matrix:
    """Rows of `frame[key]` (in order of first appearance) by `vocabulary` columns: how often each
    activity of `frame["activities"]` occurs; activities outside the vocabulary carry no weight."""
    keys = frame.select(key).unique(maintain_order=True).with_row_index("r")
    columns = pl.DataFrame({"activity": vocabulary}).with_row_index("c")
    cells = (frame.select(key, activity="activities").explode("activity").drop_nulls()
             .join(keys, on=key).join(columns, on="activity").group_by("r", "c").len("n"))
    return sparse.csr_matrix((cells["n"].to_numpy().astype(np.float32), (cells["r"].to_numpy(), cells["c"].to_numpy())),
                             shape=(keys.height, len(vocabulary)))


def half_split(sessions: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each user's sessions (outside the test split) cut in time: the first half and the second.

    Users with a single session have no second half and are left out of both.
    """
    kept = (sessions.filter(pl.col("split") != "test").sort("user_id", "start", "session_id")
            .with_columns(rank=pl.int_range(pl.len()).over("user_id"), n=pl.len().over("user_id"))
            .filter(pl.col("n") >= 2))
    first = kept.filter(pl.col("rank") < (pl.col("n") + 1) // 2)
    second = kept.filter(pl.col("rank") >= (pl.col("n") + 1) // 2)
    return first.drop("rank", "n"), second.drop("rank", "n")


def held_out_gain(vectors: pl.DataFrame, first: pl.DataFrame, second: pl.DataFrame, k: int, n_recent: int,
                  seed: int = 0) -> np.ndarray:
    """Per user, the mean log-likelihood gain (nats per activity) of their second half's activities
    under their first-half cluster's activity distribution, over the overall one."""
    users, user_space = user_vectors(vectors.join(first.select("session_id"), on="session_id", how="semi"), n_recent)
    if len(users) <= k:
        return np.zeros(0)
    of_user = pl.DataFrame({"user_id": users,
                            "cluster": CosineKMeans(k, random_state=seed).fit(user_space).labels_.astype(np.int64)})
    seen = first.select("user_id", activity="activities").explode("activity").join(of_user, on="user_id")
    vocabulary = pl.concat([seen["activity"], second["activities"].explode()]).drop_nulls().n_unique()
    overall = seen.group_by("activity").agg(p_all=(pl.len() + 1) / (seen.height + vocabulary))
    in_cluster = seen.group_by("cluster", "activity").len("n")
    totals = seen.group_by("cluster").len("total")
    scored = (
        second.select("user_id", activity="activities").explode("activity").drop_nulls()
        .join(of_user, on="user_id")
        .join(overall, on="activity", how="left")
        .with_columns(pl.col("p_all").fill_null(1.0 / (seen.height + vocabulary)))
        .join(in_cluster, on=["cluster", "activity"], how="left")
        .join(totals, on="cluster", how="left")
        .with_columns(p=(pl.col("n").fill_null(0) + SMOOTHING * pl.col("p_all")) / (pl.col("total") + SMOOTHING))
        .group_by("user_id").agg(gain=(pl.col("p").log() - pl.col("p_all").log()).mean()).sort("user_id")
    )
    return scored["gain"].to_numpy()


@dataclass(frozen=True)
class Candidate:
    space: PersonaSpace
    vectors: pl.DataFrame  # session vectors in the space
    k: int
    silhouette: dict[int, float]
    gain: np.ndarray  # per user, nats per activity


def representation_summary(served: str, candidates: dict[str, Candidate]) -> dict:
    """What the choice saw, for the cluster sweep's JSON and metadata: each space's k and held-out gain."""
    return {"served": served, "criterion": "held-out log-likelihood gain per activity of each user's second half "
                                           "under their first-half cluster (nats; train and validation splits)",
            "candidates": {name: {"k": c.k, "users": len(c.gain),
                                  "held_out_gain": float(c.gain.mean()) if len(c.gain) else None,
                                  "standard_error": float(c.gain.std(ddof=1) / math.sqrt(len(c.gain)))
                                  if len(c.gain) > 1 else None}
                           for name, c in candidates.items()}}


def fitted_space(name: str, sessions: pl.DataFrame, seed: int = 0) -> PersonaSpace:
    """The space fitted on the train split's sessions (nothing of validation or test users), or on all
    of them where there is no train split."""
    train = sessions.filter(pl.col("split") == "train")
    return PersonaSpace.fit(name, train if train.height else sessions, seed=seed)


def choose_representation(embeddings: pl.DataFrame, sessions: pl.DataFrame, n_recent: int, sample_users: int,
                          seed: int = 0, k: int = 0) -> tuple[str, dict[str, Candidate]]:
    """Every space fitted, its k by the silhouette rule (or `k`), and its held-out gain; the served name.

    The spaces are fitted by `fitted_space`; the served one is the simplest
    whose mean gain is within one standard error of the best's (the standard error of the paired
    difference over the same users).
    """
    first, second = half_split(sessions)
    candidates = {}
    for name in REPRESENTATIONS:
        space = fitted_space(name, sessions, seed)
        vectors = space.session_vectors(embeddings, sessions)
        _, user_space = user_vectors(vectors, n_recent)
        curve = silhouette_sweep(user_space, sample_size=sample_users, seed=seed) if len(user_space) >= 3 else {}
        chosen_k = k or (choose_k(curve) if curve else 1)
        gain = held_out_gain(vectors, first, second, chosen_k, n_recent, seed) if chosen_k > 1 else np.zeros(0)
        candidates[name] = Candidate(space, vectors, chosen_k, curve, gain)
    scored = {name: c for name, c in candidates.items() if len(c.gain)}
    if not scored:  # too few users with two sessions to tell: the paper's space
        return "sessionbert", candidates
    best = scored[max(scored, key=lambda name: scored[name].gain.mean())].gain
    served = next(name for name in REPRESENTATIONS  # simplest first; the best itself always qualifies
                  if name in scored and (gain := scored[name].gain).mean() >= best.mean() - _paired_error(gain, best))
    return served, candidates


def _paired_error(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) != len(b) or len(a) < 2:
        return 0.0
    return float(np.std(a - b, ddof=1) / math.sqrt(len(a)))


def truth_scores(embeddings: pl.DataFrame, sessions: pl.DataFrame, ks: dict[str, int], truth: pl.DataFrame,
                 definitions, n_recent: int, seed: int = 0) -> dict[str, dict]:
    """ARI and persona accuracy of every space at its k against true personas (a synthetic world's),
    each space fitted as the choice fits it (`fitted_space`). Reported beside the choice, never read by it."""
    from sessionbert_core.personas.mapping import assign_personas, map_clusters, persona_evaluation

    scores = {}
    for name, k in ks.items():
        vectors = fitted_space(name, sessions, seed).session_vectors(embeddings, sessions)
        users, user_space = user_vectors(vectors, n_recent)
        if len(users) <= k:
            continue
        kmeans = CosineKMeans(k, random_state=seed).fit(user_space)
        of_user = pl.DataFrame({"user_id": users, "cluster": kmeans.labels_.astype(np.int64)})
        tags = map_clusters(sessions, of_user, definitions).tags
        found = persona_evaluation(assign_personas(vectors, kmeans.cluster_centers_, tags, n_recent), truth)
        scores[name] = {"k": k, "ari": found["ari"], "nmi": found["nmi"], "accuracy": found["accuracy"]}
    return scores
