"""The Definitions: every asset, the resources and the main job (`make run` materializes it)."""

from __future__ import annotations

import dagster as dg

from sessionbert_assets.assets import evaluation, ingestion, model, personas, recommendation, sessions, source
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource, artifact_io_manager

all_assets = dg.load_assets_from_modules([source, ingestion, sessions, evaluation, model, personas, recommendation])

main_job = dg.define_asset_job(
    "sessionbert_main",
    selection=dg.AssetSelection.all(),
    description="The whole asset graph on the configured source and profile (what `make run` materializes).",
)


def build_definitions(sessionbert: SessionBertResource | None = None) -> dg.Definitions:
    sessionbert = sessionbert or SessionBertResource.from_env()
    return dg.Definitions(
        assets=all_assets,
        jobs=[main_job],
        resources={"sessionbert": sessionbert, "compute": ComputeResource(), "mlflow_tracking": MlflowResource(),
                   "io_manager": artifact_io_manager},
    )


defs = build_definitions()
