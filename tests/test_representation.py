"""What a user is for the persona clusters: the TF-IDF space, and the choice made without ground truth."""

import numpy as np
import polars as pl
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.representation import (
    PersonaSpace,
    choose_representation,
    half_split,
    representation_summary,
)

PERSONAS = 3


def _sessions(rng: np.random.Generator, vocabulary: int, per_session: int, n_sessions: int = 8,
              users_per_persona: int = 30) -> pl.DataFrame:
    """Users of three personas, each drawing the activities of its sessions from its own set (of
    `vocabulary` activities); the last two sessions of each user are the test split."""
    rows = []
    for persona in range(PERSONAS):
        for u in range(users_per_persona):
            user = f"p{persona}-u{u:02d}"
            for s in range(n_sessions):
                activities = [f"s{persona};page{int(a)}" for a in rng.integers(vocabulary, size=per_session)]
                split = "test" if s >= n_sessions - 2 else ("validation" if u % 5 == 0 else "train")
                rows.append({"user_id": user, "session_id": f"{user}-{s}", "start": s * 3600.0,
                             "activities": activities, "split": split, "persona": persona})
    return pl.DataFrame(rows)


def _embeddings(sessions: pl.DataFrame, rng: np.random.Generator, signal: float) -> pl.DataFrame:
    """Session vectors: the persona's own direction times `signal`, plus noise (0: pure noise)."""
    directions = np.eye(16, dtype=np.float32)[:PERSONAS]
    vectors = signal * directions[sessions["persona"].to_numpy()] + rng.normal(size=(sessions.height, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return sessions.select("user_id", "session_id", "start").with_columns(
        embedding=pl.Series(vectors.astype(np.float32), dtype=pl.Array(pl.Float32, 16)))


def test_the_tfidf_space_is_user_level_tfidf_reduced_by_svd():
    """A user's mean of session rows, renormalized, points where scikit-learn's TfidfVectorizer and
    TruncatedSVD put the user's whole bag of activities."""
    sessions = _sessions(np.random.default_rng(0), vocabulary=12, per_session=4)
    space = PersonaSpace.fit("tfidf", sessions, dimension=8)
    users, ours = user_vectors(space.session_vectors(_embeddings(sessions, np.random.default_rng(1), 0.0), sessions),
                               n_recent=100)
    documents = sessions.group_by("user_id", maintain_order=True).agg(pl.col("activities").list.explode())
    vectorizer = TfidfVectorizer(analyzer=lambda activities: activities, lowercase=False)
    matrix = vectorizer.fit_transform(documents["activities"].to_list())
    reference = TruncatedSVD(n_components=8, random_state=0).fit(matrix).transform(matrix)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert documents["user_id"].to_list() == users
    assert np.allclose(np.abs((ours * reference).sum(axis=1)), 1.0, atol=1e-4)  # the same direction (SVD's sign aside)


def test_activities_serve_where_the_embeddings_are_noise():
    rng = np.random.default_rng(2)
    sessions = _sessions(rng, vocabulary=6, per_session=5)
    served, candidates = choose_representation(_embeddings(sessions, rng, 0.0), sessions, n_recent=20,
                                               sample_users=500, k=PERSONAS)
    assert served in ("tfidf", "combined")
    assert candidates["tfidf"].gain.mean() > candidates["sessionbert"].gain.mean() + 0.1


def test_embeddings_serve_where_each_user_shows_too_few_activities_to_count():
    """Hundreds of activities a persona, a handful a user: bags of two users barely overlap, while the
    embeddings carry the persona."""
    rng = np.random.default_rng(3)
    sessions = _sessions(rng, vocabulary=400, per_session=2)
    served, candidates = choose_representation(_embeddings(sessions, rng, 3.0), sessions, n_recent=20,
                                               sample_users=500, k=PERSONAS)
    assert served in ("sessionbert", "combined")
    assert candidates["sessionbert"].gain.mean() > candidates["tfidf"].gain.mean()


def test_the_choice_never_reads_the_test_split():
    rng = np.random.default_rng(4)
    sessions = _sessions(rng, vocabulary=6, per_session=5)
    embeddings = _embeddings(sessions, rng, 1.0)
    before = representation_summary(*choose_representation(embeddings, sessions, 20, 500, k=PERSONAS))
    garbled = sessions.with_columns(activities=pl.when(pl.col("split") == "test").then(pl.lit(["x;y"] * 5))
                                    .otherwise(pl.col("activities")))
    after = representation_summary(*choose_representation(embeddings, garbled, 20, 500, k=PERSONAS))
    first, second = half_split(garbled)
    assert "test" not in set(first["split"]) | set(second["split"])
    assert before == after
