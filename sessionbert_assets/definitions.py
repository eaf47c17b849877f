"""The Definitions: every asset and check, the resources, and the jobs, schedules and sensors of `automation`."""

from __future__ import annotations

import dagster as dg

from sessionbert_assets import automation, schemas
from sessionbert_assets.assets import (
    evaluation,
    ingestion,
    model,
    operations,
    personas,
    recommendation,
    serving,
    sessions,
    source,
)
from sessionbert_assets.checks import QualityGatesResource, all_checks
from sessionbert_assets.progress import LOGGERS
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource, artifact_io_manager
from sessionbert_assets.spark import SparkResource

# every asset with its owners, code version and (tables) column schema
all_assets = [schemas.described(asset) for asset in dg.load_assets_from_modules(
    [source, ingestion, sessions, evaluation, model, operations, personas, recommendation, serving])]


def build_definitions(sessionbert: SessionBertResource | None = None) -> dg.Definitions:
    sessionbert = sessionbert or SessionBertResource.from_env()
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        # `sessionbert run` picks progress and log_file (progress.quiet_run_config); a run that configures none
        # (the UI's, a sensor's) gets Dagster's console logger as before
        loggers=LOGGERS,
        resources={"sessionbert": sessionbert, "compute": ComputeResource(), "mlflow_tracking": MlflowResource(),
                   "quality_gates": QualityGatesResource(),
                   # external training (compute launcher `pipes`, or DDP): a subprocess here; on Kubernetes
                   # a PipesK8sClient in its place (docs/kubernetes.md)
                   "training_pipes": dg.PipesSubprocessClient(),
                   # SESSIONBERT_ENGINE=spark: the Spark job of session_splits, a local spark-submit here
                   # (PipesEMRClient or PipesDatabricksClient in its place on a cluster: docs/scaling.md)
                   "spark": SparkResource(), "spark_pipes": dg.PipesSubprocessClient(),
                   "io_manager": artifact_io_manager},
    )


defs = build_definitions()
