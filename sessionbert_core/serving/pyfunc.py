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

The models read only what the answer uses: each user's last sessions (and, for their context, the
earlier page views of the same days), so what a request costs is counted before any model runs
(`Work`), and the server caps it (`http.Limits`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl

from sessionbert_core.serving.request import RequestError, events_from_request

# sessions per forward pass between two looks at the request's deadline: at most 32 x 128 tokens, a
# fraction of a second on one core, so a request stops soon after its time is up
PASS_SESSIONS = 32
# what the served model imports; pinned to the installed versions, since MLflow would otherwise load the
# model in a subprocess to infer them on every save
SERVED_PACKAGES = ("mlflow", "cloudpickle", "numpy", "pandas", "polars", "pyarrow", "scikit-learn", "scipy", "torch",
                   "transformers", "tokenizers", "safetensors", "sessionbert")


@dataclass(frozen=True)
class Work:
    """What answering a request asks of the models, counted before they run (`http.Limits` caps each)."""

    new_users: int  # users the pipeline never saw: their sessions are embedded for a persona
    sessions: int  # sessions the models read: each user's last `recommendation_sessions`, a new user's last
    # `user_vector_sessions` when that is more
    tokens: int  # of the texts the models read (embedding and next-activity passes), each cut at its model's length


@dataclass(frozen=True)
class Plan:
    """A checked request made ready for the models: the sessions they read, serialized, and the Work counted."""

    sessions: pl.DataFrame  # SESSION_SCHEMA, the sessions the models read
    unseen: pl.DataFrame  # of them, those embedded: each new user's last `user_vector_sessions`
    used: pl.DataFrame | None  # user_id, service: in any posted page view, or in the user's history (None on
    # the few-rows path, whose ranker reads each user's history itself)
    posted: pl.DataFrame  # user_id, sessions (how many each user posted), new (never seen): by user_id
    work: Work
    few: list | None = None  # the few-rows path's sessions (`quick.Session`), when it answers


class SessionBertRecommender(mlflow.pyfunc.PythonModel):
    """Persona and top-5 new services per user, from their page views (see the module docstring)."""

    def load_context(self, context) -> None:
        from transformers import AutoTokenizer

        from sessionbert_core.model.batching import length_limit
        from sessionbert_core.model.networks import load_next_activity_model
        from sessionbert_core.model.precision import resolve_precision
        from sessionbert_core.personas.embed import load_encoder
        from sessionbert_core.recommend.ranking import RECENT_SESSIONS, sessionbert_predictor

        artifacts = {name: Path(path) for name, path in context.artifacts.items()}
        self.settings = json.loads(artifacts["settings"].read_text())
        # resolved here, on the serving machine's hardware, from the precision the pipeline asked for
        self.precision = resolve_precision("cpu", self.settings.get("precision_requested", "auto"))
        model = load_next_activity_model(artifacts["finetuned_model"], bf16=self.precision.bf16)
        self.next_activity = model, AutoTokenizer.from_pretrained(artifacts["finetuned_model"])
        self.predictor = sessionbert_predictor(*self.next_activity, self.settings.get("max_length"),
                                               bf16=self.precision.bf16)
        self.encoder, self.encoder_tokenizer = load_encoder(artifacts["pretrained_model"], bf16=self.precision.bf16)
        # tokenizers of their own to count a request's tokens while another request predicts: a call sets
        # its tokenizer's truncation, which must not change under a running forward pass
        self.counters = {"embed": (AutoTokenizer.from_pretrained(artifacts["pretrained_model"]),
                                   length_limit(self.encoder, self.settings.get("max_length"))),
                         "predict": (AutoTokenizer.from_pretrained(artifacts["finetuned_model"]),
                                     length_limit(model, self.settings.get("max_length")))}
        self.recent = self.settings.get("recommendation_sessions", RECENT_SESSIONS)
        from sessionbert_core.personas.representation import PersonaSpace

        # the space the centroids live in; a model saved before the choice existed used SessionBERT's
        self.space = PersonaSpace.load(artifacts["persona_space"]) if "persona_space" in artifacts \
            else PersonaSpace("sessionbert")
        centroids = pl.read_parquet(artifacts["centroids"]).sort("cluster")
        self.centroids = np.stack(centroids["centroid"].to_numpy())
        self.tags = pl.read_parquet(artifacts["personas"]).select("cluster", "persona")
        self.known = pl.read_parquet(artifacts["known_users"])  # user_id, cluster, persona, used (list)
        self.assigned = self.known.select("user_id", known_cluster="cluster", known_persona="persona")
        # once per server, not per request: every (user, service) a known user ever used
        self.history = self.known.select("user_id", service=pl.col("used")).explode("service").drop_nulls()
        self.ranking = RankingInputs.load(artifacts, list(model.config.service_labels))
        # EASE and item-kNN fitted once, on what every known user used, not per request
        self.population = self.history
        if self.settings.get("ranker") in ("item_knn", "ease"):
            from sessionbert_core.recommend.ranking import fit_collaborative

            self.population = fit_collaborative(self.settings["ranker"], self.history, self.ranking.services)
        from sessionbert_core.serving.quick_ranking import QuickRanker

        # the few-rows path's ranker (None for the names and descriptions rankers, which rank as frames)
        self.quick = QuickRanker.build(self.settings.get("ranker", "count"), self.known, self.ranking.services,
                                       self.ranking.adoptions, self.ranking.markov, self.population)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        # typed as a DataFrame, which MLflow takes as the input's type without a schema to check against: the
        # request is checked here instead (`events_from_request`), so optional columns stay optional
        try:
            rows = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
            return self.answer(self.plan_rows(rows)).to_pandas()
        except RequestError as error:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error

    def plan_rows(self, rows: pl.DataFrame, caps: Work | None = None) -> Plan:
        """`plan` of a request's rows as sent (text columns, `request.rows_from_payload`): on the few-rows
        path (`serving.quick`) where it can, else checked by the landing folder's rules (`events_from_request`)
        and planned as frames."""
        from sessionbert_core.serving import quick

        few = quick.read_sessions(rows, self.recent) if self.quick else None
        if few is None:
            return self.plan(events_from_request(rows), caps)
        from sessionbert_core.data.serialize import recent_sessions
        from sessionbert_core.personas.embed import user_vector_sessions

        counts = Counter(s.user_id for s in few)
        users = sorted(counts)
        new_users = [u for u in users if u not in self.quick.rows]
        _require_within(caps, new_users=len(new_users), sessions=len(few))
        sessions = quick.sessions_frame(few)
        unseen = sessions.filter(pl.col("user_id").is_in(new_users)) if new_users else sessions.clear()
        window = user_vector_sessions(self.settings)
        unseen = recent_sessions(unseen, window) if new_users and window < self.recent else unseen
        tokens = (self._tokens("embed", unseen["text"])
                  + self._tokens("predict", pl.Series([quick.input_text(s) for s in few], dtype=pl.String)))
        _require_within(caps, tokens=tokens)
        posted = pl.DataFrame({"user_id": users, "sessions": [counts[u] for u in users],
                               "new": [u in new_users for u in users]}, schema_overrides={"sessions": pl.UInt32})
        return Plan(sessions, unseen, None, posted, Work(len(new_users), len(few), tokens), few)

    def plan(self, events: pl.DataFrame, caps: Work | None = None) -> Plan:
        """`events` (checked page views) as the sessions the models read, and the Work that takes; no model
        runs. Sessions older than a user's last ones only lend their services (never recommended) and, on
        the same day, their page views to the context of the sessions read. Work over `caps` is refused
        (a RequestError, too large) as soon as it is counted: users and sessions before serializing."""
        from sessionbert_core.activity import service_of_expr
        from sessionbert_core.data.serialize import activity, recent_sessions, serialize_sessions
        from sessionbert_core.model.inputs import recommendation_inputs
        from sessionbert_core.personas.embed import user_vector_sessions

        window = user_vector_sessions(self.settings)
        most = max(self.recent, window)  # sessions read of a new user (of a known one: self.recent)
        users = (events.group_by("user_id").agg(sessions=pl.col("session_id").n_unique()).sort("user_id")
                 .with_columns(new=~pl.col("user_id").is_in(self.known["user_id"].implode())))
        new_users = users.filter("new")["user_id"] if users["new"].any() else users["user_id"].clear()
        trimmed = users["sessions"].max() > self.recent  # a user posted more sessions than the models may read
        read = _last_sessions(events, new_users, self.recent, most) if trimmed else None  # None: every one
        _require_within(caps, new_users=new_users.len(),
                        sessions=users["sessions"].sum() if read is None else read.height)
        sessions = serialize_sessions(events if read is None else _read_events(events, read))
        used = self.history.filter(pl.col("user_id").is_in(users["user_id"].implode()))
        if read is not None:  # the sessions left out lent their context; their services are used too
            sessions = sessions.filter(pl.col("session_id").is_not_null())
            used = pl.concat([used, events.select("user_id", service=service_of_expr(
                activity(pl.col("service"), pl.col("page"))))])
        unseen = sessions.filter(pl.col("user_id").is_in(new_users.implode())) if new_users.len() else sessions.clear()
        unseen = recent_sessions(unseen, window) if window < most else unseen
        predicted = recommendation_inputs(recent_sessions(sessions, self.recent) if trimmed else sessions)
        tokens = self._tokens("embed", unseen["text"]) + self._tokens("predict", predicted["input_text"])
        _require_within(caps, tokens=tokens)
        return Plan(sessions, unseen, used, users, Work(new_users.len(), sessions.height, tokens))

    def _tokens(self, model: str, texts: pl.Series) -> int:
        """The tokens `model` ("embed" or "predict") reads of `texts`, each cut at its length."""
        if texts.is_empty():
            return 0
        tokenizer, limit = self.counters[model]
        return sum(map(len, tokenizer(texts.to_list(), truncation=True, max_length=limit)["input_ids"]))

    def answer(self, request: pl.DataFrame | Plan, deadline: float | None = None) -> pl.DataFrame:
        """Persona and top-5 new services per user of `request` (checked page views, or their Plan); past
        `deadline` (time.monotonic()) it stops with a TimeoutError at its next stage or forward pass."""
        from sessionbert_core.personas.embed import user_vector_sessions
        from sessionbert_core.personas.mapping import nearest_clusters
        from sessionbert_core.recommend.ranking import recommend_services
        from sessionbert_core.serving.quick_ranking import predict_top

        plan = request if isinstance(request, Plan) else self.plan(request)

        def in_time(stage: str) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the request ran past its time limit before {stage}")

        # a known user keeps their assigned persona: only the sessions of users never seen are embedded
        inferred = pl.DataFrame(schema={"user_id": pl.String, "cluster": pl.Int64, "persona": pl.String})
        if plan.unseen.height:
            embeddings = self._embed(plan.unseen, in_time)
            inferred = (nearest_clusters(self.space.session_vectors(embeddings, plan.unseen), self.centroids,
                                         user_vector_sessions(self.settings))
                        .join(self.tags, on="cluster", how="left").with_columns(pl.col("persona").fill_null(""))
                        .select(inferred.columns))
        in_time("ranking services")
        if plan.few is not None:
            top = predict_top(*self.next_activity, plan.few, in_time, PASS_SESSIONS, self.settings.get("max_length"),
                              self.precision.bf16)
            return self.quick.answer(plan.few, top, plan.posted, inferred)
        ranker = self.settings.get("ranker", "count")  # the recommendation table's, chosen on validation
        clusters = (pl.concat([self.known.select("user_id", "cluster"), inferred.select("user_id", "cluster")])
                    if ranker == "persona" else None)
        ranked = recommend_services(self._predictor_in_time(in_time), plan.sessions, None, ranker, self.recent,
                                    clusters, self.ranking.vectors, also_used=plan.used, markov=self.ranking.markov,
                                    services=self.ranking.services, adoptions=self.ranking.adoptions,
                                    population=self.population)  # EASE and item-kNN, fitted
        personas = (
            plan.posted.join(self.assigned, on="user_id", how="left", maintain_order="left")
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
                              pl.col("pages").fill_null([]), sessions=plan.posted["sessions"]))

    def _embed(self, sessions: pl.DataFrame, in_time) -> pl.DataFrame:
        """`embed_sessions`, PASS_SESSIONS at a time (texts of like length together), in time before each."""
        from sessionbert_core.personas.embed import embed_sessions

        by_length = sessions.sort(pl.col("text").str.len_bytes())
        parts = []
        for offset in range(0, by_length.height, PASS_SESSIONS):
            in_time("embedding sessions")
            parts.append(embed_sessions(self.encoder, self.encoder_tokenizer, by_length.slice(offset, PASS_SESSIONS),
                                        self.settings["pooling"], max_length=self.settings.get("max_length"),
                                        bf16=self.precision.bf16))
        return parts[0] if len(parts) == 1 else pl.concat(parts)

    def _predictor_in_time(self, in_time):
        """The next-activity predictor, PASS_SESSIONS at a time, in time before each."""

        def predict(sessions: pl.DataFrame) -> pl.DataFrame:
            if sessions.is_empty():
                return self.predictor(sessions)
            parts = []
            for offset in range(0, sessions.height, PASS_SESSIONS):
                in_time("predicting next activities")
                parts.append(self.predictor(sessions.slice(offset, PASS_SESSIONS)))
            return parts[0] if len(parts) == 1 else pl.concat(parts)

        return predict


WORK_NAMES = {"new_users": "users the model never saw (each one embedded for a persona)",
              "sessions": "sessions for the models to read (each user's last ones)",
              "tokens": "tokens in the sessions for the models to read"}


def _require_within(caps: Work | None, **counts: int) -> None:
    for name, count in counts.items():
        if caps is not None and count > getattr(caps, name):
            raise RequestError(f"the request has {count:,} {WORK_NAMES[name]}; at most {getattr(caps, name):,} "
                               f"(max_{name}): split the users over several requests", too_large=True)


def _last_sessions(events: pl.DataFrame, new_users: pl.Series, recent: int, most: int) -> pl.DataFrame:
    """`user_id, session_id, start` of the sessions the models read: each user's last `recent`, and a new
    user's last `most`."""
    return (events.group_by("user_id", "session_id").agg(start=pl.col("timestamp").min())
            .sort("user_id", "start", "session_id")  # recent_sessions' order
            .filter(pl.int_range(pl.len()).reverse().over("user_id")
                    < pl.when(pl.col("user_id").is_in(new_users.implode())).then(most).otherwise(recent)))


def _read_events(events: pl.DataFrame, read: pl.DataFrame) -> pl.DataFrame:
    """The page views of the sessions `read` and, under a null session id, the others on the days those
    sessions began: the context they lend the sessions read (earlier page views that day), without each
    left-out session becoming one to serialize against every other."""
    keys = read.select("user_id", "session_id")
    days = read.select("user_id", _day=pl.col("start").dt.date()).unique()
    earlier = (events.join(keys, on=["user_id", "session_id"], how="anti")
               .with_columns(_day=pl.col("timestamp").dt.date())
               .join(days, on=["user_id", "_day"], how="semi")
               .drop("_day").with_columns(session_id=pl.lit(None, pl.String)))
    return pl.concat([events.join(keys, on=["user_id", "session_id"], how="semi"), earlier])


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
