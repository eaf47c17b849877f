"""The synthetic world: deterministic, consistent with its ground truth, shaped like the paper's findings."""

from __future__ import annotations

import numpy as np
import polars as pl
import yaml

from sessionbert_core.config import WorldSize
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.evaluation.next_activity import baseline_scores
from sessionbert_core.world.catalog import HUB_ACTIVITIES, PERSONAS, SERVICES
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import adoption_probabilities, load_truth


def _events(world) -> pl.DataFrame:
    return pl.read_parquet(world.landing / "events-*.parquet")


def test_world_is_deterministic_by_seed(tmp_path):
    size = WorldSize(n_users=30, n_days=45, sessions_per_day=0.5)
    a = _events(generate_world(tmp_path / "a", size, seed=7))
    b = _events(generate_world(tmp_path / "b", size, seed=7))
    c = _events(generate_world(tmp_path / "c", size, seed=8))
    assert a.equals(b)
    assert not a.equals(c)


def test_catalog_is_a_cloud_console_of_hundreds_of_pages():
    assert len(SERVICES) >= 40
    assert sum(len(pages) for _, pages in SERVICES.values()) >= 250
    assert len(PERSONAS) == 7


def test_sessions_match_their_ground_truth(tiny_world):
    events = _events(tiny_world)
    truth = load_truth(tiny_world.root, "sessions")
    lengths = events.group_by("session_id").len()
    joined = truth.join(lengths, on="session_id", how="full", coalesce=True)
    assert joined["len"].null_count() == 0 and joined["n_activities"].null_count() == 0
    assert (joined["len"] == joined["n_activities"]).all()
    days = events.select(pl.col("timestamp").dt.date().n_unique()).item()
    assert days >= 45


def test_first_use_days_agree_with_events(tiny_world):
    events = _events(tiny_world).with_columns(
        day=(pl.col("timestamp").dt.date() - pl.date(2026, 3, 2)).dt.total_days())
    first_seen = events.group_by("user_id", "service").agg(seen=pl.col("day").min())
    truth = load_truth(tiny_world.root, "first_use")
    adopted = truth.filter(pl.col("first_use_day") >= 0).join(first_seen, on=["user_id", "service"])
    assert adopted.height > 0
    assert (adopted["first_use_day"] == adopted["seen"]).all()
    # every service seen in a session has a first-use entry: nothing used is missing from the truth
    missing = first_seen.join(truth, on=["user_id", "service"], how="anti")
    assert missing.height == 0


def test_users_adopt_services_of_their_persona_tasks(tiny_world):
    truth = load_truth(tiny_world.root, "first_use").filter(pl.col("first_use_day") > 0)
    users = load_truth(tiny_world.root, "users")
    tasks = yaml.safe_load(tiny_world.personas_yaml.read_text())
    persona_services = {
        persona: {a.split(";")[0] for t in spec["tasks"] for a in tasks["tasks"][t]["activities"]}
        for persona, spec in tasks["personas"].items()
    }
    adopted = truth.join(users.select("user_id", "persona"), on="user_id")
    in_persona = [s in persona_services[p] for s, p in zip(adopted["service"], adopted["persona"], strict=True)]
    assert np.mean(in_persona) > 0.8


def test_persona_definitions_name_real_activities(tiny_world):
    spec = yaml.safe_load(tiny_world.personas_yaml.read_text())
    known = {f"{s};{p}" for s, (_, pages) in SERVICES.items() for p in pages} | {f"{s};*" for s in SERVICES}
    for task in spec["tasks"].values():
        assert set(task["activities"]) <= known
    for persona in spec["personas"].values():
        assert set(persona["tasks"]) <= set(spec["tasks"])


def test_two_personas_alike_and_two_rare():
    weights = {p: tasks for p, (_, tasks) in PERSONAS.items()}
    names = sorted({t for w in weights.values() for t in w})

    def cosine(a: str, b: str) -> float:
        va = np.array([weights[a].get(t, 0) for t in names])
        vb = np.array([weights[b].get(t, 0) for t in names])
        return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))

    assert cosine("Persona 2", "Persona 4") > 0.9
    others = [cosine(a, b) for a in weights for b in weights if a < b and {a, b} != {"Persona 2", "Persona 4"}]
    assert max(others) < 0.5
    assert PERSONAS["Persona 6"][0] < 0.03 and PERSONAS["Persona 7"][0] < 0.03


def test_ceiling_is_well_above_markov(tiny_world):
    events = _events(tiny_world)
    billing = pl.read_parquet(tiny_world.landing / "billing-*.parquet")
    sessions = split_sessions(serialize_sessions(events, billing))
    scores = baseline_scores(sessions.filter(pl.col("split") != "test"), sessions.filter(pl.col("split") == "test"),
                             load_truth(tiny_world.root, "sessions"))
    for head in ("service", "page"):
        assert scores[head]["ceiling"]["accuracy"] > scores[head]["markov"]["accuracy"] + 0.05
        assert scores[head]["markov"]["accuracy"] > scores[head]["popularity"]["accuracy"]


def test_ceiling_predicts_a_page_the_task_can_reach(tiny_world):
    truth = load_truth(tiny_world.root, "sessions")
    spec = yaml.safe_load(tiny_world.personas_yaml.read_text())["tasks"]
    for task, activity in truth.select("task", "ceiling_activity").unique().iter_rows():
        allowed = set(spec[task]["activities"]) | set(HUB_ACTIVITIES)
        assert activity in allowed or (activity.startswith("catalog;") and "catalog;*" in allowed)


def test_adoption_probabilities_rank_real_adoptions_first(tiny_world):
    probabilities = adoption_probabilities(tiny_world.root, cutoff_day=10, horizon_days=35)
    first_use = load_truth(tiny_world.root, "first_use")
    adopted = first_use.filter(pl.col("first_use_day") >= 10).select("user_id", "service")
    scored = probabilities.join(adopted.with_columns(adopted=pl.lit(True)), on=["user_id", "service"], how="left")
    scored = scored.with_columns(pl.col("adopted").fill_null(False))
    assert probabilities["probability"].is_between(0, 1).all()
    mean_adopted = scored.filter("adopted")["probability"].mean()
    mean_other = scored.filter(~pl.col("adopted"))["probability"].mean()
    assert mean_adopted > 2 * mean_other
