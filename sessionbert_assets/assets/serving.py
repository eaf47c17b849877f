"""Serving (beyond the paper): the champion model as an MLflow pyfunc that `sessionbert serve` serves."""

import json
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from mlflow import MlflowClient

from sessionbert_assets.assets.recommendation import service_descriptions
from sessionbert_assets.checks import CHAMPION
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core.personas.embed import user_vector_sessions
from sessionbert_core.personas.representation import PERSONA_SPACE
from sessionbert_core.recommend.ranking import service_vectors_from_encoder, used_services
from sessionbert_core.serving.pyfunc import RankingInputs, known_users, save_serving_model

SERVED_MODEL = "sessionbert-recommender"  # its name in the MLflow Model Registry


@dg.asset(group_name="recommendation", kinds={"mlflow", "pytorch"},
          deps=["recommendation_table", "cluster_centroids", "persona_mapping"])
def serving_model(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, compute: ComputeResource,
                  mlflow_tracking: MlflowResource, finetuned_model: Path, pretrained_model: Path,
                  session_splits: pl.DataFrame, billing_records: pl.DataFrame, user_personas: pl.DataFrame,
                  cluster_sweep: dict) -> Path:
    """The production model as an MLflow pyfunc: users' recent page views (JSON) in, persona and top-5
    new services out.

    Built after the recommendation table, so only from a model that passed the quality gate; logged
    to MLflow and registered as `sessionbert-recommender` with the alias `champion`. It carries the
    fine-tuned model (ranking), the pretrained encoder, centroids and persona tags (the persona of
    a user it never saw) and, per known user, their persona and every service they used (never
    recommended again). Serve it with `sessionbert serve` (`make serve`; `mlflow models serve` works
    too). The precision asked for (`auto` by default) travels with it, resolved on the serving machine.
    """
    home = sessionbert.home_path
    known = known_users(user_personas, used_services(session_splits, billing_records))
    table = _latest_metadata(context, "recommendation_table")  # the ranker it served, chosen on validation
    ranker = table.get("ranker", "count")
    settings = {"pooling": _latest_metadata(context, "session_embeddings").get("pooling", "mean"),
                "user_vector_sessions": user_vector_sessions(cluster_sweep), "precision_requested": compute.precision,
                "ranker": ranker, "recommendation_sessions": sessionbert.recommendation_sessions}
    vectors = None
    if ranker in ("names", "descriptions"):
        services = json.loads((finetuned_model / "config.json").read_text())["service_labels"]
        vectors = service_vectors_from_encoder(services, service_descriptions(sessionbert.landing()))
    target = save_serving_model(home / "serving_model", finetuned_model, pretrained_model,
                                home / "cluster_centroids.parquet", home / "persona_mapping.parquet", known, settings,
                                RankingInputs.tables(ranker, session_splits, vectors), home / PERSONA_SPACE)
    with mlflow_tracking.run(context, home) as run:
        mlflow.log_params(settings | {"known_users": known.height})
        mlflow.log_artifacts(str(target), artifact_path="serving_model")
        version = mlflow_tracking.register(run, "serving_model", f"pyfunc of Dagster run {context.run_id}",
                                           name=SERVED_MODEL)
        MlflowClient().set_registered_model_alias(SERVED_MODEL, CHAMPION, version)
    context.add_output_metadata({
        "registered_model": f"{SERVED_MODEL} version {version} (alias {CHAMPION})",
        "known_users": known.height, "pooling": settings["pooling"], "ranker": ranker,
        "serve": f"sessionbert serve --model {target} --port 5001",
    })
    return target


def _latest_metadata(context: dg.AssetExecutionContext, asset: str) -> dict:
    """The metadata values of `asset`'s latest materialization (empty before the first)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    return {key: getattr(value, "value", value) for key, value in event.asset_materialization.metadata.items()}
