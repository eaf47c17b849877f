"""Evaluation assets: next-activity figures of the baselines and, on the synthetic world, its ceiling; the peers
(SASRec, GRU4Rec, V-SKNN, a higher-order Markov chain) trained on the same split."""


import time

import dagster as dg
import polars as pl

from sessionbert_assets.assets.source import world_paths
from sessionbert_assets.metadata import evaluation_metadata
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.evaluation.next_activity import baseline_scores, scores
from sessionbert_core.peers import VSKNN, GRU4Rec, HigherOrderMarkov, SASRec
from sessionbert_core.world.truth import load_truth


@dg.asset(group_name="evaluation", kinds={"scikitlearn", "json"})
def next_activity_baselines(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                            session_splits: pl.DataFrame) -> dict:
    """Next service and next page of test sessions (docs/design.md#next-activity) by the baselines.

    Most popular and first-order Markov on the previous activity, fitted on the train split; on the
    synthetic world also the ceiling, the best prediction knowing each session's true task and chain
    state. The model's own figures join these in `model_evaluation`.
    """
    world = world_paths(sessionbert.landing())
    ceiling = load_truth(world.root, "sessions") if world else None
    train = session_splits.filter(pl.col("split") == "train")
    test = session_splits.filter(pl.col("split") == "test")
    evaluation = baseline_scores(train, test, ceiling)
    metadata = evaluation_metadata(evaluation)
    if ceiling is not None and "ceiling" in evaluation.get("service", {}):
        for head in ("service", "page"):
            gap = evaluation[head]["ceiling"]["accuracy"] - evaluation[head]["markov"]["accuracy"]
            metadata[f"{head}/ceiling_minus_markov"] = round(gap, 4)
    context.add_output_metadata(metadata)
    return evaluation


# optimizer steps each neural peer may take, by profile (None: its own schedule, to early stopping): in steps, not
# seconds, so that a run gives the same peers on any machine and under any load. About a fifth of SessionBERT's
# training time on 2 cores (the peers' cost is held to 20% of a run): on tiny 300 steps are some 6 s for GRU4Rec
# (its best validation epoch came at 140 steps of 1,500) and 10 s for SASRec; the best epoch within them is kept
PEER_STEPS = {"tiny": 300, "small": 1_500}


def peers(seed: int, profile: str) -> dict:
    """The peers by name (evaluation.choice.PEERS), each with its reference's published settings (its module),
    the neural ones within the profile's step budget."""
    neural = {"gru4rec": GRU4Rec(seed=seed), "sasrec": SASRec(seed=seed)}
    for peer in neural.values():
        peer.max_steps = PEER_STEPS.get(profile)
    return {"markov_backoff": HigherOrderMarkov(), "vsknn": VSKNN(), **neural}


@dg.asset(group_name="evaluation", kinds={"pytorch", "polars"}, pool="gpu")
def next_activity_peers(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                        session_splits: pl.DataFrame) -> pl.DataFrame:
    """What a recommender-systems engineer would pick instead of SessionBERT, trained on the same train split:
    a higher-order Markov chain with back-off, V-SKNN, GRU4Rec and SASRec with cross-entropy over every
    activity (`sessionbert_core.peers`, each citing its paper), their epochs chosen on the validation split.

    One row per peer, split (validation, test) and protocol session: the top activities and services with
    their probabilities, as SessionBERT's predictions. `model_evaluation` scores them on test beside SessionBERT
    and lets them compete for what serves on validation.
    """
    split = {name: session_splits.filter(pl.col("split") == name) for name in ("train", "validation", "test")}
    frames, metadata = [], {}
    for name, peer in peers(sessionbert.seed, sessionbert.profile).items():
        started = time.perf_counter()
        peer.fit(split["train"], split["validation"])
        for part in ("validation", "test"):
            frames.append(peer.predict(split[part]).with_columns(peer=pl.lit(name), split=pl.lit(part)))
        test = frames[-1]
        metadata[f"{name}/seconds"] = round(time.perf_counter() - started, 1)
        metadata[f"{name}/test_service_accuracy"] = round(scores(test["target_service"],
                                                                 test["predicted_service"])["accuracy"], 4)
        metadata[f"{name}/test_page_accuracy"] = round(scores(test["target_page"],
                                                              test["predicted_page"])["accuracy"], 4)
        metadata[f"{name}/settings"] = dg.MetadataValue.json(peer.summary_)
        context.log.info(f"{name}: trained in {metadata[f'{name}/seconds']} s")
    context.add_output_metadata(metadata)
    return pl.concat(frames, how="vertical_relaxed")
