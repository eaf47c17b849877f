"""New-service recommendation (paper 4.5): the recommendation table and its Hit@k evaluation."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import dagster as dg
import mlflow
import polars as pl
from transformers import AutoTokenizer

from sessionbert_assets import headlines
from sessionbert_assets.assets.source import persona_definitions, world_paths
from sessionbert_assets.charts import line_chart
from sessionbert_assets.metadata import (
    SERVES,
    SHORT_LIST,
    count,
    headline,
    headline_first,
    previous_value,
    registered_model_version,
    table,
)
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core import plots, storage
from sessionbert_core.model.networks import load_next_activity_model
from sessionbert_core.personas.embed import user_vector_sessions
from sessionbert_core.personas.representation import PERSONA_SPACE, served_vectors
from sessionbert_core.recommend.churn import history_fingerprint, recommendation_churn
from sessionbert_core.recommend.hit_at_k import SEEN_DAYS, hit_at_k, load_recommenders
from sessionbert_core.recommend.ranking import (
    RANKERS,
    MarkovServices,
    load_descriptions,
    persona_fit,
    recommend_services,
    service_vectors_from_encoder,
    sessionbert_predictor,
    used_services,
)
from sessionbert_core.recommend.selection import DEFAULT_RANKER, METHOD_OF_RANKER, choose_ranker
from sessionbert_core.world.truth import load_truth


class RecommendationConfig(dg.Config):
    # the window (sessions a recommendation reads) is the sessionbert resource's `recommendation_sessions`, so
    # the table, its Hit@k evaluation and the served model read the same one
    # `ranker_selection`'s choice on validation users; or one by name: `count` (the paper's rec1), `names` /
    # `descriptions` (its rec2 / rec3, appendix C), `persona` (what users of the same cluster adopted most, then
    # the count ranking), `markov`, `popularity`, `item_knn`, `ease` (collaborative: recommend/collaborative.py)
    ranker: Literal[("auto", *RANKERS)] = "auto"


def service_descriptions(landing_folder: dict) -> dict[str, str] | None:
    """Service descriptions: the synthetic world's catalog, or `service_catalog.json` in the landing folder."""
    world = world_paths(landing_folder)
    return load_descriptions(world.catalog_json if world else Path(landing_folder["folder"]) / "service_catalog.json")


@dg.asset(group_name="recommendation", kinds={"pytorch", "json"}, pool="gpu")
def ranker_selection(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, compute: ComputeResource,
                     finetuned_model: Path, session_splits: pl.DataFrame,
                     billing_records: pl.DataFrame, session_embeddings: pl.DataFrame, cluster_sweep: dict) -> dict:
    """Which ranker the recommendation table serves: each one backtested on every non-test user.

    Train and validation users' first D active days (10, else 6 or 12) are seen and the rest unseen, as
    the Hit@k evaluation does for the test users; the simplest ranker within one standard error of the
    best Hit@5 serves. The figures over validation users alone stand beside (the model read train users'
    sessions as next-activity examples). Synthetic truth never reaches the choice. With too few
    adopters, the paper's count ranker serves and the metadata says so.
    """
    precision = compute.report_precision(context)
    recommenders = _recommenders(sessionbert, precision, sessionbert.landing(), finetuned_model, session_splits,
                                 session_embeddings, cluster_sweep, None)
    selection = choose_ranker(session_splits, billing_records, recommenders,
                              recent=sessionbert.recommendation_sessions)
    on_validation = {r: {"validation hit@5": round(f["hit@5"], 4)} for r, f in selection["validation"].items()}
    rows = [{"ranker": r, **{k: round(v, 4) for k, v in f.items()}, **on_validation.get(r, {})}
            for r, f in selection["backtest"].items()]
    context.add_output_metadata({"ranker": selection["ranker"], "reason": selection["reason"],
                                 "backtest_users": selection["n_users"],
                                 "validation_users": selection["n_users_validation"],
                                 "backtest": table(pl.DataFrame(rows)) if rows else "no backtest"})
    return selection


# model_evaluation too, not only champion_model: its blocking gate then stops this table even in a run without the
# promotion selected
@dg.asset(group_name="recommendation", kinds={"pytorch", "parquet"}, deps=["model_evaluation", "champion_model"],
          pool="gpu")
def recommendation_table(context: dg.AssetExecutionContext, config: RecommendationConfig,
                         sessionbert: SessionBertResource, compute: ComputeResource,
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
    ranker = ranker_selection["ranker"] if config.ranker == "auto" else config.ranker
    try:
        ranked = _rank(ranker, compute.report_precision(context), finetuned_model, sessionbert.landing(),
                       session_splits, billing_records, user_personas, sessionbert.recommendation_sessions)
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
        "users": count(session_splits["user_id"].n_unique()),
        "users_recommended": count(recommendations["user_id"].n_unique()),
        "ranker": ranker, "ranker_reason": ranker_selection["reason"] if config.ranker == "auto" else "configured",
        "last_sessions": sessionbert.recommendation_sessions, "model_version": version,
        "most_recommended": table(recommendations.group_by("service").len("users")
                                  .sort("users", "service", descending=[True, False]), SHORT_LIST),
        "sample": table(_sample(recommendations), descriptions=SAMPLE_DESCRIPTIONS),
        "data_until": str(session_splits["start"].max() or ""), **_churn(
            sessionbert.home_path / "recommendation_table.parquet", recommendations, session_splits,
            previous_value(context, "data_until"))})
    return recommendations


def _churn(previous_path: Path, recommendations: pl.DataFrame, session_splits: pl.DataFrame,
           previous_until: str | None) -> dict:
    """How the lists moved since the table before this one (`recommend.churn`): the share of users whose top 5
    changed, the share that changed with no new session of theirs since that table was made (the model's
    doing), and users by how many services changed. What that table knew is the sessions up to its
    `data_until` (the latest session start it read), else, for a table made before it was recorded, those
    that began before it was made (which counts back-filled days as known: model churn then reads high)."""
    if not previous_path.exists():
        return {"churn": "first table: nothing to compare with"}
    previous = storage.read_table(previous_path)
    known = (pl.col("start") <= datetime.fromisoformat(previous_until)) if previous_until else (
        pl.col("start") < previous["generated_at"].min())
    before = session_splits.filter(known)
    figures, by_count = recommendation_churn(previous, recommendations, history_fingerprint(before),
                                             history_fingerprint(session_splits))
    return {"churn/share": round(figures["churn"] or 0.0, 4),
            "churn/model_share": round(figures["model_churn"] or 0.0, 4),
            "churn/users_compared": figures["n_users_compared"], "churn/by_services_changed": table(by_count)}


SAMPLE_DESCRIPTIONS = {"service (page)": "the service recommended and, in brackets, its landing page",
                       "score": "the ranker's score", "persona": "the user's persona tag"}


def _sample(recommendations: pl.DataFrame) -> pl.DataFrame:
    """The first three users' rows, narrow enough for the UI: the landing page beside its service (the table
    file holds it as `service;page`)."""
    page = pl.col("page").str.split(";").list.last()
    return recommendations.head(15).select(
        "user_id", "rank", (pl.col("service") + " (" + page + ")").alias("service (page)"), "score", "persona")


@dg.asset(group_name="evaluation", kinds={"pytorch", "mlflow", "json"}, pool="gpu")
def hit_at_k_evaluation(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                        compute: ComputeResource, mlflow_tracking: MlflowResource,
                        finetuned_model: Path, session_splits: pl.DataFrame, billing_records: pl.DataFrame,
                        session_embeddings: pl.DataFrame, cluster_sweep: dict,
                        recommendation_table: pl.DataFrame) -> dict:
    """Hit@3, Hit@5, NDCG@5, MRR for D = 6, 10, 12 (paper Table 6); coverage, debiased Hit@5 in the JSON.

    Each user's first D active days seen, the rest unseen; every method recommends from the seen
    days only, scored on the services first used in the unseen days, over adopters (test-split
    users only). Methods: SessionBERT's count, persona, name and description rankers, popularity,
    Markov, item-kNN, EASE, random and, on the synthetic world, the oracle. Also the persona fit.
    """
    headline_first(context, *(f"D{d}" for d in SEEN_DAYS))
    world, precision = world_paths(sessionbert.landing()), compute.report_precision(context)
    recommenders = _recommenders(sessionbert, precision, sessionbert.landing(), finetuned_model, session_splits,
                                 session_embeddings, cluster_sweep, world.root if world else None)
    test_users = session_splits.filter(pl.col("split") == "test")["user_id"].unique()
    evaluation = hit_at_k(session_splits, billing_records, recommenders, SEEN_DAYS,
                          sessionbert.recommendation_sessions, scored_users=test_users)
    evaluation["scored_users"] = "test split: users none of whose sessions was trained on"
    served = recommendation_table["ranker"][0] if recommendation_table.height else DEFAULT_RANKER
    evaluation["served_ranker"] = METHOD_OF_RANKER[served]
    definitions = persona_definitions(sessionbert.landing())
    if definitions is not None:
        evaluation["persona_fit"] = _persona_fit(recommendation_table, definitions, world)
    rows = [{"seen_days": int(d), "method": m, "n_users": e["n_users"], **{k: round(v, 4) for k, v in f.items()}}
            for d, e in evaluation["seen_days"].items() for m, f in e.items() if isinstance(f, dict)]
    frame = pl.DataFrame(rows) if rows else pl.DataFrame({"seen_days": [], "method": []})
    metadata = {"headline": headline(headlines.hit_at_k(evaluation)), "served_ranker": evaluation["served_ranker"],
                **_tables_per_d(frame, evaluation["served_ranker"])} | _hit_at_k_figures(evaluation)
    with mlflow_tracking.run(context, sessionbert.home_path):
        mlflow.log_params(precision.metadata() | {"served_ranker": evaluation["served_ranker"]})
        mlflow.log_metrics({f"D{r['seen_days']}_{r['method']}_{k.replace('@', '_at_')}": r[k]
                            for r in rows for k in HIT_AT_K_COLUMNS})
        metadata |= _log_hit_at_k_plot(frame, evaluation["served_ranker"])
    context.add_output_metadata(metadata)
    return evaluation


def _recommenders(sessionbert: SessionBertResource, precision, landing_folder: dict, finetuned_model: Path,
                  sessions: pl.DataFrame, embeddings: pl.DataFrame, sweep: dict, world_root: Path | None):
    """What the ranker backtest and Hit@k compare, the persona ranker clustering in the served space."""
    return load_recommenders(finetuned_model, sessions,
                             served_vectors(sessionbert.home_path / PERSONA_SPACE, embeddings, sessions),
                             sweep["k"], user_vector_sessions(sweep), service_descriptions(landing_folder), world_root,
                             precision.device, precision.bf16, sessionbert.seed)


def _rank(ranker: str, precision, finetuned_model: Path, landing_folder: dict, sessions: pl.DataFrame,
          billing: pl.DataFrame, user_personas: pl.DataFrame, recent: int) -> pl.DataFrame:
    """The table's rows by `ranker`, with what it reads: the model, service vectors, a Markov chain."""
    model = load_next_activity_model(finetuned_model, precision.device, precision.bf16)
    predictor = sessionbert_predictor(model, AutoTokenizer.from_pretrained(finetuned_model), bf16=precision.bf16)
    services = list(model.config.service_labels)
    vectors = service_vectors_from_encoder(services, service_descriptions(landing_folder), precision.device,
                                           precision.bf16) if ranker in ("names", "descriptions") else None
    markov = MarkovServices.fit(sessions.filter(pl.col("split") == "train")) if ranker == "markov" else None
    population = used_services(sessions, billing) if ranker in ("item_knn", "ease") else None  # what they fit on
    return recommend_services(predictor, sessions, billing, ranker, recent, user_personas.select("user_id", "cluster"),
                              vectors, markov=markov, services=services, population=population)


def _persona_fit(recommendations: pl.DataFrame, definitions, world) -> dict:
    """The share of recommended services that fit the assigned persona, and on the world the true one."""
    recommended = recommendations.select("user_id", "service")
    fit = {"assigned": persona_fit(recommended, recommendations, definitions.services_of_persona)}
    if world is not None:
        fit["true"] = persona_fit(recommended, load_truth(world.root, "users"), definitions.services_of_persona)
    return fit


HIT_AT_K_COLUMNS = ("hit@3", "hit@5", "ndcg@5", "mrr", "coverage", "hit@5_beyond_popularity")
HIT_AT_K_DESCRIPTIONS = {"method": "◀ marks the ranker that serves (chosen on the backtest)"}


def _tables_per_d(frame: pl.DataFrame, served: str) -> dict:
    """One table per number of seen days (`D10`: method, Hit@5, Hit@3, NDCG@5, MRR), best Hit@5 first, the served
    method marked ◀: each fits a screen. A D without scored users says so."""
    tables = {f"D{d}": dg.MetadataValue.text("no scored user adopts a service after these days") for d in SEEN_DAYS}
    for (d,), rows in frame.partition_by("seen_days", as_dict=True, maintain_order=True).items() if frame.height \
            else ():
        shown = rows.sort("hit@5", descending=True).with_columns(
            pl.when(pl.col("method") == served).then(pl.col("method") + SERVES).otherwise("method").alias("method"))
        tables[f"D{d}"] = table(shown.select("method", "hit@5", "hit@3", "ndcg@5", "mrr"),
                                descriptions=HIT_AT_K_DESCRIPTIONS)  # coverage, debiased Hit@5: JSON and MLflow
    return tables


def _hit_at_k_figures(evaluation: dict) -> dict:
    """Hit@5 of what serves at each D and the persona fit: one number each, to plot over runs."""
    figures, served = {}, evaluation.get("served_ranker")
    for d, entry in evaluation["seen_days"].items():
        if isinstance(entry.get(served), dict):
            figures[f"D{d}/served/hit@5"] = round(entry[served]["hit@5"], 4)
    for kind, fit in evaluation.get("persona_fit", {}).items():
        if fit:
            figures[f"persona_fit/{kind}"] = round(fit["share"], 4)
    return figures


def _log_hit_at_k_plot(frame: pl.DataFrame, served: str) -> dict:
    """Hit@5 of every method at every D (one bar per D), logged to the active MLflow run; the metadata entry
    (a chart in place; none without rows)."""
    if not frame.height:
        return {}
    wide = frame.with_columns(pl.format("D = {}", "seen_days").alias("D")).pivot(
        "D", index="method", values="hit@5").sort("method")
    fig = plots.grouped_bars(wide, "method", [c for c in wide.columns if c != "method"],
                             "Hit@5 by method and seen days D", ylabel="Hit@5")
    mlflow.log_figure(fig, "hit_at_k.png")
    plots.close(fig)
    return {"hit_at_k_plot": _hit_at_k_chart(frame, served)}


def _hit_at_k_chart(frame: pl.DataFrame, served: str) -> dg.MetadataValue:
    """Hit@5 against D in place: what serves first, then the methods with the best mean Hit@5 (as many as
    fit; every method is in the MLflow run's hit_at_k.png)."""
    best = frame.group_by("method").agg(pl.col("hit@5").mean()).sort("hit@5", "method", descending=[True, False])
    order = [served] * (served in best["method"]) + [m for m in best["method"] if m != served]
    return line_chart({m: frame.filter(pl.col("method") == m).sort("seen_days").select("seen_days", "hit@5").rows()
                       for m in order}, "seen days D", "Hit@5")
