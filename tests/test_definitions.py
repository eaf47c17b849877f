"""The Dagster layer: Definitions load, every asset is described, the graph materializes on tiny."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from conftest import APACHE_LOGS, materialize_runs

from sessionbert_assets.definitions import all_assets, build_definitions, defs
from sessionbert_assets.partitions import execute_over_files
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource, artifact_io_manager
from sessionbert_assets.spark import SparkResource

DATA_ASSETS = {"landing_folder", "landing_files", "raw_sessions", "quarantined_events", "billing_records",
               "session_splits", "next_activity_baselines"}


def _materialize(tmp_path, source: str = "synthetic", selection=DATA_ASSETS) -> dg.ExecuteInProcessResult:
    """Materialize on tiny into tmp_path/home (the data assets by default: no training)."""
    sessionbert = SessionBertResource(home=str(tmp_path / "home"), source=source, profile="tiny")
    resources = {"sessionbert": sessionbert, "io_manager": artifact_io_manager, "compute": ComputeResource(),
                 "mlflow_tracking": MlflowResource(tracking_uri=""), "training_pipes": dg.PipesSubprocessClient(),
                 "spark": SparkResource(), "spark_pipes": dg.PipesSubprocessClient()}
    return materialize_runs(all_assets, list(selection), resources, dg.DagsterInstance.ephemeral(),
                            cache=tmp_path / "home" / "ingest_cache")


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey(asset):
            values = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            # counts are shown with separators (`468,150`): read back as numbers
            return {k: int(v.replace(",", "")) if isinstance(v, str) and v.replace(",", "").isdigit() else v
                    for k, v in values.items()}
    raise KeyError(asset)


def test_definitions_load_with_the_main_job():
    assert defs.resolve_job_def("sessionbert_main") is not None
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= DATA_ASSETS


def test_every_asset_has_group_kinds_and_docstring():
    for asset in all_assets:
        for spec in asset.specs:
            assert spec.group_name and spec.group_name != "default", spec.key
            assert spec.kinds, spec.key
            assert spec.description and len(spec.description) > 30, spec.key


def test_configuration_comes_from_the_environment():
    resource = SessionBertResource.from_env({"SESSIONBERT_HOME": "/x", "SESSIONBERT_PROFILE": "tiny",
                                             "SESSIONBERT_SOURCE": "/data"})
    assert (resource.home, resource.profile, resource.source) == ("/x", "tiny", "/data")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        SessionBertResource.from_env({"SESSIONBERT_PROFILE": "huge"})


def test_data_assets_materialize_on_tiny(tmp_path):
    result = _materialize(tmp_path)
    assert result.success
    home = tmp_path / "home"
    for name in ("raw_sessions", "quarantined_events", "billing_records", "session_splits"):
        assert (home / f"{name}.parquet").exists(), name
    raw = _metadata(result, "quarantined_events")  # the whole ingest's figures, over every day
    assert raw["users"] > 50 and raw["sessions"] > 1000 and raw["days"] == 45
    splits = pl.read_parquet(home / "session_splits.parquet")
    assert set(splits["split"].cast(pl.String)) == {"train", "validation", "test"}
    evaluation = json.loads((home / "next_activity_baselines.json").read_text())
    assert {"popularity", "markov", "ceiling"} <= set(evaluation["service"])
    assert evaluation["n_sessions"] > 100


def test_real_access_log_materializes_through_dagster(tmp_path):
    if not APACHE_LOGS.exists():
        pytest.skip("shared/data/apache_logs is not beside the project")
    result = _materialize(tmp_path, source=str(APACHE_LOGS))
    assert result.success
    raw = _metadata(result, "quarantined_events")
    assert raw["rows_read"] == 10_000 and raw["rows_filtered"] > 0
    assert raw["sessions"] > 0 and raw["users"] > 0
    evaluation = json.loads((tmp_path / "home" / "next_activity_baselines.json").read_text())
    assert "ceiling" not in evaluation["service"]  # no ground truth for a real log: absent, not zero


def test_unreadable_landing_file_fails_the_run_with_its_name(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "events.parquet").write_bytes(b"not parquet at all")
    result = _materialize(tmp_path, source=str(folder))
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert "events.parquet: cannot be read as PARQUET" in failures[0].step_failure_data.error.message


def test_build_definitions_accepts_a_configured_resource(tmp_path):
    custom = build_definitions(SessionBertResource(home=str(tmp_path), source="synthetic", profile="tiny"))
    bound = custom.resources["sessionbert"]
    assert (bound.home, bound.profile) == (str(tmp_path), "tiny")
    assert custom.resolve_job_def("sessionbert_main") is not None


def test_run_config_override_moves_every_artifact(tmp_path):
    """One field overridden in the launchpad: the tables follow it, not only the JSON files."""
    home = tmp_path / "override"
    custom = build_definitions(SessionBertResource(home=str(tmp_path / "default"), source="synthetic",
                                                   profile="small"))
    jobs = {"main": custom.resolve_job_def("sessionbert_main"), "files": custom.resolve_job_def("read_new_files")}
    results = execute_over_files(jobs, dg.DagsterInstance.ephemeral(), [dg.AssetKey(name) for name in DATA_ASSETS],
                                 home / "ingest_cache",
                                 run_config={"resources": {"sessionbert": {"config": {"home": str(home),
                                                                                      "profile": "tiny"}}}})
    assert len(results) == 3 and all(result.success for result in results)  # the folder, its files, its days
    assert (home / "raw_sessions.parquet").exists() and (home / "next_activity_baselines.json").exists()
    assert not (tmp_path / "default").exists()


def test_training_assets_share_the_gpu_pool_and_retry():
    graph = defs.resolve_asset_graph()
    for name in ("pretrained_model", "finetuned_model"):
        node = graph.get(dg.AssetKey(name))
        assert node.pools == {"gpu"}, name
        assert node.assets_def.op.retry_policy.max_retries >= 1, name
    # every asset that runs a model on the device waits its turn too: one model on the accelerator at a time
    for name in ("session_embeddings", "cluster_sweep", "model_evaluation", "recommendation_table",
                 "hit_at_k_evaluation"):
        assert graph.get(dg.AssetKey(name)).pools == {"gpu"}, name


def test_instance_limits_the_gpu_pool_to_one(tmp_path, monkeypatch):
    from sessionbert_assets.instance import prepare

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    dagster_home = prepare(tmp_path)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").limit == 1


def test_cli_selection_takes_siblings_and_names_unknown_assets():
    from sessionbert_assets.cli import _selected_keys

    keys = {key.to_user_string() for key in _selected_keys(defs, "raw_sessions")}
    assert keys == {"raw_sessions", "billing_records"}
    with pytest.raises(ValueError, match="unknown asset\\(s\\) raw_session;"):
        _selected_keys(defs, "raw_session")


def test_config_choices_are_the_core_ones():
    """Each launchpad enum takes every choice the core has, and refuses anything else before a run starts."""
    from sessionbert_assets.assets.personas import SweepConfig
    from sessionbert_assets.assets.recommendation import RecommendationConfig
    from sessionbert_core.personas.representation import REPRESENTATIONS
    from sessionbert_core.recommend.ranking import RANKERS

    for config, field, choices in ((RecommendationConfig, "ranker", RANKERS),
                                   (SweepConfig, "representation", REPRESENTATIONS)):
        assert [getattr(config(**{field: c}), field) for c in ("auto", *choices)] == ["auto", *choices]
        with pytest.raises(ValueError):
            config(**{field: "no-such-choice"})


def test_every_asset_and_check_is_a_screen_or_less():
    """Assets and checks only call the core and report: at most 40 lines each, docstring included."""
    import ast

    long = []
    for path in sorted((Path(__file__).resolve().parents[1] / "sessionbert_assets").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            decorated = isinstance(node, ast.FunctionDef) and any(
                "asset" in ast.unparse(d) for d in node.decorator_list)
            if decorated and node.end_lineno - node.lineno + 1 > 40:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_house_rules_of_the_core():
    """Stage subpackages, no module over 400 lines, the environment read in one module, and the
    multitask model's config a PretrainedConfig of its own."""
    from transformers import PretrainedConfig

    from sessionbert_core.model.networks import SessionBertConfig, SessionBertForNextActivity

    core = Path(__file__).resolve().parents[1] / "sessionbert_core"
    packages = [p.name for p in core.iterdir() if (p / "__init__.py").exists()]
    assert len(packages) >= 4, packages
    long = {str(p.relative_to(core)): n for p in core.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
    readers = sorted({str(p.relative_to(core.parent)) for root in ("sessionbert_core", "sessionbert_assets")
                      for p in (core.parent / root).rglob("*.py") if "os.environ" in p.read_text()
                      or "getenv(" in p.read_text()})
    assert readers == ["sessionbert_core/config.py"], readers
    assert issubclass(SessionBertConfig, PretrainedConfig)
    assert SessionBertForNextActivity.config_class is SessionBertConfig


def test_the_benchmarks_read_like_the_rest():
    """benchmarks/ is a package its scripts and tests import without touching sys.path, and no function
    in it is longer than a screen (40 lines)."""
    import ast
    import importlib

    root = Path(__file__).resolve().parents[1]
    scripts = sorted(p for p in (root / "benchmarks").glob("*.py") if p.name != "__init__.py")
    for path in scripts:
        importlib.import_module(f"benchmarks.{path.stem}")
    touched = [str(p.relative_to(root)) for folder in ("benchmarks", "tests") for p in (root / folder).rglob("*.py")
               if "sys.path" in p.read_text() and p.name != "test_definitions.py"]
    assert not touched, touched
    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)" for path in scripts
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 40]
    assert not long, long
