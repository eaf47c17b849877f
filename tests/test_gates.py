"""Quality gates and schedules: each gate passes and fails on crafted artifacts; a failing model gate
leaves the served recommendation table untouched; the schedules request the right runs."""

from __future__ import annotations

import sqlite3

import dagster as dg
import polars as pl
import pytest
from conftest import materialize_all

from sessionbert_assets.automation import daily_refresh, weekly_retrain
from sessionbert_assets.checks import QualityGatesResource
from sessionbert_assets.definitions import defs
from sessionbert_core.evaluation import gates


def _evaluation(service: float, page: float, popular: float = 0.2, served: str | None = None) -> dict:
    evaluation = {head: {"sessionbert": {"accuracy": ours}, "popularity": {"accuracy": popular},
                         "markov": {"accuracy": 0.5}} for head, ours in (("service", service), ("page", page))}
    return evaluation | ({"served": {"service": served, "page": served}} if served else {})


def test_model_gate_holds_what_serves_to_popularity_and_the_champion():
    assert gates.model_verdict(_evaluation(0.6, 0.4), None).passed
    lost = gates.model_verdict(_evaluation(0.6, 0.15), None)
    assert not lost.passed and "page accuracy 0.1500 of sessionbert is below popularity's 0.2000" in lost.reasons[0]
    assert gates.model_verdict(_evaluation(0.6, 0.4), {"service": 0.61, "page": 0.41}).passed  # within 0.02
    worse = gates.model_verdict(_evaluation(0.55, 0.4) | {"n_sessions": 6_000}, {"service": 0.61, "page": 0.41})
    assert not worse.passed and "below the champion" in worse.reasons[0]
    # on 100 test sessions a 6-point drop is within the noise of two such figures (1.96 x 7 points): no regression
    assert gates.model_verdict(_evaluation(0.55, 0.4) | {"n_sessions": 100}, {"service": 0.61, "page": 0.41}).passed
    # on 1,000 a 6-point drop is not (1.96 x 2.2 points = 4.4), a 4-point one is
    champion = {"service": 0.61, "page": 0.41}
    assert not gates.model_verdict(_evaluation(0.55, 0.4) | {"n_sessions": 1_000}, champion).passed
    assert gates.model_verdict(_evaluation(0.57, 0.4) | {"n_sessions": 1_000}, champion).passed
    # SessionBERT lost on validation and Markov serves: its accuracy is what the gate reads, and it passes
    assert gates.model_verdict(_evaluation(0.1, 0.1, served="markov"), None).passed
    assert not gates.model_verdict(_evaluation(0.1, 0.1, served="markov"), {"service": 0.6, "page": 0.6}).passed
    assert gates.model_verdict(_evaluation(0.1, 0.1, served="popularity"), None).passed  # a tie with itself


def test_recommendation_gate_finds_used_services_crowding_and_bad_ranks():
    used = pl.DataFrame({"user_id": ["a"], "service": ["logs"]})
    good = pl.DataFrame({"user_id": ["a", "a", "b"], "rank": [1, 2, 1], "service": ["dns", "cdn", "logs"]}).cast(
        {"rank": pl.Int32})
    assert gates.recommendation_problems(good, used) == []
    bad = pl.DataFrame({"user_id": ["a"] * 7, "rank": [1, 2, 3, 4, 5, 6, 8],
                        "service": ["logs", "b", "c", "d", "e", "f", "g"]}).cast({"rank": pl.Int32})
    problems = gates.recommendation_problems(bad, used)
    assert len(problems) == 3 and "already used" in problems[0] and "more than 5" in problems[1]


def test_quarantine_share_counts_kept_and_quarantined_rows():
    assert gates.quarantine_share(95, 5) == pytest.approx(0.05)
    assert gates.quarantine_share(0, 0) == 0.0


def test_every_gate_passes_on_tiny_and_the_model_becomes_champion(trained):
    home, result = trained
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"check_files_are_conserved": True, "check_quarantine_share": True,
                           "check_unknown_token_rate": True, "check_model_beats_popularity_and_champion": True,
                           "check_recommendations_are_new_and_few": True,
                           "personas_are_stable": True}  # the first run: nothing to compare with
    with sqlite3.connect(home / "mlflow.db") as db:
        aliases = db.execute("select name, alias, version from registered_model_aliases").fetchall()
    # the next-activity model, and the pyfunc that serves it (built only after the gate passed)
    assert sorted(aliases) == [("sessionbert", "champion", 1), ("sessionbert-recommender", "champion", 1)]


def test_a_failing_model_gate_leaves_the_served_table_untouched(trained):
    home, _ = trained
    served = home / "recommendation_table.parquet"
    before = (served.stat().st_mtime_ns, served.read_bytes())
    strict = QualityGatesResource(margin_over_popularity=1.0)  # no model can beat popularity by 100 points
    result = materialize_all(home, "synthetic", selection=["model_evaluation", "recommendation_table"], gates=strict)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["check_model_beats_popularity_and_champion"] is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "model_evaluation" in materialized and "recommendation_table" not in materialized
    assert (served.stat().st_mtime_ns, served.read_bytes()) == before


def test_schedules_request_the_refresh_and_the_retraining():
    assert len(daily_refresh.evaluate_tick(dg.build_schedule_context()).run_requests) == 1
    assert daily_refresh.job_name == "refresh_recommendations" and weekly_retrain.job_name == "full_retrain"
    # new days arrive by the sensors, so the weekly schedule retrains on the days ingested (a tick with an
    # instance is left to the daemon: a test instance's tick leaves Dagster state behind that later Definitions
    # loads trip on)
    assert daily_refresh.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly_retrain.default_status == dg.DefaultScheduleStatus.STOPPED
    refresh = defs.resolve_job_def("refresh_recommendations")
    assert "recommendation_table" in {k.to_user_string() for k in refresh.asset_layer.executable_asset_keys}


def test_model_gate_holds_what_serves_to_the_best_peer():
    evaluation = _evaluation(0.6, 0.4) | {"n_sessions": 5_000}
    evaluation["service"] |= {"gru4rec": {"accuracy": 0.605}, "sasrec": {"accuracy": 0.58}}
    # half a point behind on 5,000 sessions: within the noise (1 point); 1.5 points: within 1.96 of it
    assert gates.model_verdict(evaluation, None).passed
    evaluation["service"]["gru4rec"]["accuracy"] = 0.615
    assert gates.model_verdict(evaluation, None).passed
    evaluation["service"]["gru4rec"]["accuracy"] = 0.65
    lost = gates.model_verdict(evaluation, None)
    assert not lost.passed and "below the best peer's, gru4rec 0.6500" in lost.reasons[0]
    assert lost.figures["service"]["best_peer"] == {"method": "gru4rec", "accuracy": 0.65}


def test_the_peer_the_gate_holds_to_is_the_one_best_on_validation():
    evaluation = _evaluation(0.6, 0.4, served="gru4rec") | {"n_sessions": 71}
    evaluation["page"] |= {"gru4rec": {"accuracy": 0.732}, "sasrec": {"accuracy": 0.803}}
    evaluation["service"] |= {"gru4rec": {"accuracy": 0.6}}
    evaluation["validation"] = {"page": {"gru4rec": 0.61, "sasrec": 0.40}, "service": {"gru4rec": 0.6}}
    verdict = gates.model_verdict(evaluation, None)
    assert verdict.passed and verdict.figures["page"]["best_peer"] == {"method": "gru4rec", "accuracy": 0.732}
