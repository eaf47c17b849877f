"""Persona stability across retrains: cluster numbers persist, splits, merges and vanished clusters are named,
and recommendation churn is attributed to the user or the model. Pure functions on small frames: no graph."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sessionbert_core.personas.stability import drift_report, match_clusters, relabel, stability
from sessionbert_core.recommend.churn import history_fingerprint, recommendation_churn


def _centroids(k: int, dimension: int = 16, seed: int = 0) -> np.ndarray:
    """k orthonormal directions: clusters far apart, as after a clean K-means."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dimension, dimension)))
    return q[:k]


def _assignment(clusters: list[int], offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [f"u{offset + i}" for i in range(len(clusters))], "cluster": clusters},
                        schema={"user_id": pl.String, "cluster": pl.Int64})


def _events(match, event: str) -> list[tuple[list[int], list[int]]]:
    rows = match.events.filter(pl.col("event") == event)
    return list(zip(rows["previous"].to_list(), rows["new"].to_list(), strict=True))


PREVIOUS = [c for c in range(4) for _ in range(10)]  # 4 clusters of 10 users
PERMUTATION = np.array([2, 0, 3, 1])  # new cluster j is previous cluster PERMUTATION[j]


@pytest.mark.parametrize("on_users", [True, False])
def test_permuted_clusters_keep_their_numbers(on_users):
    previous = _assignment(PREVIOUS)
    inverse = np.argsort(PERMUTATION)
    new = _assignment([int(inverse[c]) for c in PREVIOUS])
    centroids = _centroids(4)
    match = match_clusters(centroids, centroids[PERMUTATION], *((previous, new) if on_users else ()))
    assert match.basis == ("users" if on_users else "centroids")
    assert match.mapping == {j: int(PERMUTATION[j]) for j in range(4)}
    assert match.events["event"].to_list() == ["same"] * 4
    figures = stability(previous, new, match.mapping)
    assert figures["ari"] == pytest.approx(1.0)
    assert figures["unchanged_share"] == 1.0
    assert (figures["n_users_compared"], figures["n_only_previous"], figures["n_only_new"]) == (40, 0, 0)
    assert relabel(new, match.mapping).equals(previous)


def test_unmatched_numbers_are_fresh_and_agreement_without_matching_is_low():
    previous, new = _assignment(PREVIOUS), _assignment([(c + 1) % 4 for c in PREVIOUS])
    assert stability(previous, new)["unchanged_share"] == 0.0  # raw K-means numbers: everyone "moved"
    assert stability(previous, new)["ari"] == pytest.approx(1.0)  # yet the same groups
    far = match_clusters(_centroids(2), -_centroids(2), previous_numbers=[3, 7])
    assert far.mapping == {0: 8, 1: 9}
    assert sorted(far.events["event"].to_list()) == ["new", "new", "vanished", "vanished"]


@pytest.mark.parametrize("on_users", [True, False])
def test_a_cluster_whose_users_left_is_named_vanished(on_users):
    previous = _assignment(PREVIOUS)
    kept = previous.filter(pl.col("cluster") != 2)
    centroids = _centroids(4)
    new_rows = [0, 1, 3]
    new = kept.with_columns(pl.col("cluster").replace_strict({0: 0, 1: 1, 3: 2}, return_dtype=pl.Int64))
    match = match_clusters(centroids, centroids[new_rows], *((previous, new) if on_users else ()))
    assert _events(match, "vanished") == [([2], [])]
    assert match.mapping == {0: 0, 1: 1, 2: 3}
    figures = stability(previous, new, match.mapping)
    assert figures["n_only_previous"] == 10 and figures["unchanged_share"] == 1.0


@pytest.mark.parametrize("on_users", [True, False])
def test_a_cluster_cut_in_two_is_named_split(on_users):
    # previous cluster 0 (users 0..9) becomes new clusters 0 (users 0..5) and 4 (users 6..9)
    previous = _assignment(PREVIOUS)
    new = _assignment([4 if 6 <= i < 10 else c for i, c in enumerate(PREVIOUS)])
    base = _centroids(5)
    a, b = base[0], 0.5 * base[0] + np.sqrt(0.75) * base[4]  # the two parts, 60 degrees apart
    whole = 6 * a + 4 * b  # the previous centroid: nearer the larger part
    previous_centroids = np.vstack([whole / np.linalg.norm(whole), base[1:4]])
    new_centroids = np.vstack([a, base[1:4], b])
    match = match_clusters(previous_centroids, new_centroids, *((previous, new) if on_users else ()),
                           new_sizes=[6, 10, 10, 10, 4])
    assert match.mapping == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}  # the larger part keeps 0, the other a fresh 4
    assert _events(match, "split") == [([0], [0, 4])]
    assert match.events["event"].to_list() == ["same"] * 3 + ["split"]


def test_two_clusters_joined_are_named_merge():
    previous = _assignment(PREVIOUS)
    new = previous.with_columns(pl.col("cluster").replace_strict({0: 0, 1: 0, 2: 1, 3: 2}, return_dtype=pl.Int64))
    centroids = _centroids(4)
    match = match_clusters(centroids, centroids[[0, 2, 3]], previous, new)
    [(parts, into)] = _events(match, "merge")
    assert parts == [0, 1] and into == [match.mapping[0]] and match.mapping[0] in (0, 1)
    assert not _events(match, "vanished")  # cluster 1 is in the merge, not gone


def test_relabel_refuses_a_cluster_the_mapping_lacks():
    with pytest.raises(pl.exceptions.InvalidOperationError):
        relabel(_assignment([0, 5]), {0: 0})


def test_centroids_of_different_spaces_are_not_compared():
    with pytest.raises(ValueError, match="different spaces"):
        match_clusters(np.eye(3), np.eye(4))


def test_drift_names_the_activities_of_a_move():
    previous = _assignment([0, 0, 1])
    new = _assignment([1, 1, 1])  # two users moved 0 -> 1
    before = pl.DataFrame({"user_id": ["u0", "u1", "u2"],
                           "activities": [["logs;search"] * 3, ["logs;search", "billing;home"], ["billing;home"]]})
    after = pl.DataFrame({"user_id": ["u0", "u1", "u2"],
                          "activities": [["billing;home"], ["billing;home"] * 2, ["billing;home"]]})
    report = drift_report(previous, new, before, after)
    assert report.transitions.rows() == [(0, 1, 2)]
    grew = report.activity_shifts.filter(pl.col("direction") == "grew")
    shrank = report.activity_shifts.filter(pl.col("direction") == "shrank")
    assert grew["activity"].to_list() == ["billing;home"] and grew["shift"][0] == pytest.approx(0.75)
    assert shrank["activity"].to_list() == ["logs;search"] and shrank["shift"][0] == pytest.approx(-0.75)


def _table(lists: dict[str, list[str]]) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": u, "rank": r, "service": s, "score": 1.0 / r, "page": f"{s};home"}
                         for u, services in lists.items() for r, s in enumerate(services, start=1)])


TABLE = {"a": ["s1", "s2", "s3", "s4", "s5"], "b": ["s1", "s2", "s3", "s4", "s6"]}
HISTORY = pl.DataFrame({"user_id": ["a", "b"], "n_sessions": [4, 7], "last_session": ["a4", "b7"]})


def test_the_same_table_has_no_churn():
    figures, histogram = recommendation_churn(_table(TABLE), _table(TABLE), HISTORY, HISTORY)
    assert figures["churn"] == 0.0 and figures["n_changed"] == 0
    assert figures["histogram"] == {0: 2, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert histogram.height == 6 and histogram["share"][0] == 1.0


def test_a_changed_list_without_new_activity_is_the_models_churn():
    new = {"a": ["s5", "s4", "s3", "s2", "s1"],  # reordered only: no churn
           "b": ["s1", "s2", "s3", "s7", "s8"], "c": ["s1"]}
    figures, histogram = recommendation_churn(_table(TABLE), _table(new), HISTORY, HISTORY)
    assert figures["churn"] == 0.5 and figures["model_churn"] == 0.5
    assert figures["by_cause"] == {"activity": 0, "model": 1, "unattributed": 0}
    assert histogram.filter(pl.col("services_changed") == 2)["model"].item() == 1
    assert (figures["n_added"], figures["n_removed"]) == (1, 0)


def test_a_changed_list_after_a_new_session_is_the_users_churn():
    sessions = pl.DataFrame({"user_id": ["b"] * 2, "session_id": ["b1", "b2"], "start": [1, 2]})
    before, after = history_fingerprint(sessions.head(1)), history_fingerprint(sessions)
    figures, _ = recommendation_churn(_table({"b": TABLE["b"]}), _table({"b": ["s9"]}), before, after)
    assert figures["by_cause"]["activity"] == 1 and figures["histogram"][5] == 1
    _, unattributed = recommendation_churn(_table({"b": TABLE["b"]}), _table({"b": ["s9"]}))
    assert unattributed["unattributed"].sum() == 1


def test_runs_without_common_users_are_matched_on_centroids():
    centroids = _centroids(3)
    match = match_clusters(centroids, centroids[[1, 0, 2]], _assignment([0, 1, 2]), _assignment([0, 1, 2], offset=9))
    assert match.basis == "centroids" and match.mapping == {0: 1, 1: 0, 2: 2}


def test_back_filled_days_after_the_previous_table_count_as_the_users_activity(tmp_path):
    """Sessions of days loaded after the previous table was made began long before it (a back-fill, a synthetic
    world): what that table knew is read from its recorded `data_until`, not from when it was made."""
    from datetime import UTC, datetime

    from sessionbert_assets.assets.recommendation import _churn

    made = datetime(2026, 12, 8, tzinfo=UTC)
    previous = _table({"b": TABLE["b"]}).with_columns(generated_at=pl.lit(made))
    previous.write_parquet(tmp_path / "recommendation_table.parquet")
    sessions = pl.DataFrame({"user_id": ["b"] * 2, "session_id": ["b1", "b2"],
                             "start": [datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)]})
    new = _table({"b": ["s9"]})
    known = _churn(tmp_path / "recommendation_table.parquet", new, sessions, "2026-03-10 00:00:00+00:00")
    assert known["churn/share"] == 1.0 and known["churn/model_share"] == 0.0  # b2 arrived after: b's own doing
    guessed = _churn(tmp_path / "recommendation_table.parquet", new, sessions, None)  # a table from before
    assert guessed["churn/model_share"] == 1.0  # every session began before the table was made
