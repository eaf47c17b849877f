"""The Definitions: every asset, the resources and the main job (`make run` materializes it)."""

from __future__ import annotations

import dagster as dg

from sessionbert_assets.assets import evaluation, ingestion, model, personas, recommendation, sessions, source
from sessionbert_assets.checks import QualityGatesResource, all_checks
from sessionbert_assets.resources import ComputeResource, MlflowResource, SessionBertResource, artifact_io_manager

all_assets = dg.load_assets_from_modules([source, ingestion, sessions, evaluation, model, personas, recommendation])

main_job = dg.define_asset_job(
    "sessionbert_main",
    selection=dg.AssetSelection.all(),
    description="The whole asset graph on the configured source and profile (what `make run` materializes).",
)

refresh_job = dg.define_asset_job(
    "refresh_recommendations",
    selection=dg.AssetSelection.assets("landing_folder", "raw_sessions", "quarantined_events", "billing_records",
                                       "session_splits", "session_embeddings", "user_personas",
                                       "recommendation_table"),
    description="Today's data through the current models: sessions, embeddings, user personas and the "
                "recommendation table (no training).",
)

# on by default: cheap (about a minute on `small`) and what keeps the product's table fresh
daily_refresh = dg.ScheduleDefinition(name="daily_recommendations", job=refresh_job, cron_schedule="0 5 * * *",
                                      default_status=dg.DefaultScheduleStatus.RUNNING,
                                      description="Every day at 05:00 UTC: user personas and recommendations from "
                                                  "the current models.")
# off by default: it retrains everything (11 minutes on 2 cores for `small`, hours at paper scale)
weekly_retrain = dg.ScheduleDefinition(name="weekly_retrain", job=main_job, cron_schedule="0 3 * * 0",
                                       default_status=dg.DefaultScheduleStatus.STOPPED,
                                       description="Sundays at 03:00 UTC: the whole graph, pretraining included.")


def build_definitions(sessionbert: SessionBertResource | None = None) -> dg.Definitions:
    sessionbert = sessionbert or SessionBertResource.from_env()
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[main_job, refresh_job],
        schedules=[daily_refresh, weekly_retrain],
        resources={"sessionbert": sessionbert, "compute": ComputeResource(), "mlflow_tracking": MlflowResource(),
                   "quality_gates": QualityGatesResource(),
                   "io_manager": artifact_io_manager},
    )


defs = build_definitions()
