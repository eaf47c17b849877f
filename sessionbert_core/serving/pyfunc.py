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
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

REQUIRED = ("user_id", "session_id", "timestamp", "service", "page")
OPTIONAL = ("country", "city", "billing_tier")
MAX_PAGE_VIEWS = 5_000  # per request, by default: about a second of work on 2 cores (README: Serving)
# what the served model imports; pinned to the installed versions, since MLflow would otherwise load the
# model in a subprocess to infer them on every save
SERVED_PACKAGES = ("mlflow", "cloudpickle", "numpy", "pandas", "polars", "pyarrow", "scikit-learn", "scipy", "torch",
                   "transformers", "tokenizers", "safetensors", "sessionbert")
PAYLOAD_KEYS = ("dataframe_records", "dataframe_split")


class RequestError(ValueError):
    """A request the model cannot read; served as HTTP 400 (413 when `too_large`) with this message."""

    def __init__(self, message: str, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


def rows_from_payload(payload, max_rows: int = MAX_PAGE_VIEWS) -> pl.DataFrame:
    """MLflow's JSON request (`dataframe_records` or `dataframe_split`) as a frame of text columns, or a
    RequestError naming the first thing that is not a page view: every value text, a whole number, or
    null (a fraction only for an epoch timestamp); nothing nested."""
    if not isinstance(payload, dict) or len(payload.keys() & set(PAYLOAD_KEYS)) != 1:
        raise RequestError("the body is a JSON object with one key, dataframe_records (a list of page views) "
                           "or dataframe_split ({columns, data})")
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list):
            raise RequestError("dataframe_records is a list of page views (JSON objects)")
        _check_count(len(records), max_rows)
        if not all(isinstance(r, dict) for r in records):
            raise RequestError(f"row {next(i for i, r in enumerate(records) if not isinstance(r, dict))} of "
                               "dataframe_records is not a JSON object")
        columns = [c for c in (*REQUIRED, *OPTIONAL) if any(c in r for r in records)]
        values = {c: [r.get(c) for r in records] for c in columns}
    else:
        split = payload["dataframe_split"]
        if not (isinstance(split, dict) and isinstance(split.get("columns"), list)
                and isinstance(split.get("data"), list) and all(isinstance(c, str) for c in split["columns"])):
            raise RequestError("dataframe_split is {\"columns\": [names], \"data\": [[values], ...]}")
        _check_count(len(split["data"]), max_rows)
        width = len(split["columns"])
        if not all(isinstance(r, list) and len(r) == width for r in split["data"]):
            raise RequestError(f"every row of dataframe_split.data is a list of {width} values, one per column")
        index = {c: i for i, c in enumerate(split["columns"])}
        columns = [c for c in (*REQUIRED, *OPTIONAL) if c in index]
        values = {c: [r[index[c]] for r in split["data"]] for c in columns}
    return pl.DataFrame({c: [_text(v, c, row) for row, v in enumerate(values[c])] for c in columns},
                        schema=dict.fromkeys(columns, pl.String))


def _check_count(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise RequestError(f"{rows} page views in one request; at most {max_rows} (send the last sessions of "
                           "each user, or split the users over several requests)", too_large=True)


def _text(value, column: str, row: int) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and column == "timestamp":
        return repr(value)
    kind = {bool: "true/false", list: "a list", dict: "an object", float: "a fraction"}.get(type(value), "not text")
    raise RequestError(f"row {row}: `{column}` is {kind}; values are text (a timestamp may be epoch seconds)")


def events_from_request(rows: pl.DataFrame) -> pl.DataFrame:
    """The request's page views as the ingestion's event frame, checked by the landing folder's rules
    (an id empty, too long or with a control character; a timestamp that is not one), or a RequestError
    naming the column and rows."""
    from sessionbert_core.data.validate import validate_events

    if rows.height == 0:
        raise RequestError("the request has no page views: send rows with " + ", ".join(REQUIRED))
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise RequestError(f"missing column(s) {', '.join(missing)}: each row is a page view with "
                           f"{', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")
    events, problems = validate_events(rows.select(pl.col(c).cast(pl.String) for c in rows.columns
                                                   if c in (*REQUIRED, *OPTIONAL)))
    if problems.height:
        first = problems.row(0, named=True)
        same = problems.filter(pl.col("reason") == first["reason"])
        detail = f" ({first['detail']})" if first["detail"] else ""
        raise RequestError(f"{first['reason']}{detail} in {same.height} row(s) (rows "
                           f"{', '.join(str(r) for r in same['row'].head(5).to_list())})"
                           + (f"; {problems.height - same.height} more row(s) break another rule"
                              if problems.height > same.height else ""))
    return events.sort("user_id", "timestamp")


class SessionBertRecommender(mlflow.pyfunc.PythonModel):
    """Persona and top-5 new services per user, from their page views (see the module docstring)."""

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer

        from sessionbert_core.model.networks import load_next_activity_model
        from sessionbert_core.model.precision import resolve_precision
        from sessionbert_core.personas.embed import load_encoder
        from sessionbert_core.recommend.ranking import sessionbert_predictor

        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        self.settings = json.loads(artifacts["settings"].read_text())
        # resolved here, on the serving machine's hardware, from the precision the pipeline asked for
        self.precision = resolve_precision("cpu", self.settings.get("precision_requested", "auto"))
        model = load_next_activity_model(artifacts["finetuned_model"], bf16=self.precision.bf16)
        self.predictor = sessionbert_predictor(model, AutoTokenizer.from_pretrained(artifacts["finetuned_model"]),
                                               self.settings.get("max_length"), bf16=self.precision.bf16)
        self.encoder, self.encoder_tokenizer = load_encoder(artifacts["pretrained_model"], bf16=self.precision.bf16)
        from sessionbert_core.personas.representation import PersonaSpace

        # the space the centroids live in; a model saved before the choice existed used SessionBERT's
        self.space = PersonaSpace.load(artifacts["persona_space"]) if "persona_space" in artifacts \
            else PersonaSpace("sessionbert")
        centroids = pl.read_parquet(artifacts["centroids"]).sort("cluster")
        self.centroids = np.stack(centroids["centroid"].to_numpy())
        self.tags = pl.read_parquet(artifacts["personas"]).select("cluster", "persona")
        self.known = pl.read_parquet(artifacts["known_users"])  # user_id, cluster, persona, used (list)
        # once per server, not per request: every (user, service) a known user ever used
        self.history = self.known.select("user_id", service=pl.col("used")).explode("service").drop_nulls()
        self.ranking = RankingInputs.load(artifacts, list(model.config.service_labels))

    def predict(self, context, model_input, params=None):
        try:
            rows = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
            return self.answer(events_from_request(rows)).to_pandas()
        except RequestError as error:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error

    def answer(self, events: pl.DataFrame, deadline: float | None = None) -> pl.DataFrame:
        """Persona and top-5 new services per user of `events` (checked page views); past `deadline`
        (time.monotonic()) it stops between stages with a TimeoutError."""
        from sessionbert_core.data.serialize import serialize_sessions
        from sessionbert_core.personas.embed import embed_sessions, user_vector_sessions
        from sessionbert_core.personas.mapping import nearest_clusters
        from sessionbert_core.recommend.ranking import RECENT_SESSIONS, recommend_services

        def in_time(stage: str) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the request ran past its time limit before {stage}")

        sessions = serialize_sessions(events, pl.DataFrame(schema={"user_id": pl.String, "date": pl.Date,
                                                                   "service": pl.String, "cost": pl.Float64}))
        history = self.history.filter(pl.col("user_id").is_in(sessions["user_id"].unique().implode()))
        # a known user keeps their assigned persona: only the sessions of users never seen are embedded
        unseen = sessions.filter(~pl.col("user_id").is_in(self.known["user_id"].implode()))
        inferred = pl.DataFrame(schema={"user_id": pl.String, "cluster": pl.Int64, "persona": pl.String})
        if unseen.height:
            in_time("embedding sessions")
            embeddings = embed_sessions(self.encoder, self.encoder_tokenizer, unseen, self.settings["pooling"],
                                        max_length=self.settings.get("max_length"), bf16=self.precision.bf16)
            inferred = (nearest_clusters(self.space.session_vectors(embeddings, unseen), self.centroids,
                                         user_vector_sessions(self.settings))
                        .join(self.tags, on="cluster", how="left").with_columns(pl.col("persona").fill_null(""))
                        .select(inferred.columns))
        in_time("ranking services")
        ranker = self.settings.get("ranker", "count")  # the recommendation table's, chosen on validation
        clusters = (pl.concat([self.known.select("user_id", "cluster"), inferred.select("user_id", "cluster")])
                    if ranker == "persona" else None)
        ranked = recommend_services(self.predictor, sessions, None, ranker,
                                    self.settings.get("recommendation_sessions", RECENT_SESSIONS), clusters,
                                    self.ranking.vectors, also_used=history, markov=self.ranking.markov,
                                    services=self.ranking.services, adoptions=self.ranking.adoptions)
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


@dataclass(frozen=True)
class RankingInputs:
    """What the served ranker reads besides the model, saved as tables beside it: every known user's
    adoptions (persona and popularity rankers), the Markov chain of the train split (markov), the
    general-language service vectors (names, descriptions)."""

    services: list[str]
    adoptions: pl.DataFrame  # user_id, service
    markov: object | None = None  # recommend.MarkovServices
    vectors: dict | None = None  # {ranker: {service: unit vector}}

    @staticmethod
    def tables(ranker: str, sessions: pl.DataFrame, vectors: dict | None = None) -> dict[str, pl.DataFrame]:
        """The tables `ranker` needs, from `session_splits` (and the table's service vectors)."""
        from sessionbert_core.recommend.ranking import MarkovServices, observed_adoptions

        tables = {"adoptions": observed_adoptions(sessions)} if ranker in ("persona", "popularity") else {}
        if ranker == "markov":
            chain = MarkovServices.fit(sessions.filter(pl.col("split") == "train"))
            fallback = pl.DataFrame({"previous": [None], "services": [chain.fallback[0]],
                                     "service_probabilities": [chain.fallback[1]]}, schema=chain.table.schema)
            tables["markov"] = pl.concat([chain.table, fallback])  # the fallback: the row without a previous
        if vectors and ranker in vectors:
            tables["vectors"] = pl.DataFrame({"kind": ranker, "service": list(vectors[ranker]),
                                              "vector": [v.tolist() for v in vectors[ranker].values()]})
        return tables

    @classmethod
    def load(cls, artifacts: dict[str, Path], services: list[str]) -> RankingInputs:
        from sessionbert_core.recommend.ranking import MarkovServices

        read = {name: pl.read_parquet(artifacts[f"ranking_{name}"]) for name in ("adoptions", "markov", "vectors")
                if f"ranking_{name}" in artifacts}
        adoptions = read.get("adoptions", pl.DataFrame(schema={"user_id": pl.String, "service": pl.String}))
        markov = None
        if "markov" in read:
            fallback = read["markov"].filter(pl.col("previous").is_null()).row(0, named=True)
            markov = MarkovServices(table=read["markov"].drop_nulls("previous"),
                                    fallback=(fallback["services"], fallback["service_probabilities"]))
        vectors = None
        if "vectors" in read:
            table = read["vectors"]
            vectors = {table["kind"][0]: {s: np.asarray(v, dtype=np.float32)
                                          for s, v in zip(table["service"], table["vector"].to_list(), strict=True)}}
        return cls(services=services, adoptions=adoptions, markov=markov, vectors=vectors)


def served_requirements() -> list[str]:
    """`name==version` of every package the served model imports, as installed here."""
    from importlib import metadata

    return [f"{name}=={metadata.version(name)}" for name in SERVED_PACKAGES]


def known_users(user_personas: pl.DataFrame, used: pl.DataFrame) -> pl.DataFrame:
    """`user_id, cluster, persona, used`: what the served model remembers of each user the pipeline saw."""
    return user_personas.select("user_id", "cluster", "persona").join(
        used.group_by("user_id").agg(used=pl.col("service")), on="user_id", how="left", maintain_order="left")


def save_serving_model(target: Path, finetuned_model: Path, pretrained_model: Path, centroids: Path,
                       personas: Path, known: pl.DataFrame, settings: dict,
                       ranking: dict[str, pl.DataFrame] | None = None, persona_space: Path | None = None) -> Path:
    """Write the pyfunc to `target` (an MLflow model folder, servable by `sessionbert serve` and
    `mlflow models serve`); `ranking` is `RankingInputs.tables` for the ranker in `settings`;
    `persona_space` the folder of the space the centroids live in (`representation.PersonaSpace`).

    No MLflow signature: the model checks requests itself, so a bad one gets a message in the
    contract's terms (and optional columns stay optional)."""
    import shutil

    from sessionbert_core import storage

    staging = storage.staging_folder(target)
    try:
        storage.write_parquet(known, staging / "known_users.parquet")
        storage.write_json(settings, staging / "settings.json")
        tables = {}
        for name, frame in (ranking or {}).items():
            tables[f"ranking_{name}"] = str(storage.write_parquet(frame, staging / f"ranking_{name}.parquet"))
        model_folder = staging / "model"
        mlflow.pyfunc.save_model(
            model_folder, python_model=SessionBertRecommender(), pip_requirements=served_requirements(),
            artifacts={"finetuned_model": str(finetuned_model), "pretrained_model": str(pretrained_model),
                       "centroids": str(centroids), "personas": str(personas),
                       "known_users": str(staging / "known_users.parquet"),
                       "settings": str(staging / "settings.json")} | tables
            | ({"persona_space": str(persona_space)} if persona_space else {}))
        return storage.replace_folder(model_folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
