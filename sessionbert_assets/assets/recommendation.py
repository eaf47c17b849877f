"""New-service recommendation (paper 4.5): the recommendation table and its Hit@k evaluation."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
from transformers import AutoTokenizer

from sessionbert_assets.assets.source import persona_definitions, world_paths
from sessionbert_assets.metadata import figure, registered_model_version, table
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core import plots, storage
from sessionbert_core.choice import DEFAULT_RANKER, METHOD_OF_RANKER, choose_ranker
from sessionbert_core.model import load_next_activity_model
from sessionbert_core.recommend import (
    RANKERS,
    SEEN_DAYS,
    MarkovServices,
    hit_at_k,
    load_descriptions,
    load_recommenders,
    persona_fit,
    recommend_services,
    service_vectors_from_encoder,
    sessionbert_predictor,
)
from sessionbert_core.representation import PERSONA_SPACE, served_vectors
from sessionbert_core.world import load_truth


class RecommendationConfig(dg.Config):
    # the window (sessions a recommendation reads) is the sessionbert resource's `recommendation_sessions`, so
    # the table, its Hit@k evaluation and the served model read the same one
    ranker: str = "auto"  # `ranker_selection`'s choice on validation users; or one by name: `count` (the
    # paper's rec1), `names` / `descriptions` (its rec2 / rec3, appendix C), `persona` (what users of the
    # same cluster adopted most, then the count ranking), `markov`, `popularity`


def service_descriptions(landing_folder: dict) -> dict[str, str] | None:
    """Service descriptions: the synthetic world's catalog, or `service_catalog.json` in the landing folder."""
    world = world_paths(landing_folder)
    return load_descriptions(world.catalog_json if world else Path(landing_folder["folder"]) / "service_catalog.json")


@dg.asset(group_name="recommendation", kinds={"pytorch", "json"}, pool="gpu")
def ranker_selection(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, compute: ComputeResource,
                     landing_folder: dict, finetuned_model: Path, session_splits: pl.DataFrame,
                     billing_records: pl.DataFrame, session_embeddings: pl.DataFrame, cluster_sweep: dict) -> dict:
    """Which ranker the recommendation table serves: each one backtested on the validation users.

    Their first D active days (10, else 6 or 12) are seen and the rest unseen, as the Hit@k
    evaluation does for the test users; the best Hit@5 (then MRR, then the simpler ranker) serves.
    Synthetic truth never reaches the choice. With too few validation adopters, the paper's count
    ranker serves and the metadata says so.
    """
    precision = compute.report_precision(context)
    recommenders = load_recommenders(
        finetuned_model, session_splits,
        served_vectors(sessionbert.home_path / PERSONA_SPACE, session_embeddings, session_splits),
        cluster_sweep["k"], cluster_sweep["recent_sessions"],
        service_descriptions(landing_folder), None, precision.device, precision.bf16, sessionbert.seed)
    selection = choose_ranker(session_splits, billing_records, recommenders,
                              recent=sessionbert.recommendation_sessions)
    storage.write_json(selection, sessionbert.home_path / "ranker_selection.json")
    rows = [{"ranker": r, **{k: round(v, 4) for k, v in f.items()}} for r, f in selection["validation"].items()]
    context.add_output_metadata({"ranker": selection["ranker"], "reason": selection["reason"],
                                 "validation_users": selection["n_users"],
                                 "backtest": table(pl.DataFrame(rows)) if rows else "no backtest"})
    return selection


@dg.asset(group_name="recommendation", kinds={"pytorch", "parquet"}, deps=["model_evaluation"], pool="gpu")
def recommendation_table(context: dg.AssetExecutionContext, config: RecommendationConfig,
                         sessionbert: SessionBertResource, compute: ComputeResource, landing_folder: dict,
                         finetuned_model: Path, session_splits: pl.DataFrame, billing_records: pl.DataFrame,
                         user_personas: pl.DataFrame, ranker_selection: dict) -> pl.DataFrame:
    """Top-5 services each user has not used yet, from their last 8 sessions (what the product shows).

    By the ranker chosen on validation users (`ranker_selection`), or the one configured. The
    paper's count ranker: the service head's top 5 after each recent session, services the user
    already used (in any session or bill) removed, ranked by how many sessions recommended them
    (ties and the fill: summed probability). Each row has a landing page from the page head, the
    user's persona and the ranker that served it. It waits
    for the model's quality gate (a check on `model_evaluation`): a model that fails it never
    reaches this table, and the previous one stays served.
    """
    if config.ranker not in ("auto", *RANKERS):
        raise dg.Failure(description=f"ranker must be auto or one of {', '.join(RANKERS)}, not {config.ranker!r}")
    ranker = ranker_selection["ranker"] if config.ranker == "auto" else config.ranker
    precision = compute.report_precision(context)
    model = load_next_activity_model(finetuned_model, precision.device, precision.bf16)
    predictor = sessionbert_predictor(model, AutoTokenizer.from_pretrained(finetuned_model), bf16=precision.bf16)
    vectors = None
    if ranker in ("names", "descriptions"):
        vectors = service_vectors_from_encoder(list(model.config.service_labels), service_descriptions(landing_folder),
                                               precision.device, precision.bf16)
    try:
        ranked = recommend_services(predictor, session_splits, billing_records, ranker,
                                    sessionbert.recommendation_sessions,
                                    user_personas.select("user_id", "cluster"), vectors,
                                    markov=MarkovServices.fit(session_splits.filter(pl.col("split") == "train"))
                                    if ranker == "markov" else None,
                                    services=list(model.config.service_labels))
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    version = registered_model_version(context.instance) or "unregistered"
    recommendations = (
        ranked.join(user_personas.select("user_id", "persona"), on="user_id", how="left", maintain_order="left")
        .with_columns(pl.col("persona").fill_null(""), model_version=pl.lit(version),
                      generated_at=pl.lit(datetime.now(UTC)), ranker=pl.lit(ranker))
        .select("user_id", "rank", "service", "score", "persona", "model_version", "generated_at", "page", "ranker")
    )
    context.add_output_metadata({
        "users": session_splits["user_id"].n_unique(),
        "users_with_recommendations": recommendations["user_id"].n_unique(),
        "ranker": ranker, "ranker_reason": ranker_selection["reason"] if config.ranker == "auto" else "configured",
        "recent_sessions": sessionbert.recommendation_sessions,
        "most_recommended": table(recommendations.group_by("service").len("users").sort("users", descending=True)),
        "sample": table(recommendations.head(15).drop("generated_at")),
    })
    return recommendations


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow", "json"}, pool="gpu")
def hit_at_k_evaluation(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                        compute: ComputeResource, mlflow_tracking: MlflowResource, landing_folder: dict,
                        finetuned_model: Path, session_splits: pl.DataFrame, billing_records: pl.DataFrame,
                        session_embeddings: pl.DataFrame, cluster_sweep: dict,
                        recommendation_table: pl.DataFrame) -> dict:
    """Hit@3, Hit@5, NDCG@5 and MRR for D = 6, 10, 12 seen days (paper Table 6), beside the baselines.

    Each user's first D active days are seen, the rest unseen; every method recommends from the
    seen days only and is scored on the services first used in the unseen days, over users who
    adopt at least one. Only test-split users are scored: no model was trained on any of their
    sessions. Methods: SessionBERT (count ranker), its persona, name and description rankers,
    popularity, first-order Markov, random and, on the synthetic world, the oracle. The
    persona ranker's clusters are refitted on seen sessions only. Also the share of recommended
    services that fit the user's persona.
    """
    world = world_paths(landing_folder)
    precision = compute.report_precision(context)
    recommenders = load_recommenders(
        finetuned_model, session_splits,
        served_vectors(sessionbert.home_path / PERSONA_SPACE, session_embeddings, session_splits),
        cluster_sweep["k"], cluster_sweep["recent_sessions"],
        service_descriptions(landing_folder), world.root if world else None, precision.device, precision.bf16,
        sessionbert.seed)
    test_users = session_splits.filter(pl.col("split") == "test")["user_id"].unique()
    evaluation = hit_at_k(session_splits, billing_records, recommenders, SEEN_DAYS,
                          sessionbert.recommendation_sessions, scored_users=test_users)
    evaluation["scored_users"] = "test split: users none of whose sessions was trained on"
    served = recommendation_table["ranker"][0] if recommendation_table.height else DEFAULT_RANKER
    evaluation["served_ranker"] = METHOD_OF_RANKER[served]
    definitions = persona_definitions(landing_folder)
    if definitions is not None:
        recommended = recommendation_table.select("user_id", "service")
        evaluation["persona_fit"] = {"assigned": persona_fit(recommended, recommendation_table,
                                                             definitions.services_of_persona)}
        if world is not None:
            evaluation["persona_fit"]["true"] = persona_fit(recommended, load_truth(world.root, "users"),
                                                            definitions.services_of_persona)
    rows = [{"seen_days": int(d), "method": m, "n_users": e["n_users"], **{k: round(v, 4) for k, v in f.items()}}
            for d, e in evaluation["seen_days"].items() for m, f in e.items() if isinstance(f, dict)]
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({"seen_days": [], "method": []})
    metadata = {"table": table(frame), "served_ranker": evaluation["served_ranker"]}
    with mlflow_tracking.run(context, sessionbert.home_path):
        mlflow.log_params(precision.metadata() | {"served_ranker": evaluation["served_ranker"]})
        mlflow.log_metrics({f"D{r['seen_days']}_{r['method']}_{k.replace('@', '_at_')}": r[k]
                            for r in rows for k in ("hit@3", "hit@5", "ndcg@5", "mrr")})
        wide = frame.filter(pl.col("seen_days") == 10).select("method", "hit@3", "hit@5", "ndcg@5", "mrr") \
            if rows else frame
        if wide.height:
            fig = plots.grouped_bars(wide, "method", ["hit@3", "hit@5", "ndcg@5", "mrr"], "Hit@k, D = 10 seen days")
            mlflow.log_figure(fig, "hit_at_k.png")
            metadata["hit_at_k_plot"] = figure(fig)
            plots.close(fig)
    for d, entry in evaluation["seen_days"].items():
        metadata[f"D{d}/n_users"] = entry["n_users"]
        for method, figures in entry.items():
            if isinstance(figures, dict):
                metadata[f"D{d}/{method}/hit@5"] = round(figures["hit@5"], 4)
    if "persona_fit" in evaluation:
        for kind, fit in evaluation["persona_fit"].items():
            if fit:
                metadata[f"persona_fit/{kind}"] = round(fit["share"], 4)
    context.add_output_metadata(metadata)
    return evaluation
