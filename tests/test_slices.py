"""The persona steps at scale: users assigned slice by slice give what the whole table gives, the seeded sample
of users the clusters fit on, and the graph on tiny with a sample smaller than its users."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from conftest import materialize_all

from sessionbert_core import storage
from sessionbert_core.personas.embed import user_vectors
from sessionbert_core.personas.mapping import nearest_clusters
from sessionbert_core.personas.representation import PersonaSpace
from sessionbert_core.personas.segment import CosineKMeans, cluster_activity_counts
from sessionbert_core.personas.slices import (
    clusters_in_parts,
    paired_parts,
    sample_tables,
    sampled_users,
    user_vectors_in_parts,
)

ACTIVITIES = ["logs;search", "metrics;dashboards", "billing;invoices", "compute;launch", "catalog;browse"]


def _tables(n_users: int = 60, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sessions (user_id, session_id, start, activities, split) and a random unit vector for each."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for s in range(int(rng.integers(2, 7))):
            rows.append({"user_id": f"u{u:03d}", "session_id": f"u{u:03d}-{s}", "split": ["train", "test"][u % 2],
                         "start": datetime(2026, 1, 1 + s, tzinfo=UTC),
                         "activities": list(rng.choice(ACTIVITIES, size=int(rng.integers(1, 6))))})
    sessions = pl.DataFrame(rows)
    vectors = rng.normal(size=(sessions.height, 8)).astype(np.float32)
    embeddings = sessions.select("user_id", "session_id", "start").with_columns(
        embedding=pl.Series(vectors, dtype=pl.Array(pl.Float32, 8)))
    return sessions, embeddings


def _in_parts(frame: pl.DataFrame, folder, bounds: list[str]) -> None:
    """`frame` as parts of whole users: users below each bound, in order."""
    with storage.PartsWriter(folder) as writer:
        low = ""
        for i, high in enumerate([*bounds, "~"]):
            writer.write(frame.filter((pl.col("user_id") >= low) & (pl.col("user_id") < high)), f"part-{i:05d}")
            low = high
        writer.commit()


@pytest.mark.parametrize("name", ["sessionbert", "tfidf", "combined"])
def test_users_assigned_slice_by_slice_equal_the_whole_table(tmp_path, name):
    sessions, embeddings = _tables()
    _in_parts(sessions, tmp_path / "sessions", ["u020", "u041"])
    _in_parts(embeddings, tmp_path / "embeddings", ["u020", "u041"])
    space = PersonaSpace.fit(name, sessions)
    vectors = space.session_vectors(embeddings, sessions)
    centroids = CosineKMeans(3, random_state=0).fit(user_vectors(vectors, 4)[1]).cluster_centers_
    found = clusters_in_parts(tmp_path / "embeddings", tmp_path / "sessions", space, centroids, 4,
                              users_per_slice=7)

    whole = nearest_clusters(vectors, centroids, 4)
    assert found.of_user.equals(whole) and found.of_user.height == 60
    counts = cluster_activity_counts(sessions, whole).with_columns(pl.col("count").cast(pl.Int64))
    assert found.counts.equals(counts)


def test_user_vectors_slice_by_slice_equal_the_whole_tables_for_a_sample(tmp_path):
    sessions, embeddings = _tables()
    _in_parts(sessions, tmp_path / "sessions", ["u020", "u041"])
    _in_parts(embeddings, tmp_path / "embeddings", ["u020", "u041"])
    space = PersonaSpace.fit("tfidf", sessions)
    sample, _ = sampled_users(sessions.lazy(), 25, seed=2)
    users, vectors = user_vectors_in_parts(tmp_path / "embeddings", tmp_path / "sessions", space, 4, sample,
                                           users_per_slice=7)
    whole_users, whole = user_vectors(space.session_vectors(embeddings, sessions).filter(
        pl.col("user_id").is_in(sample.implode())), 4)
    assert users == whole_users == sample.to_list() and np.allclose(vectors, whole, atol=1e-6)


def test_the_sample_of_users_is_seeded_and_covers_all_when_it_can():
    sessions, _ = _tables()
    lazy = sessions.lazy()
    assert sampled_users(lazy, None) == (None, 60) and sampled_users(lazy, 60) == (None, 60)
    sample, total = sampled_users(lazy, 25, seed=3)
    assert total == 60 and sample.len() == 25 and sample.n_unique() == 25 and sample.is_sorted()
    assert sample.equals(sampled_users(lazy, 25, seed=3)[0])
    assert not sample.equals(sampled_users(lazy, 25, seed=4)[0])
    with pytest.raises(ValueError, match="at least one user"):
        sampled_users(lazy, 0)


def test_a_sample_holds_every_row_of_its_users_and_no_other(tmp_path):
    sessions, embeddings = _tables()
    _in_parts(sessions, tmp_path / "sessions", ["u030"])
    _in_parts(embeddings, tmp_path / "embeddings", ["u030"])
    sample = sample_tables(storage.scan_table(tmp_path / "embeddings"), storage.scan_table(tmp_path / "sessions"),
                           20, seed=1)
    users = sample.sessions["user_id"].unique()
    assert (sample.users, sample.sampled, users.len()) == (60, 20, 20)
    assert sample.sessions.height == sessions.filter(pl.col("user_id").is_in(users)).height
    assert set(sample.embeddings["session_id"]) == set(sample.sessions["session_id"])


def test_a_slice_holds_every_part_of_its_users_whatever_the_parts_hold(tmp_path):
    sessions, embeddings = _tables()
    _in_parts(sessions, tmp_path / "sessions", ["u010", "u045"])  # parts cut elsewhere than the slices
    _in_parts(embeddings, tmp_path / "embeddings", ["u030"])
    slices = list(paired_parts(tmp_path / "embeddings", tmp_path / "sessions", users_per_slice=25))
    assert len(slices) == 3  # 60 users, 25 a slice
    for embedded, part in slices:
        assert set(embedded["session_id"]) == set(part["session_id"])
        assert part["user_id"].n_unique() <= 25
    assert sum(part.height for _, part in slices) == sessions.height


def test_clusters_fitted_on_a_sample_still_give_every_user_a_persona(trained, tmp_path):
    source, _ = trained
    home = tmp_path / "home"
    shutil.copytree(source, home)
    personas = ["cluster_sweep", "cluster_centroids", "persona_mapping", "user_personas"]
    result = materialize_all(home, "synthetic", selection=personas,
                             run_config={"ops": {"cluster_sweep": {"config": {"cluster_users": 30}}}})
    assert result.success
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    users = storage.read_table(home / "session_splits.parquet")["user_id"].unique().sort()
    assert sweep["n_users"] == 30 and sweep["users_total"] == users.len() > 30
    assigned = pl.read_parquet(home / "user_personas.parquet")
    assert assigned["user_id"].to_list() == users.to_list()  # every user, not only the 30 fitted on
    assert assigned["persona"].str.len_chars().min() > 0
    sizes = pl.read_parquet(home / "cluster_centroids.parquet")["size"]
    assert sizes.sum() == users.len()
