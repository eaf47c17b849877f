"""Training outside the step's process: through Dagster Pipes, and with DDP over 2 CPU processes (torchrun)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import materialize_all

from sessionbert_assets.resources import ComputeResource
from sessionbert_core.model.training_job import TrainingJob

TRAINING = ["pretrained_model", "finetuned_model", "model_evaluation"]
# 2 processes see the same global batches in another order with other masks: the tolerance of a reseeded run
LOSS_TOLERANCE = 0.15  # relative, best MLM validation loss
ACCURACY_TOLERANCE = 0.10  # absolute, next-service accuracy on the test split


def _materializations(result) -> dict[str, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[materialization.asset_key.to_user_string()] = {k: getattr(v, "value", v)
                                                             for k, v in materialization.metadata.items()}
    return found


@pytest.fixture(scope="module")
def ddp_home(trained, tmp_path_factory):
    """The tiny graph's data, retrained with 2 processes under torchrun, launched through Dagster Pipes."""
    home, result = trained
    copy = tmp_path_factory.mktemp("ddp") / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("checkpoints", "mlartifacts", "mlflow.db", "dagster"))
    ddp = materialize_all(copy, "synthetic", selection=TRAINING,
                          compute=ComputeResource(launcher="pipes", num_processes=2))
    return home, _materializations(result), copy, ddp


def test_pipes_launched_ddp_training_materializes_the_same_assets(ddp_home):
    _, in_process, copy, ddp = ddp_home
    assert ddp.success, [e.message for e in ddp.all_events if e.is_failure]
    external = _materializations(ddp)
    assert set(TRAINING) <= set(external)
    for asset in ("pretrained_model", "finetuned_model"):
        assert set(in_process[asset]) <= set(external[asset]), asset  # every figure the in-process run gives
        assert external[asset]["launched"].startswith("external process through Dagster Pipes, 2 process")
        assert (copy / asset / "model.safetensors").exists()
    assert external["finetuned_model"]["registered_model"]  # registered in MLflow like the in-process model


def test_two_processes_reach_the_quality_of_one(ddp_home):
    home, in_process, copy, ddp = ddp_home
    external = _materializations(ddp)
    one, two = (m["pretrained_model"]["best_validation_loss"] for m in (in_process, external))
    assert abs(two - one) / one < LOSS_TOLERANCE, (one, two)
    accuracy = [json.loads((h / "model_evaluation.json").read_text())["service"]["sessionbert"]["accuracy"]
                for h in (home, copy)]
    assert abs(accuracy[1] - accuracy[0]) < ACCURACY_TOLERANCE, accuracy


def test_a_job_names_its_stage_and_the_encoder_to_fine_tune():
    with pytest.raises(ValueError, match="stage must be one of"):
        TrainingJob("distill", "t", "s", "c", "o", {}, {})
    with pytest.raises(ValueError, match="pretrained encoder"):
        TrainingJob("finetune", "t", "s", "c", "o", {}, {})


def test_the_launcher_is_checked():
    with pytest.raises(ValueError, match="launcher must be"):
        ComputeResource(launcher="slurm").external()
    assert ComputeResource(num_processes=2).external()
    assert "--nproc-per-node=2" in ComputeResource(num_processes=2).training_command()
    assert not ComputeResource().external()
