"""Resources: the project's configuration (environment, overridable by run config) and artifact storage."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from sessionbert_core import storage
from sessionbert_core.config import Profile, Settings, default_home, get_profile, settings_from_env


class SessionBertResource(dg.ConfigurableResource):
    """Where artifacts go, what to read and how big to build: DESIGN.md's environment variables.

    Defaults are read from the environment when the code location loads; any field can be
    overridden for one run in the launchpad (`resources: sessionbert: config: profile: tiny`).
    """

    # class defaults come from the environment too, so a run config may override a single field
    home: str = Field(default=str(default_home()),
                      description="SESSIONBERT_HOME: folder for every artifact, MLflow and the Dagster instance")
    source: str = Field(default=os.environ.get("SESSIONBERT_SOURCE") or "synthetic",
                        description="SESSIONBERT_SOURCE: 'synthetic' or a landing folder of event files/logs")
    profile: str = Field(default=os.environ.get("SESSIONBERT_PROFILE") or "small",
                         description="SESSIONBERT_PROFILE: tiny, small or paper")
    personas: str = Field(default=os.environ.get("SESSIONBERT_PERSONAS") or "",
                          description="SESSIONBERT_PERSONAS: persona definitions YAML ('' = the world's)")
    device: str = Field(default=os.environ.get("SESSIONBERT_DEVICE") or "auto",
                        description="SESSIONBERT_DEVICE: auto, cpu or cuda")
    seed: int = Field(default=0, description="SESSIONBERT_SEED: seed of the world, the splits and training")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SessionBertResource:
        s = settings_from_env(env)
        return cls(home=str(s.home), source=s.source, profile=s.profile, personas=s.personas or "",
                   device=s.device, seed=s.seed)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve()

    @property
    def size(self) -> Profile:
        return get_profile(self.profile)

    @property
    def is_synthetic(self) -> bool:
        return self.source == "synthetic"

    def settings(self) -> Settings:
        return Settings(self.home_path, self.source, self.profile, self.personas or None, self.device, self.seed,
                        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home_path / 'mlflow.db'}")

    def world_root(self) -> Path:
        return self.home_path / "worlds" / f"{self.profile}-seed{self.seed}"

    def pseudonym_key(self) -> bytes:
        """SESSIONBERT_PSEUDONYM_KEY, or a random key kept (owner-only) under SESSIONBERT_HOME."""
        if os.environ.get("SESSIONBERT_PSEUDONYM_KEY"):
            return os.environ["SESSIONBERT_PSEUDONYM_KEY"].encode()
        path = self.home_path / "pseudonym.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


class ArtifactIOManager(dg.IOManager):
    """Tables as `$SESSIONBERT_HOME/<asset>.parquet`, small records as `<asset>.json`; writes are atomic."""

    def __init__(self, sessionbert: SessionBertResource):
        self.sessionbert = sessionbert

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        return self.sessionbert.home_path / f"{context.asset_key.path[-1]}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if isinstance(obj, pl.DataFrame):
            path = storage.write_parquet(obj, self._path(context, ".parquet"))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path)),
                                         "dagster/row_count": dg.MetadataValue.int(obj.height)})
        elif isinstance(obj, dict):
            path = storage.write_json(obj, self._path(context, ".json"))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})
        elif obj is not None:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")

    def load_input(self, context: dg.InputContext) -> Any:
        parquet = self._path(context, ".parquet")
        if parquet.exists():
            return pl.read_parquet(parquet)
        record = self._path(context, ".json")
        if record.exists():
            return json.loads(record.read_text())
        raise FileNotFoundError(f"{context.asset_key.to_user_string()} has not been materialized under "
                                f"{self.sessionbert.home_path}: materialize it first")


@dg.io_manager(required_resource_keys={"sessionbert"},
               description="Artifacts under the run's SESSIONBERT_HOME (the `sessionbert` resource)")
def artifact_io_manager(init_context: dg.InitResourceContext) -> ArtifactIOManager:
    # bound to the resource key, not a copy of it, so a run-config override of `home` moves the tables too
    return ArtifactIOManager(init_context.resources.sessionbert)
