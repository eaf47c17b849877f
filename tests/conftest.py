"""Shared fixtures: one tiny world per test session, and a helper to build landing folders."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from sessionbert_assets.checks import QualityGatesResource, all_checks
from sessionbert_assets.definitions import all_assets
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource, artifact_io_manager
from sessionbert_assets.spark import SparkResource
from sessionbert_core.config import get_profile
from sessionbert_core.world.simulate import generate_world
from sessionbert_core.world.truth import WorldPaths

APACHE_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "apache_logs"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    return generate_world(tmp_path_factory.mktemp("world") / "tiny", get_profile("tiny").world, seed=0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple:
    """The whole graph materialized once on tiny, through Dagster, with MLflow on SQLite: (home, result)."""
    home = tmp_path_factory.mktemp("trained") / "home"
    return home, materialize_all(home, "synthetic")


def materialize_all(home: Path, source: str, selection=None, gates: QualityGatesResource | None = None,
                    instance: dg.DagsterInstance | None = None,
                    compute: ComputeResource | None = None, run_config: dict | None = None,
                    **settings) -> dg.ExecuteInProcessResult:
    """Materialize the graph (or a selection) and its quality gates on tiny into `home`, from `source`;
    `settings` are further fields of the sessionbert resource."""
    sessionbert = SessionBertResource(home=str(home), source=source, profile="tiny", seed=0, **settings)
    resources = {"sessionbert": sessionbert, "io_manager": artifact_io_manager, "compute": compute or ComputeResource(),
                 "mlflow_tracking": MlflowResource(tracking_uri=""), "quality_gates": gates or QualityGatesResource(),
                 "training_pipes": dg.PipesSubprocessClient(), "spark": SparkResource(master="local[2]"),
                 "spark_pipes": dg.PipesSubprocessClient()}
    return dg.materialize([*all_assets, *all_checks], selection=selection, resources=resources,
                          instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False,
                          run_config=run_config)


@pytest.fixture
def landing(tmp_path: Path):
    """Write files into a fresh landing folder: landing({"events.csv": "..."}) -> folder."""
    def make(files: dict[str, str | bytes]) -> Path:
        folder = tmp_path / "landing"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            path = folder / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return folder
    return make
