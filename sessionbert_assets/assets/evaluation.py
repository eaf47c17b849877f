"""Evaluation assets: next-activity figures of the baselines and, on the synthetic world, its ceiling."""


import dagster as dg
import polars as pl

from sessionbert_assets.assets.source import world_paths
from sessionbert_assets.metadata import evaluation_metadata
from sessionbert_assets.resources import SessionBertResource
from sessionbert_core.evaluation.next_activity import baseline_scores
from sessionbert_core.world.truth import load_truth


@dg.asset(group_name="evaluation", kinds={"scikitlearn", "json"})
def next_activity_baselines(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                            session_splits: pl.DataFrame) -> dict:
    """Next service and next page of test sessions (DESIGN.md's protocol) by the baselines.

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
