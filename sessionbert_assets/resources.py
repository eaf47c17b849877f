"""Resources: the project's configuration (environment, overridable by run config) and artifact storage."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import mlflow
import polars as pl
from mlflow import MlflowClient
from pydantic import Field

from sessionbert_core import storage
from sessionbert_core.config import (
    PROJECT_ROOT,
    Profile,
    TrainingPlan,
    compute_from_env,
    default_home,
    get_profile,
    settings_from_env,
)
from sessionbert_core.model.precision import Precision, resolve_device, resolve_precision
from sessionbert_core.model.train import TrainSettings
from sessionbert_core.recommend.ranking import RECENT_SESSIONS
from sessionbert_core.world.truth import WorldPaths

# the environment when the code location loads: the fields' defaults, so a run config may override any one
ENV = settings_from_env()


class SessionBertResource(dg.ConfigurableResource):
    """Where artifacts go, what to read and how big to build: the environment variables of
    docs/configuration.md#environment-variables.

    Defaults are read from the environment when the code location loads; any field can be
    overridden for one run in the launchpad (`resources: sessionbert: config: profile: tiny`).
    """

    # class defaults come from the environment too, so a run config may override a single field
    home: str = Field(default=str(default_home()),
                      description="SESSIONBERT_HOME: folder for every artifact, MLflow and the Dagster instance")
    source: str = Field(default=ENV.source,
                        description="SESSIONBERT_SOURCE: 'synthetic' or a landing folder of event files/logs")
    profile: str = Field(default=ENV.profile,
                         description="SESSIONBERT_PROFILE: tiny, small or paper")
    personas: str = Field(default=ENV.personas or "",
                          description="SESSIONBERT_PERSONAS: persona definitions YAML ('' = the world's)")
    seed: int = Field(default=ENV.seed, description="SESSIONBERT_SEED: seed of the world, the splits and training")
    engine: str = Field(default=ENV.engine,
                        description="SESSIONBERT_ENGINE: polars (in the step's process) or spark (a Spark job "
                                    "through Dagster Pipes: the `spark` resource) for sessions, text and splits")
    # one setting for the table, its Hit@k evaluation, the ranker backtest and the served model alike
    recommendation_sessions: int = Field(default=RECENT_SESSIONS, ge=1,
                                         description="sessions of a user a recommendation reads, latest first "
                                                     "(the paper's appendix B: 8)")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SessionBertResource:
        s = settings_from_env(env)
        return cls(home=str(s.home), source=s.source, profile=s.profile, personas=s.personas or "", seed=s.seed,
                   engine=s.engine)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def profile_settings(self) -> Profile:
        """The named profile's world size, encoder and training plan."""
        return get_profile(self.profile)

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"

    def world_root(self) -> Path:
        return self.home_path / "worlds" / f"{self.profile}-seed{self.seed}"

    def landing_path(self) -> Path:
        """The folder ingestion reads: the synthetic world's landing folder, or SESSIONBERT_SOURCE."""
        if self.is_synthetic:
            return WorldPaths(self.world_root()).landing
        return Path(self.source).expanduser().resolve()

    def landing(self) -> dict:
        """Where the landing folder, the synthetic world's ground truth and the persona definitions are: what
        the `landing_folder` asset makes or lists, read here by the assets that need only where they are
        (configuration, not data: the lineage draws no edge for it)."""
        if self.is_synthetic:
            world = WorldPaths(self.world_root())
            return {"folder": str(world.landing), "world": str(world.root),
                    "personas": self.personas or str(world.personas_yaml)}
        return {"folder": str(self.landing_path()), "world": None, "personas": self.personas or None}

    def pseudonym_key(self) -> bytes:
        """SESSIONBERT_PSEUDONYM_KEY, or a random key kept (owner-only) under SESSIONBERT_HOME."""
        key = settings_from_env().pseudonym_key
        if key:
            return key.encode()
        path = self.home_path / "pseudonym.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


class ComputeResource(dg.ConfigurableResource):
    """Where and how training and inference run: device, precision, threads, batch size."""

    device: str = Field(default=compute_from_env().device,
                        description="SESSIONBERT_DEVICE: auto (CUDA when present, else CPU), cpu or cuda")
    precision: str = Field(default=compute_from_env().precision,
                           description="SESSIONBERT_PRECISION: auto (bf16 only where the device runs it natively "
                                       "and faster than fp32), bf16 or fp32")
    threads: int = Field(default=0, description="CPU threads for torch; 0 keeps torch's default (all cores)")
    batch_size: int = Field(default=0, description="training batch size; 0 takes the profile's")
    launcher: str = Field(default=ENV.launcher,
                          description="SESSIONBERT_LAUNCHER: in_process, or pipes (training in an external process "
                                      "through Dagster Pipes: the `training_pipes` client, a subprocess by default)")
    num_processes: int = Field(default=ENV.num_processes,
                               description="SESSIONBERT_NUM_PROCESSES: training processes; above 1, DDP through "
                                           "torchrun (gloo on CPU, NCCL on GPU), launched through Pipes")

    def external(self) -> bool:
        """Whether training runs in an external process (Pipes) rather than in the step's own."""
        if self.launcher not in ("in_process", "pipes"):
            raise ValueError(f"launcher must be in_process or pipes, not {self.launcher!r}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be at least 1, not {self.num_processes}")
        return self.launcher == "pipes" or self.num_processes > 1

    def training_command(self) -> list[str]:
        """The external training process: the entry point alone, or under torchrun for DDP."""
        entry = ["-m", "sessionbert_external.train"]
        if self.num_processes == 1:
            return [sys.executable, *entry]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={self.num_processes}", *entry]

    def training_env(self) -> dict[str, str]:
        """Threads per process: the cores shared among the processes (unless `threads` says otherwise)."""
        threads = self.threads or max((os.cpu_count() or 1) // self.num_processes, 1)
        return {"OMP_NUM_THREADS": str(threads)}

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def resolved_precision(self) -> Precision:
        """The precision models run in on the resolved device: what the hardware does natively and faster."""
        return resolve_precision(self.resolved_device(), self.precision)

    def report_precision(self, context: dg.AssetExecutionContext) -> Precision:
        """The resolved precision, with the probe's figures in the asset's metadata as one line (each asset
        logs `precision.metadata()`, a figure a param, to its own MLflow run too)."""
        precision = self.resolved_precision()
        figures = precision.metadata()
        probe = [f"{name} {figures[f'precision_probe_{name}_gflops']:,.1f} GFLOP/s" for name in ("bf16", "fp32")
                 if f"precision_probe_{name}_gflops" in figures]
        native = {True: "bf16 native", False: "bf16 not native"}.get(figures.get("precision_native_bf16"))
        context.add_output_metadata({key: figures[key] for key in ("precision", "precision_requested",
                                                                   "precision_reason") if key in figures}
                                    | ({"precision_probe": ", ".join(probe + [native] * bool(native))}
                                       if probe or native else {}))
        return precision

    def train_settings(self, plan: TrainingPlan, stage: str, seed: int, max_length: int) -> TrainSettings:
        precision = self.resolved_precision()
        return TrainSettings.for_stage(plan, stage, seed, max_length, device=precision.device, bf16=precision.bf16,
                                       threads=self.threads, batch_size=self.batch_size)


MODEL_CARD = PROJECT_ROOT / "docs" / "model_card.md"
DESCRIPTION_LIMIT = 5000  # characters: the registry's description column on PostgreSQL and MySQL


def model_card_description(limit: int | None = None) -> str:
    """The registered models' description: docs/model_card.md as plain Markdown (site anchors dropped, its links
    written as paths); under `limit`, the sections that fit and where the whole card is."""
    if not MODEL_CARD.exists():  # an install without the repository beside it
        return "SessionBERT models (model card: docs/model_card.md in the project)"
    card = re.sub(r" \{#[\w-]+\}", "", MODEL_CARD.read_text())
    card = re.sub(r"\[([^\]]+)\]\(([\w./-]+\.md)(#[\w-]+)?\)", lambda m: f"{m[1]} (docs/{m[2]}{m[3] or ''})", card)
    if limit is None or len(card) <= limit:
        return card
    tail = "\n\nThe whole card: docs/model_card.md, and `model_card.md` in the artifacts of each version's run."
    kept = ""
    for section in re.split(r"(?m)^(?=## )", card):
        if len(kept) + len(section) + len(tail) <= limit:
            kept += section
    return kept.rstrip() + tail


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry: one run per training or evaluation materialization.

    `tracking_uri` empty means `sqlite:///$SESSIONBERT_HOME/mlflow.db` with artifacts in
    `$SESSIONBERT_HOME/mlartifacts`; set MLFLOW_TRACKING_URI to use a team's server.
    """

    tracking_uri: str = Field(default=ENV.mlflow_tracking_uri,
                              description="MLFLOW_TRACKING_URI ('' = SQLite under SESSIONBERT_HOME)")
    experiment: str = Field(default="sessionbert", description="MLflow experiment name")
    registered_model: str = Field(default="sessionbert", description="name in the MLflow Model Registry")

    def uri(self, home: Path) -> str:
        return self.tracking_uri or f"sqlite:///{home / 'mlflow.db'}"

    @contextmanager
    def run(self, context: dg.AssetExecutionContext, home: Path) -> Iterator[mlflow.ActiveRun]:
        """An MLflow run tagged with the Dagster run id and asset key; its id goes into the asset metadata."""
        mlflow.set_tracking_uri(self.uri(home))
        experiment = mlflow.get_experiment_by_name(self.experiment)
        # artifacts beside the local store; a tracking server keeps its own artifact location
        location = None if self.tracking_uri else (home / "mlartifacts").as_uri()
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
            self.experiment, artifact_location=location)
        asset = context.asset_key.to_user_string()
        tags = {"dagster.run_id": context.run_id, "dagster.asset_key": asset, "dagster.job": context.job_name}
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{asset}-{context.run_id[:8]}", tags=tags) as run:
            yield run
        context.add_output_metadata({"mlflow_run_id": run.info.run_id, **self.run_links(home, experiment_id, run)})

    def run_links(self, home: Path, experiment_id: str, run: mlflow.ActiveRun) -> dict[str, dg.MetadataValue]:
        """`mlflow_run`: a link named `run 1a2b3c4d` to the run's page on an http tracking server, else to the
        folder of its artifacts (a `file:` link, with the command that opens the store's UI beside it). A link
        with a short name: a full URL or path, which the UI does not break, widens every table of the page."""
        uri, short = self.uri(home), f"run {run.info.run_id[:8]}"
        if uri.startswith("http"):
            page = f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
            return {"mlflow_run": dg.MetadataValue.md(f"[{short}]({page})")}
        artifacts = run.info.artifact_uri
        folder = Path(urlparse(artifacts).path).as_uri() if artifacts.startswith("file:") else artifacts
        return {"mlflow_run": dg.MetadataValue.md(f"[{short}]({folder}) (its artifacts)"),
                "mlflow_ui": dg.MetadataValue.text(f"mlflow ui --backend-store-uri {uri}, then experiment "
                                                   f"{experiment_id}, run {run.info.run_id}")}

    def register(self, run: mlflow.ActiveRun, artifact_path: str, description: str, name: str = "") -> str:
        """A new version of the registered model (`name`, default the next-activity models') from an
        artifact folder of `run`; returns the version."""
        client = MlflowClient()
        name = name or self.registered_model
        # the model card is the description: whole on the local SQLite store, cut to sections that fit on a server
        server = bool(self.tracking_uri) and not self.tracking_uri.startswith("sqlite:")
        card = model_card_description(DESCRIPTION_LIMIT if server else None)
        if MODEL_CARD.exists():
            client.log_text(run.info.run_id, MODEL_CARD.read_text(), "model_card.md")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=card)
        else:
            client.update_registered_model(name, description=card)
        version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}",
                                              run_id=run.info.run_id, description=description)
        return version.version


# a table kept by day, read whole, comes back in the order of its users: what trains on it then does not depend on
# how its days were written (one run, or day by day as they landed)
READ_ORDER = {"session_splits": ["user_id", "start", "session_id"]}


class ArtifactIOManager(dg.IOManager):
    """Tables as `$SESSIONBERT_HOME/<asset>.parquet` (one file, or a folder of parts the asset wrote one at a
    time: `storage.Parts`), small records as `<asset>.json`, models and tokenizers as folders
    `$SESSIONBERT_HOME/<asset>/` (the asset writes the folder and returns its path); writes are atomic."""

    def __init__(self, sessionbert: SessionBertResource):
        self.sessionbert = sessionbert

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        return self.sessionbert.home_path / f"{context.asset_key.path[-1]}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        context.add_output_metadata(_refresh_reason(context))
        if isinstance(obj, pl.DataFrame):
            path = storage.write_parquet(obj, self._path(context, ".parquet"))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path)),
                                         "dagster/row_count": dg.MetadataValue.int(obj.height)})
        elif isinstance(obj, storage.Parts):  # a table the asset wrote part by part, where the manager reads it
            expected = self._path(context, ".parquet")
            if obj.folder.resolve() != expected.resolve():
                raise ValueError(f"{context.asset_key.to_user_string()} must be saved at {expected}, not {obj.folder}")
            context.add_output_metadata({"path": dg.MetadataValue.path(str(expected)),
                                         "dagster/row_count": dg.MetadataValue.int(obj.rows),
                                         "parquet_parts": dg.MetadataValue.int(len(storage.part_paths(expected)))})
        elif isinstance(obj, dict):
            path = storage.write_json(obj, self._path(context, ".json"))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        elif isinstance(obj, Path):
            expected = self.sessionbert.home_path / context.asset_key.path[-1]
            if obj.resolve() != expected:
                raise ValueError(f"{context.asset_key.to_user_string()} must be saved at {expected}, not {obj}")
            context.add_output_metadata({"path": dg.MetadataValue.path(str(expected))})
        elif obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")

    def load_input(self, context: dg.InputContext) -> Any:
        folder = self._path(context, "")
        if folder.is_dir():  # a model or tokenizer in save_pretrained format
            return folder
        parquet = self._path(context, ".parquet")
        if parquet.exists():  # one file or a folder of parts; lazily for an input typed pl.LazyFrame
            if getattr(context.dagster_type, "typing_type", None) is pl.LazyFrame:
                return storage.scan_table(parquet)
            order = READ_ORDER.get(context.asset_key.path[-1])
            return storage.read_table(parquet).sort(order) if order else storage.read_table(parquet)
        record = self._path(context, ".json")
        if record.exists():
            return json.loads(record.read_text())
        raise FileNotFoundError(f"{context.asset_key.to_user_string()} has not been materialized under "
                                f"{self.sessionbert.home_path}: materialize it first")


def _refresh_reason(context: dg.OutputContext) -> dict:
    """Why this run refreshed the asset: the sensor's or schedule's reason tag, or a run launched by hand."""
    try:
        tags = context.step_context.dagster_run.tags
    except Exception:  # an output context built outside a run (tests of the IO manager alone)
        return {}
    reason = tags.get("sessionbert/reason")
    if not reason:
        launcher = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name")
        reason = f"started by {launcher}" if launcher else "launched by hand (UI, CLI or make run)"
    return {"refreshed_because": dg.MetadataValue.text(reason)}


@dg.io_manager(required_resource_keys={"sessionbert"},
               description="Artifacts under the run's SESSIONBERT_HOME (the `sessionbert` resource)")
def artifact_io_manager(init_context: dg.InitResourceContext) -> ArtifactIOManager:
    # bound to the resource key, not a copy of it, so a run-config override of `home` moves the tables too
    return ArtifactIOManager(init_context.resources.sessionbert)
