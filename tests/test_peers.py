"""The peers beside SessionBERT learn what a session's order says, choose their epochs on validation only, and
predict under the project's protocol: the prefix in, the last activity out, both heads from one distribution."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
import torch

from sessionbert_core.evaluation.baselines import MarkovChain, transitions
from sessionbert_core.model.inputs import next_activity_inputs
from sessionbert_core.peers.gru4rec import GRU4Rec
from sessionbert_core.peers.markov import HigherOrderMarkov
from sessionbert_core.peers.protocol import protocol_inputs
from sessionbert_core.peers.sasrec import SASRec
from sessionbert_core.peers.sknn import VSKNN

SERVICES = ("home", "compute", "storage", "logs", "metrics")  # a chain's i-th activity is of the i-th service
# three chains of five activities, none shared: what follows an activity is fixed
CHAINS = [[f"{service};{family}{i}" for i, service in enumerate(SERVICES)] for family in "abc"]
# the same chains through one shared activity: what follows it depends on what came before it
HUB_CHAINS = [[*chain[:2], "storage;hub", *chain[3:]] for chain in CHAINS]
QUICK = {"batch_size": 16, "max_epochs": 40, "patience": 2, "min_steps": 0}  # small networks learn the chains fast
# the sequence models see the harder chains; V-SKNN scores activities by the sessions that hold them, not by order
PEERS = {
    "markov": (HigherOrderMarkov, {}, HUB_CHAINS),
    "v_sknn": (VSKNN, {"k": 20, "sample_size": 50}, CHAINS),
    "sasrec": (SASRec, {"hidden": 32, "learning_rate": 1e-2, **QUICK}, HUB_CHAINS),
    "gru4rec": (GRU4Rec, {"hidden": 32, "learning_rate": 0.2, **QUICK}, HUB_CHAINS),
}


def _sessions(chains: list[list[str]], copies: int, split: str) -> pl.DataFrame:
    """Every beginning of two or more activities of every chain, `copies` times, as the splits' sessions look."""
    rows = [{"user_id": f"{split}-{copy}", "session_id": f"{split}-{copy}-{c}-{n}", "context": "",
             "start": 1_000 * copy + 10 * c + n, "activities": chain[:n], "n_activities": n}
            for copy in range(copies) for c, chain in enumerate(chains) for n in range(2, len(chain) + 1)]
    return pl.DataFrame(rows).with_columns(pl.col("n_activities").cast(pl.UInt32))


@pytest.fixture(scope="module")
def fitted() -> dict:
    """Each peer fit on its chains' train split (its epochs or settings chosen on validation), with its splits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # networks this small run fastest on one thread, and a busy machine slows two down
    try:
        peers = {}
        for name, (peer, settings, chains) in PEERS.items():
            train, validation, test = (_sessions(chains, copies, split)
                                       for copies, split in ((8, "train"), (2, "validation"), (1, "test")))
            peers[name] = (peer(**settings).fit(train, validation), train, validation, test)
        return peers
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", PEERS)
def test_peer_learns_a_deterministic_chain(fitted, name):
    peer, _, _, test = fitted[name]
    predicted = peer.predict(test)
    assert predicted.height == test.height
    assert (predicted["predicted_page"] == predicted["target_page"]).all(), name
    assert (predicted["predicted_service"] == predicted["target_service"]).all(), name


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_epochs_are_chosen_on_validation_and_the_best_kept(fitted, name):
    peer, _, validation, _ = fitted[name]
    summary = peer.summary_
    curve = summary["validation_curve"]
    assert len(curve) == summary["epochs_run"] <= summary["epochs_allowed"]
    assert summary["epochs"] == int(np.argmax(curve)) + 1  # the first best epoch
    assert summary["epochs_run"] - summary["epochs"] == summary["patience"]  # stopped early, not at the cap
    # the weights kept are the best epoch's: they give its validation accuracy again
    assert peer.accuracy(protocol_inputs(validation)) == pytest.approx(summary["validation_accuracy"], abs=1e-6)


def test_fit_reads_only_train_and_validation():
    """Nothing but the two splits reaches fit: a peer fit on the same splits with the same seed is the same
    model, whatever was predicted before with another."""
    train, validation, test = (_sessions(HUB_CHAINS, c, s) for c, s in ((4, "train"), (1, "validation"), (1, "test")))
    settings = {"hidden": 16, "batch_size": 16, "max_epochs": 2, "patience": 1, "min_steps": 0, "seed": 3}
    first = GRU4Rec(**settings).fit(train, validation)
    first.predict(test)
    second = GRU4Rec(**settings).fit(train, validation)
    assert first.summary_["validation_curve"] == second.summary_["validation_curve"]
    assert first.predict(test)["page_probabilities"].equals(second.predict(test)["page_probabilities"])


def test_sknn_keeps_reminders_only_where_validation_says_so(fitted):
    peer = fitted["v_sknn"][0]
    # a chain never comes back to an activity: scoring the prefix's own activities can only hurt
    assert peer.summary_["remind"] is False
    assert peer.summary_["validation_accuracy_by_remind"]["False"] == 1.0


@pytest.mark.parametrize("name", PEERS)
def test_prediction_frames_are_the_models(fitted, name):
    peer, _, _, test = fitted[name]
    # activities never seen in training: one opening a prefix, one as the target
    unseen = pl.concat([test.head(1).with_columns(activities=pl.concat_list(pl.lit(["new;page"]), "activities")),
                        test.head(1).with_columns(activities=pl.col("activities").list.concat(pl.lit(["new;page"])))]
                       ).with_columns(n_activities=pl.col("n_activities") + 1)
    predicted = peer.predict(pl.concat([test, unseen]), k=3)
    assert predicted.columns == ["user_id", "session_id", "previous", "target_service", "target_page", "services",
                                 "service_probabilities", "pages", "page_probabilities", "predicted_service",
                                 "predicted_page"]
    for items, probabilities in (("pages", "page_probabilities"), ("services", "service_probabilities")):
        assert (predicted[items].list.len() == 3).all()
        p = np.array(predicted[probabilities].to_list())
        assert (p >= 0).all() and (p.sum(1) <= 1 + 1e-5).all()
        assert (np.diff(p, axis=1) <= 0).all()  # most probable first
    assert predicted.tail(2)["target_page"].to_list() == [test["activities"][0][-1], "new;page"]


@pytest.mark.parametrize("name", PEERS)
def test_the_target_never_reaches_the_prediction(fitted, name):
    """Whatever the last activity is, the prediction for a session is the same: only its prefix is read."""
    peer, _, _, test = fitted[name]
    changed = test.with_columns(activities=pl.col("activities").list.head(pl.col("n_activities") - 1)
                                .list.concat(pl.lit(["compute;a1"])))
    inputs = protocol_inputs(test)
    assert not inputs.select(pl.col("prefix").list.contains(pl.col("target_page"))).to_series().any()
    before, after = peer.predict(test), peer.predict(changed)
    assert before["pages"].equals(after["pages"])
    assert np.allclose(before["page_probabilities"].to_list(), after["page_probabilities"].to_list())


def test_first_order_markov_is_the_projects_chain():
    """Order 1 with the same smoothing is `evaluation.baselines.MarkovChain`: the same probabilities."""
    rng = random.Random(0)
    activities = [f"s{i % 3};p{i}" for i in range(8)]
    rows = [{"user_id": f"u{i}", "session_id": str(i), "context": "", "start": i,
             "activities": [rng.choice(activities) for _ in range(rng.randint(2, 6))]} for i in range(300)]
    train = pl.DataFrame(rows).with_columns(n_activities=pl.col("activities").list.len())
    peer = HigherOrderMarkov(order=1).fit(train, train)
    pairs = transitions(train)
    chain = MarkovChain().fit(pairs["previous"], pairs["following"])
    inputs = next_activity_inputs(train).head(50)
    ours = peer.distribution(peer.vocabulary_.encode(inputs["prefix"]))
    grid = inputs.select(row=pl.int_range(pl.len()), previous="previous").join(
        pl.DataFrame({"candidate": list(peer.vocabulary_.activities)}), how="cross")
    theirs = chain.probability(grid).sort("row", maintain_order=True)["markov"].to_numpy().reshape(ours.shape)
    assert np.allclose(ours, theirs, atol=1e-6)
