"""Serving: the champion model as an MLflow pyfunc that takes users' recent page views and returns, per
user, a persona and the top-5 services they have not used yet.

    mlflow models serve -m $SESSIONBERT_HOME/serving_model --env-manager local -p 5001
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \\
      -d '{"dataframe_records": [{"user_id": "u1", "session_id": "s1", "timestamp": "2026-11-30T10:00:00Z",
                                  "service": "logs", "page": "log_groups"}]}'

A request is page views in the landing folder's event schema (user_id, session_id, timestamp,
service, page; country, city, billing_tier optional). They are serialized as the pipeline does;
the last 8 sessions of each user feed the count ranker. A user the pipeline knows keeps their
assigned persona, and nothing they used before (in any session or bill) is recommended; a user
it never saw gets the persona of the nearest cluster centroid of their posted sessions. A request
the model cannot read is refused with a 400 and a message naming what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

REQUIRED = ("user_id", "session_id", "timestamp", "service", "page")
OPTIONAL = ("country", "city", "billing_tier")
MAX_ROWS = 200_000  # page views per request
# what the served model imports; pinned to the installed versions, since MLflow would otherwise load the
# model in a subprocess to infer them on every save
SERVED_PACKAGES = ("mlflow", "cloudpickle", "numpy", "pandas", "polars", "pyarrow", "scikit-learn", "scipy", "torch",
                   "transformers", "tokenizers", "safetensors", "sessionbert")


class RequestError(ValueError):
    """A request the model cannot read; served as HTTP 400 with this message."""


def events_from_request(rows: pl.DataFrame) -> pl.DataFrame:
    """The request's page views as the ingestion's event frame, or a RequestError naming the problem."""
    from sessionbert_core.ingest import EVENT_SCHEMA, parse_timestamp

    if rows.height == 0:
        raise RequestError("the request has no page views: send rows with " + ", ".join(REQUIRED))
    if rows.height > MAX_ROWS:
        raise RequestError(f"{rows.height} page views in one request; at most {MAX_ROWS}")
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise RequestError(f"missing column(s) {', '.join(missing)}: each row is a page view with "
                           f"{', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")
    text = rows.select([pl.col(c).cast(pl.String) if c in rows.columns else pl.lit(None, pl.String).alias(c)
                        for c in (*REQUIRED, *OPTIONAL)])
    events = text.with_columns(timestamp=parse_timestamp(pl.col("timestamp")))
    for column in REQUIRED:
        bad = events.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).cast(pl.String) == ""))
        if bad.height:
            what = "is not a timestamp (ISO-8601 or epoch seconds)" if column == "timestamp" else "is empty"
            rows_named = ", ".join(str(r) for r in bad["row"].head(5).to_list())
            raise RequestError(f"`{column}` {what} in {bad.height} row(s) (rows {rows_named})")
    return events.cast(EVENT_SCHEMA).sort("user_id", "timestamp")


class SessionBertRecommender(mlflow.pyfunc.PythonModel):
    """Persona and top-5 new services per user, from their page views (see the module docstring)."""

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer

        from sessionbert_core.embed import load_encoder
        from sessionbert_core.model import load_next_activity_model
        from sessionbert_core.precision import resolve_precision
        from sessionbert_core.recommend import sessionbert_predictor

        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        self.settings = json.loads(artifacts["settings"].read_text())
        # resolved here, on the serving machine's hardware, from the precision the pipeline asked for
        self.precision = resolve_precision("cpu", self.settings.get("precision_requested", "auto"))
        model = load_next_activity_model(artifacts["finetuned_model"], bf16=self.precision.bf16)
        self.predictor = sessionbert_predictor(model, AutoTokenizer.from_pretrained(artifacts["finetuned_model"]),
                                               self.settings["max_length"], bf16=self.precision.bf16)
        self.encoder, self.encoder_tokenizer = load_encoder(artifacts["pretrained_model"], bf16=self.precision.bf16)
        centroids = pl.read_parquet(artifacts["centroids"]).sort("cluster")
        self.centroids = np.stack(centroids["centroid"].to_numpy())
        self.tags = pl.read_parquet(artifacts["personas"]).select("cluster", "persona")
        self.known = pl.read_parquet(artifacts["known_users"])  # user_id, cluster, persona, used (list)
        # once per server, not per request: every (user, service) a known user ever used
        self.history = self.known.select("user_id", service=pl.col("used")).explode("service").drop_nulls()

    def predict(self, context, model_input, params=None):
        try:
            return self._predict(model_input).to_pandas()
        except RequestError as error:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error

    def _predict(self, model_input) -> pl.DataFrame:
        from sessionbert_core.embed import embed_sessions
        from sessionbert_core.personas import nearest_clusters
        from sessionbert_core.recommend import RECENT_SESSIONS, recommend_services
        from sessionbert_core.serialize import serialize_sessions

        rows = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        events = events_from_request(rows)
        sessions = serialize_sessions(events, pl.DataFrame(schema={"user_id": pl.String, "date": pl.Date,
                                                                   "service": pl.String, "cost": pl.Float64}))
        history = self.history.filter(pl.col("user_id").is_in(sessions["user_id"].unique().implode()))
        ranked = recommend_services(self.predictor, sessions, None, recent=RECENT_SESSIONS, also_used=history)
        embeddings = embed_sessions(self.encoder, self.encoder_tokenizer, sessions, self.settings["pooling"],
                                    max_length=self.settings["max_length"], bf16=self.precision.bf16)
        inferred = (nearest_clusters(embeddings, self.centroids, self.settings["recent_sessions"])
                    .join(self.tags, on="cluster", how="left").with_columns(pl.col("persona").fill_null("")))
        users = sessions.select("user_id").unique(maintain_order=True)
        personas = (
            users.join(self.known.select("user_id", known_cluster="cluster", known_persona="persona"),
                       on="user_id", how="left", maintain_order="left")
            .join(inferred, on="user_id", how="left", maintain_order="left")
            .select("user_id",
                    persona=pl.coalesce("known_persona", "persona").fill_null(""),
                    cluster=pl.coalesce("known_cluster", "cluster"),
                    persona_source=pl.when(pl.col("known_persona").is_not_null()).then(pl.lit("assigned"))
                    .otherwise(pl.lit("inferred from these sessions")))
        )
        top = ranked.sort("user_id", "rank").group_by("user_id", maintain_order=True).agg(
            services=pl.col("service"), scores=pl.col("score"), pages=pl.col("page"))
        return (personas.join(top, on="user_id", how="left", maintain_order="left")
                .with_columns(pl.col("services").fill_null([]), pl.col("scores").fill_null([]),
                              pl.col("pages").fill_null([]),
                              sessions=users.join(sessions.group_by("user_id").len(), on="user_id",
                                                  how="left", maintain_order="left")["len"]))


def served_requirements() -> list[str]:
    """`name==version` of every package the served model imports, as installed here."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in SERVED_PACKAGES]


def known_users(user_personas: pl.DataFrame, used: pl.DataFrame) -> pl.DataFrame:
    """`user_id, cluster, persona, used`: what the served model remembers of each user the pipeline saw."""
    return user_personas.select("user_id", "cluster", "persona").join(
        used.group_by("user_id").agg(used=pl.col("service")), on="user_id", how="left", maintain_order="left")


def save_serving_model(target: Path, finetuned_model: Path, pretrained_model: Path, centroids: Path,
                       personas: Path, known: pl.DataFrame, settings: dict) -> Path:
    """Write the pyfunc to `target` (an MLflow model folder, servable by `mlflow models serve`).

    No MLflow signature: the model checks requests itself, so a bad one gets a message in the
    contract's terms (and optional columns stay optional)."""
    import shutil

    from sessionbert_core import storage

    staging = storage.staging_folder(target)
    try:
        storage.write_parquet(known, staging / "known_users.parquet")
        storage.write_json(settings, staging / "settings.json")
        model_folder = staging / "model"
        mlflow.pyfunc.save_model(
            model_folder, python_model=SessionBertRecommender(), pip_requirements=served_requirements(),
            artifacts={"finetuned_model": str(finetuned_model), "pretrained_model": str(pretrained_model),
                       "centroids": str(centroids), "personas": str(personas),
                       "known_users": str(staging / "known_users.parquet"),
                       "settings": str(staging / "settings.json")})
        return storage.replace_folder(model_folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
