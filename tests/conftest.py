"""Shared fixtures: one tiny world per test session, and a helper to build landing folders."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from sessionbert_assets.checks import QualityGatesResource, all_checks
from sessionbert_assets.definitions import all_assets
from sessionbert_assets.partitions import config_for, runs_over_files
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
    sessionbert = SessionBertResource(**{"home": str(home), "source": source, "profile": "tiny", "seed": 0} | settings)
    resources = {"sessionbert": sessionbert, "io_manager": artifact_io_manager, "compute": compute or ComputeResource(),
                 "mlflow_tracking": MlflowResource(tracking_uri=""), "quality_gates": gates or QualityGatesResource(),
                 "training_pipes": dg.PipesSubprocessClient(), "spark": SparkResource(master="local[2]"),
                 "spark_pipes": dg.PipesSubprocessClient()}
    return materialize_runs([*all_assets, *all_checks], selection, resources,
                            instance or dg.DagsterInstance.ephemeral(), run_config=run_config,
                            cache=Path(home) / "ingest_cache")


class Runs:
    """The runs of one materialization (landing_folder first when it registers the files, then the files, then
    the rest over their days: `partitions.runs_over_files`), read as one result; anything else is the last run's."""

    def __init__(self, results: list[dg.ExecuteInProcessResult], instance: dg.DagsterInstance):
        self.results = results
        self.instance = instance  # the results hold the instance weakly: it lives as long as they are read

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def all_events(self) -> list:
        return [e for r in self.results for e in r.all_events]

    def get_asset_materialization_events(self) -> list:
        return [e for r in self.results for e in r.get_asset_materialization_events()]

    def get_asset_check_evaluations(self) -> list:
        return [c for r in self.results for c in r.get_asset_check_evaluations()]

    def __getattr__(self, name: str):
        return getattr(self.results[-1], name)


def materialize_runs(definitions: list, selection, resources: dict, instance: dg.DagsterInstance,
                     run_config: dict | None = None, cache: Path | None = None) -> Runs:
    """`dg.materialize` of `selection` (None: everything) in the runs the landing_files partitions need."""
    # resolved over the asset definitions alone: building a Definitions here would load it against whatever
    # instance an earlier test left as Dagster's current one
    assets = [d for d in definitions if not isinstance(d, dg.AssetChecksDefinition)]
    chosen = (dg.AssetSelection.all() if selection is None
              else dg.AssetSelection.from_coercible(selection).required_multi_asset_neighbors())
    keys = sorted(chosen.resolve(assets))
    results = []
    for run_keys, tags in runs_over_files(keys, instance, cache):
        results.append(dg.materialize(definitions, selection=run_keys, resources=resources, instance=instance,
                                      raise_on_error=False, run_config=config_for(run_config, run_keys), tags=tags))
        if not results[-1].success:
            break
    return Runs(results, instance)


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
