"""Training as an external process, launched by Dagster Pipes: `python -m sessionbert_external.train`,
or `torchrun --nproc-per-node N -m sessionbert_external.train` for DDP.

The job (a `sessionbert_core.model.training_job.TrainingJob`) comes in the Pipes extras under `job`.
The first process opens the Pipes channel: its progress lines become Dagster logs, each logged
figure also goes to the job's MLflow run, and the training summary comes back as the asset's
materialization metadata. The other processes read the same extras and only train.
Needs only `dagster-pipes` (no Dagster) beside the project's core, so it runs in a slim image.
"""

from __future__ import annotations

import math

import mlflow
from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

from sessionbert_core.model.training_job import TrainingJob, rank, run_job


def _extras() -> dict:
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data["extras"])


def _metrics_sink(job: TrainingJob):
    if not job.mlflow.get("run_id"):
        return None
    mlflow.set_tracking_uri(job.mlflow["tracking_uri"])
    client = mlflow.MlflowClient()

    def sink(metrics: dict[str, float], step: int) -> None:
        client.log_batch(job.mlflow["run_id"], metrics=[
            mlflow.entities.Metric(key, value, int(mlflow.utils.time.get_current_time_millis()), step)
            for key, value in metrics.items() if math.isfinite(value)])

    return sink


def _reportable(summary: dict) -> dict:
    def plain(value) -> bool:
        return isinstance(value, str | int | bool) or (isinstance(value, float) and math.isfinite(value))

    return {key: value for key, value in summary.items() if plain(value)}


def main() -> None:
    if rank() != 0:
        run_job(TrainingJob.from_dict(_extras()["job"]), report=lambda _: None)
        return
    with open_dagster_pipes() as pipes:
        job = TrainingJob.from_dict(pipes.get_extra("job"))
        pipes.log.info(f"{job.stage} in an external process (rank 0), checkpoints in {job.checkpoints}")
        summary = run_job(job, report=pipes.log.info, metrics=_metrics_sink(job))
        pipes.report_custom_message({"summary": summary})
        pipes.report_asset_materialization(metadata=_reportable(summary))


if __name__ == "__main__":
    main()
