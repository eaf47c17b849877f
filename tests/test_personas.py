"""Personas: cosine K-means and the k rule, the cluster-to-persona mapping, users tagged, the graph on tiny."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest
from conftest import APACHE_LOGS, materialize_all

from sessionbert_core import storage
from sessionbert_core.data.serialize import serialize_sessions
from sessionbert_core.personas.embed import embed_sessions, load_encoder, user_vectors
from sessionbert_core.personas.mapping import (
    PersonaDefinitions,
    assign_personas,
    cluster_task_probabilities,
    load_definitions,
    persona_evaluation,
    persona_probabilities,
    tag_clusters,
)
from sessionbert_core.personas.representation import PERSONA_SPACE, REPRESENTATIONS, served_vectors
from sessionbert_core.personas.segment import CosineKMeans, choose_k, silhouette_sweep
from sessionbert_core.world.truth import load_truth

DEFINITIONS = PersonaDefinitions(
    personas={"Monitor": ("monitoring", "explore"), "Saver": ("cost", "explore"),
              "Planner": ("cost", "explore"), "Builder": ("deploy", "explore")},
    tasks={"monitoring": ("metrics;*", "logs;search"), "cost": ("billing;*",), "explore": ("catalog;*",),
           "deploy": ("compute;launch",)},
)


def _blobs(n_per: int, centers: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim))
    labels = np.repeat(np.arange(centers), n_per)
    return means[labels] + 0.05 * rng.normal(size=(len(labels), dim)), labels


def test_cosine_kmeans_recovers_separated_clusters():
    vectors, labels = _blobs(40, 3)
    kmeans = CosineKMeans(3).fit(vectors * np.random.default_rng(1).uniform(0.5, 3.0, (len(vectors), 1)))
    predicted = kmeans.predict(vectors)
    # each true cluster lands in exactly one predicted cluster, and they differ: a perfect recovery
    assert [len(set(predicted[labels == c])) for c in range(3)] == [1, 1, 1]
    assert len(set(predicted)) == 3
    assert np.allclose(np.linalg.norm(kmeans.cluster_centers_, axis=1), 1.0, atol=1e-5)


def test_silhouette_sweep_picks_the_number_of_clusters():
    vectors, _ = _blobs(30, 4, seed=2)
    curve = silhouette_sweep(vectors, tuple(range(2, 9)), sample_size=100)
    assert len(curve) == 7 and all(-1.0 <= s <= 1.0 for s in curve.values())
    assert choose_k(curve) == 4


def test_k_rule_takes_the_smallest_k_within_the_tolerance():
    assert choose_k({2: 0.40, 3: 0.655, 4: 0.660, 5: 0.50}) == 3
    assert choose_k({2: 0.40, 3: 0.60, 4: 0.66}) == 4


def _counts(rows: list[tuple[int, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"cluster": pl.Int64, "activity": pl.String, "count": pl.Int64}, orient="row")


def test_mapping_tags_merges_and_reports_personas_without_signal():
    counts = _counts([
        (0, "metrics;dashboards", 50), (0, "logs;search", 30), (0, "catalog;browse", 20),
        (1, "billing;invoices", 70), (1, "catalog;browse", 30), (1, "unmapped;page", 500),
    ])
    tasks = cluster_task_probabilities(counts, DEFINITIONS)
    assert tasks.filter(pl.col("cluster") == 1).row(0, named=True)["cost"] == pytest.approx(0.7)
    probabilities = persona_probabilities(tasks, DEFINITIONS)
    assert np.allclose(probabilities.drop("cluster").sum_horizontal().to_numpy(), 1.0)
    tags, unsupported = tag_clusters(probabilities)
    assert tags["persona"].to_list() == ["Monitor", "Saver + Planner"]  # Saver and Planner tie: merged
    assert unsupported == ["Builder"]  # no cluster carries it: not enough signal
    assert tags["probability"][1] == pytest.approx(
        probabilities.filter(pl.col("cluster") == 1).select("Saver", "Planner").sum_horizontal()[0])


def test_a_persona_with_more_tasks_does_not_win_by_covering_more():
    definitions = PersonaDefinitions(personas={"Focused": ("cost",), "Broad": ("cost", "explore", "deploy")},
                                     tasks=DEFINITIONS.tasks)
    counts = _counts([(0, "billing;invoices", 90), (0, "catalog;browse", 10)])
    tags, _ = tag_clusters(persona_probabilities(cluster_task_probabilities(counts, definitions), definitions))
    assert tags["persona"].to_list() == ["Focused"]


def test_merged_tag_counts_as_a_match_in_the_evaluation():
    assigned = pl.DataFrame({"user_id": ["a", "b", "c", "d"], "cluster": [0, 0, 1, 1],
                             "persona": ["Saver + Planner", "Saver + Planner", "Monitor", "Monitor"]})
    truth = pl.DataFrame({"user_id": ["a", "b", "c", "d"], "persona": ["Saver", "Planner", "Monitor", "Builder"]})
    evaluation = persona_evaluation(assigned, truth)
    assert evaluation["accuracy"] == pytest.approx(0.75)
    assert evaluation["per_persona"]["Builder"] == {"sensitivity": 0.0, "n_users": 1}
    assert evaluation["per_persona"]["Planner"]["sensitivity"] == 1.0


def test_definitions_yaml_errors_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "personas.yaml"
    path.write_text("personas:\n  P1: {tasks: [missing]}\ntasks:\n  t: {activities: ['a;b']}\n")
    with pytest.raises(ValueError, match=r"personas.yaml.*P1.*undefined tasks \['missing'\]"):
        load_definitions(path)
    path.write_text("personas: {}\ntasks:\n  t: {activities: ['a;b']}\n")
    with pytest.raises(ValueError, match="non-empty `personas:`"):
        load_definitions(path)


def test_user_vector_is_the_mean_of_recent_sessions():
    embeddings = pl.DataFrame({
        "user_id": ["u", "u", "u"], "session_id": ["1", "2", "3"],
        "start": pl.datetime_range(pl.datetime(2026, 1, 1), pl.datetime(2026, 1, 3), "1d", eager=True),
        "embedding": pl.Series([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=pl.Array(pl.Float32, 2)),
    })
    users, vectors = user_vectors(embeddings, 2)  # the two latest both point along the second axis
    assert users == ["u"] and np.allclose(vectors, [[0.0, 1.0]])


def test_graph_assigns_every_user_a_persona_on_tiny(trained):
    home, result = trained
    assert result.success
    users = pl.read_parquet(home / "user_personas.parquet")
    sessions = pl.read_parquet(home / "session_splits.parquet")
    assert users.columns == ["user_id", "cluster", "persona", "probability"]
    assert users["user_id"].sort().to_list() == sessions["user_id"].unique().sort().to_list()
    assert users["persona"].str.len_chars().min() > 0
    evaluation = json.loads((home / "persona_evaluation.json").read_text())
    assert {"k", "silhouette", "ari", "nmi", "accuracy", "per_persona"} <= set(evaluation)
    assert 2 <= evaluation["k"] <= 12 and set(evaluation["silhouette"]) == {str(k) for k in range(2, 13)}
    centroids = pl.read_parquet(home / "cluster_centroids.parquet")
    assert centroids.height == evaluation["k"] and centroids["top_activities"].list.len().min() > 0


def test_users_the_model_never_saw_get_their_persona(trained, tiny_world):
    """Every test-split user (none of their sessions was trained on) comes back as a newcomer with ten
    days of history; each gets a persona, and most get their true one. The claim is a share over all
    of them, with a margin, so it holds whatever arithmetic (bf16 or fp32) trained the tiny model."""
    home, _ = trained
    splits = pl.read_parquet(home / "session_splits.parquet")
    test_users = splits.filter(pl.col("split") == "test")["user_id"].unique().sort()
    events = pl.read_parquet(tiny_world.landing / "events-*.parquet").filter(pl.col("user_id").is_in(test_users))
    last_days = events.group_by("user_id").agg(pl.col("timestamp").dt.date().unique().sort().tail(10).alias("day"))
    newcomers = (events.with_columns(day=pl.col("timestamp").dt.date())
                 .join(last_days.explode("day"), on=["user_id", "day"], how="semi")
                 .with_columns(user_id=pl.lit("new-") + pl.col("user_id"),
                               session_id=pl.lit("n-") + pl.col("session_id"))
                 .drop("day"))
    billing = pl.read_parquet(tiny_world.landing / "billing-*.parquet").filter(pl.col("user_id").is_in(test_users))
    sessions = serialize_sessions(newcomers, billing.with_columns(user_id=pl.lit("new-") + pl.col("user_id")))
    model, tokenizer = load_encoder(home / "pretrained_model")
    centroids = pl.read_parquet(home / "cluster_centroids.parquet")
    mapping = pl.read_parquet(home / "persona_mapping.parquet")
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    vectors = served_vectors(home / PERSONA_SPACE, embed_sessions(model, tokenizer, sessions), sessions)
    assigned = assign_personas(vectors, np.stack(centroids["centroid"].to_numpy()),
                               mapping.select("cluster", "persona", "probability"), sweep["user_vector_sessions"])
    assert sorted(assigned["user_id"].to_list()) == sorted(f"new-{u}" for u in test_users)
    assert assigned["probability"].is_between(0.0, 1.0, closed="right").all()
    truth = load_truth(tiny_world.root, "users").select(pl.lit("new-") + pl.col("user_id"), "persona")
    truth = truth.rename({truth.columns[0]: "user_id", "persona": "true_persona"})
    judged = assigned.join(truth, on="user_id")
    correct = [t in p.split(" + ") for p, t in judged.select("persona", "true_persona").iter_rows()]
    assert len(test_users) >= 5 and sum(correct) / len(correct) >= 0.6


@pytest.mark.skipif(not APACHE_LOGS.exists(), reason="shared/data/apache_logs is not beside the project")
def test_real_access_log_runs_through_personas_and_recommendations(tmp_path):
    home = tmp_path / "home"
    result = materialize_all(home, str(APACHE_LOGS))
    assert result.success
    centroids = pl.read_parquet(home / "cluster_centroids.parquet")
    assert centroids["top_activities"].list.len().min() > 0
    users = pl.read_parquet(home / "user_personas.parquet")
    assert users.height > 0 and set(users["persona"].to_list()) == {""}  # no definitions: none defined
    assert not json.loads((home / "persona_mapping.json").read_text())["defined"]
    evaluation = json.loads((home / "persona_evaluation.json").read_text())
    assert "ari" not in evaluation and "silhouette" in evaluation  # no ground truth: absent, not zero
    assert pl.read_parquet(home / "recommendation_table.parquet")["rank"].max() <= 5
    hits = json.loads((home / "hit_at_k_evaluation.json").read_text())
    assert all("oracle" not in entry for entry in hits["seen_days"].values())


def test_the_sweep_names_the_representation_it_served_and_every_candidate(trained):
    home, _ = trained
    sweep = json.loads((home / "cluster_sweep.json").read_text())
    assert sweep["representation"] == sweep["representations"]["served"]  # auto: the choice serves
    assert set(sweep["representations"]["candidates"]) == set(REPRESENTATIONS)
    evaluation = json.loads((home / "persona_evaluation.json").read_text())
    assert evaluation["representation"] == sweep["representation"]
    assert set(evaluation["by_representation"]) == set(REPRESENTATIONS)  # scored on truth, reported only
    assert all(0.0 <= found["accuracy"] <= 1.0 for found in evaluation["by_representation"].values())


def test_a_recluster_keeps_each_clusters_number_and_tag_and_measures_what_moved(trained, tmp_path):
    """The previous run numbered its clusters otherwise than K-means does now (as another start would have): each
    cluster takes the number and persona tag of the previous run's cluster of the same users, and the warning
    check reports the agreement against the seed's noise floor."""
    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    tags = pl.read_parquet(home / "persona_mapping.parquet").select("cluster", "persona")
    k = tags.height
    shift = {c: (c + 1) % k for c in range(k)}  # every number moved by one
    for name in ("user_personas", "cluster_centroids"):
        path = home / f"{name}.parquet"
        frame = storage.read_table(path)
        if path.is_dir():
            storage.remove_folder(path)
        storage.write_parquet(frame.with_columns(pl.col("cluster").replace_strict(shift, return_dtype=pl.Int64)), path)
    before = storage.read_table(home / "user_personas.parquet").select("user_id", "cluster", "persona")
    result = materialize_all(home, "synthetic", ["cluster_centroids", "persona_mapping", "user_personas"])
    assert result.success
    after = storage.read_table(home / "user_personas.parquet").select("user_id", "cluster", "persona")
    both = before.join(after, on="user_id", suffix="_after")
    assert both.height == before.height
    assert (both["cluster"] == both["cluster_after"]).all()  # the previous numbers, not K-means' own
    assert (both["persona"] == both["persona_after"]).all()  # and so the same tags
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "personas_are_stable"]
    assert check.passed and check.metadata["ari"].value == 1.0 and check.metadata["unchanged_share"].value == 1.0
    assert {"seed_noise_floor_ari", "events", "users_compared"} <= set(check.metadata)
    assert _metadata(result, "cluster_centroids")["drift/transitions"].value == "nobody moved"


def _metadata(result, asset: str) -> dict:
    return next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset
                ).event_specific_data.materialization.metadata


def test_users_who_moved_are_reported_from_which_cluster_to_which_and_why(trained, tmp_path):
    """A retrain on the same sessions after some users were in another cluster: the drift report counts them by
    move, and since their sessions did not change it says the model moved them; persona_evaluation and MLflow
    carry the stability figures."""
    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    instance = dg.DagsterInstance.ephemeral()
    selection = ["cluster_centroids", "persona_mapping", "user_personas", "persona_evaluation"]
    first = materialize_all(home, "synthetic", selection, instance=instance)
    assert first.success and _metadata(first, "cluster_centroids")["data_until"].value  # what the next run reads
    path = home / "user_personas.parquet"
    users = storage.read_table(path)
    k = users["cluster"].n_unique()
    moved = users["user_id"].sort().head(6)  # six users had been one cluster further on
    users = users.with_columns(cluster=pl.when(pl.col("user_id").is_in(moved.implode()))
                               .then((pl.col("cluster") + 1) % k).otherwise("cluster"))
    if path.is_dir():
        storage.remove_folder(path)
    storage.write_parquet(users, path)
    second = materialize_all(home, "synthetic", selection, instance=instance)
    assert second.success
    drift = _metadata(second, "cluster_centroids")
    assert drift["drift/moved_users"].value == 6
    assert sum(row.data["users"] for row in drift["drift/transitions"].value.records) == 6
    assert drift["drift/why"].value.startswith("no activity changed")  # the same sessions: the model's doing
    evaluation = json.loads((home / "persona_evaluation.json").read_text())["stability"]
    assert evaluation["moved_users"] == 6 and 0 < evaluation["ari"] < 1 and evaluation["users_compared"] > 6



def test_a_persona_whose_users_are_gone_is_named_vanished_after_a_retrain(trained, tmp_path):
    """The previous run had one more cluster, of users no longer in the data (a persona removed): the retrain keeps
    every other cluster's number and names that one vanished."""
    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    users, centroids = (storage.read_table(home / f"{name}.parquet") for name in ("user_personas", "cluster_centroids"))
    gone = users.head(5).with_columns(user_id=pl.format("gone-{}", "user_id"),
                                      cluster=pl.lit(centroids.height, pl.Int64))
    extra = centroids.head(1).with_columns(cluster=pl.lit(centroids.height, pl.Int64))  # matched on users: none left
    for name, frame in (("user_personas", pl.concat([users, gone])),
                        ("cluster_centroids", pl.concat([centroids, extra]))):
        path = home / f"{name}.parquet"
        if path.is_dir():
            storage.remove_folder(path)
        storage.write_parquet(frame, path)
    result = materialize_all(home, "synthetic", ["cluster_centroids", "persona_mapping", "user_personas"])
    assert result.success
    after = storage.read_table(home / "user_personas.parquet")
    assert after.join(users, on="user_id", suffix="_before").filter(pl.col("cluster") != pl.col("cluster_before")
                                                                     ).is_empty()
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "personas_are_stable"]
    events = check.metadata["events"].value.records
    assert [r.data for r in events if r.data["event"] == "vanished"] == [
        {"event": "vanished", "previous": str(centroids.height), "new": ""}]
