"""SessionBERT: activity-only masking, save/load round trips, resume after interruption, a real learning test."""

from __future__ import annotations

import json
import sqlite3

import polars as pl
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, TrainerCallback

from sessionbert_assets.cli import _precision_line
from sessionbert_core.config import ModelSize, encoder_candidates, get_profile
from sessionbert_core.data.serialize import serialize_sessions, split_sessions
from sessionbert_core.model.networks import SessionBertForNextActivity, encoder_config, next_activity_config
from sessionbert_core.model.precision import resolve_precision
from sessionbert_core.model.tokenizer import ACTIVITY_TOKEN, train_tokenizer
from sessionbert_core.model.train import ActivityMaskingCollator, TrainSettings, pretrain

SIZE = ModelSize(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=128)


@pytest.fixture(scope="module")
def sessions(tiny_world) -> pl.DataFrame:
    events = pl.read_parquet(tiny_world.landing / "events-*.parquet")
    billing = pl.read_parquet(tiny_world.landing / "billing-*.parquet")
    return split_sessions(serialize_sessions(events, billing))


@pytest.fixture(scope="module")
def session_tokenizer(sessions):
    return train_tokenizer(sessions.filter(pl.col("split") == "train")["text"].to_list(), "wordpiece")


def test_masked_positions_are_activities(sessions, session_tokenizer):
    collator = ActivityMaskingCollator(session_tokenizer)
    texts = sessions["text"].head(64).to_list()
    features = [{"input_ids": ids} for ids in session_tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
    batch = collator(features)
    original = session_tokenizer.pad(features, return_tensors="pt")["input_ids"]
    candidates = collator.activity_positions(original)
    masked = batch["labels"] != -100
    activity_id = session_tokenizer.convert_tokens_to_ids(ACTIVITY_TOKEN)
    assert masked.any()
    assert not (masked & ~candidates).any()  # never a context, section, [SEP] or padding position
    assert (batch["labels"][masked] == original[masked]).all()
    assert not torch.isin(original[masked], torch.tensor([*session_tokenizer.all_special_ids, activity_id])).any()
    n_candidates, n_masked = candidates.sum(1), masked.sum(1)
    eligible = n_candidates >= 2
    assert (n_masked[eligible] >= 1).all() and (n_masked[eligible] < n_candidates[eligible]).all()
    again = collator(features)["labels"] != -100
    assert not torch.equal(masked, again)  # drawn afresh for every batch


def test_models_round_trip_and_automodel_loads_the_encoder(tmp_path, session_tokenizer):
    encoder = encoder_config(SIZE, len(session_tokenizer), session_tokenizer.pad_token_id)
    config = next_activity_config(encoder, ["iam", "vpc"], ["iam;users", "vpc;subnets", "vpc;vpcs"],
                                  session_tokenizer.mask_token_id, {"service": 1.0, "page": 1.0})
    model = SessionBertForNextActivity(config).eval()
    model.save_pretrained(tmp_path / "m")
    session_tokenizer.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded = SessionBertForNextActivity.from_pretrained(tmp_path / "m").eval()
    ids = AutoTokenizer.from_pretrained(tmp_path / "m")(["[activity] iam;users [SEP] [MASK]"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).page_logits, loaded(**ids).page_logits)
        encoder_only = AutoModel.from_pretrained(tmp_path / "m").eval()
        assert torch.allclose(encoder_only(**ids).last_hidden_state, model.bert(**ids).last_hidden_state, atol=1e-6)
    assert loaded.config.page_labels == ["iam;users", "vpc;subnets", "vpc;vpcs"]


class _Interrupt(TrainerCallback):
    """Kills training right after the first checkpoint is written, as a crash or a lost machine would."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt("simulated kill after the first checkpoint")


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, sessions, session_tokenizer):
    train = sessions.filter(pl.col("split") == "train")["text"].to_list()[:300]
    validation = sessions.filter(pl.col("split") == "validation")["text"].to_list()[:100]
    settings = TrainSettings(epochs=2, batch_size=32, learning_rate=1e-3, bf16=False)
    with pytest.raises(KeyboardInterrupt):
        pretrain(session_tokenizer, train, validation, SIZE, settings, tmp_path, report=lambda _: None,
                 callbacks=[_Interrupt()])
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-5"]
    for state in (tmp_path / "checkpoint-5").glob("*.pt"):
        torch.load(state, weights_only=True)  # optimizer and scheduler: tensors and plain state
    assert not (tmp_path / "checkpoint-5" / "training_args.bin").exists()
    _, summary = pretrain(session_tokenizer, train, validation, SIZE, settings, tmp_path, report=lambda _: None)
    assert summary["resumed_from"] == "checkpoint-5"
    assert summary["steps"] == 20


def test_graph_trains_and_evaluates_on_tiny(trained):
    home, result = trained
    assert result.success
    for folder in ("tokenizer", "pretrained_model", "finetuned_model"):
        assert (home / folder).is_dir()
    assert AutoModel.from_pretrained(home / "pretrained_model").config.hidden_size == 64


def test_finetuned_model_beats_popularity_on_tiny(trained):
    home, _ = trained
    evaluation = json.loads((home / "model_evaluation.json").read_text())
    for head in ("service", "page"):
        assert evaluation[head]["sessionbert"]["accuracy"] > evaluation[head]["popularity"]["accuracy"] + 0.05
    assert {"markov", "ceiling"} <= set(evaluation["service"])


def test_mlflow_runs_and_a_registered_model_version_exist(trained):
    home, result = trained
    with sqlite3.connect(home / "mlflow.db") as db:
        tags = db.execute("select key, value from tags where key in ('dagster.asset_key', 'dagster.run_id')").fetchall()
        versions = db.execute("select name, version, run_id from model_versions").fetchall()
        losses = db.execute("select count(*) from metrics where key = 'loss'").fetchone()[0]
    assets = {value for key, value in tags if key == "dagster.asset_key"}
    assert {"tokenizer", "pretrained_model", "finetuned_model", "model_evaluation"} <= assets
    assert (("dagster.run_id", result.run_id) in tags)
    assert sorted((name, version) for name, version, _ in versions) == [("sessionbert", 1),
                                                                         ("sessionbert-recommender", 1)]
    assert losses > 10  # per-step training loss


MODEL_RUNNING_ASSETS = ("pretrained_model", "finetuned_model", "model_evaluation", "session_embeddings",
                        "cluster_sweep", "recommendation_table", "hit_at_k_evaluation")


def test_every_model_running_asset_reports_the_resolved_precision(trained):
    home, result = trained
    expected = resolve_precision("cpu").name  # what this machine resolves (SESSIONBERT_PRECISION, auto by default)
    reported = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() in MODEL_RUNNING_ASSETS:
            metadata = materialization.metadata
            reported[materialization.asset_key.to_user_string()] = (metadata["precision"].value,
                                                                   metadata["precision_reason"].value)
    assert set(reported) == set(MODEL_RUNNING_ASSETS)
    assert {name for name, _ in reported.values()} == {expected}
    with sqlite3.connect(home / "mlflow.db") as db:
        logged = {value for (value,) in db.execute("select value from params where key = 'precision'")}
    assert logged == {expected}


def test_the_run_summary_names_the_precision(trained):
    _, result = trained
    line = _precision_line(result.get_asset_materialization_events())
    assert line.startswith(f"precision {resolve_precision('cpu').name} (") and line.endswith(")")


def test_epochs_repeat_on_small_data_up_to_the_minimum_steps():
    settings = TrainSettings(epochs=3, min_steps=1500)
    assert settings.planned_epochs(546) == 3  # the default small world: 1,638 steps in 3 epochs already
    assert settings.planned_epochs(16) == pytest.approx(1500 / 16)  # a one-day log: 94 epochs, not 3
    assert TrainSettings(epochs=3, min_steps=10**6).planned_epochs(1) == 100.0  # never past max_epochs
    assert TrainSettings(epochs=3).planned_epochs(1) == 3


def test_a_smaller_encoder_competes_only_where_the_data_is_smaller_than_the_profile_was_sized_for():
    settings = TrainSettings(epochs=3, batch_size=64, min_steps=1500)
    largest = get_profile("small").model
    assert not settings.repeats_epochs(35_000)  # the default small world: 3 epochs make the steps
    assert list(encoder_candidates(largest, settings.repeats_epochs(35_000))) == ["128x4"]
    assert settings.repeats_epochs(4_300)  # a sparse month: epochs repeat
    candidates = encoder_candidates(largest, settings.repeats_epochs(4_300))
    assert list(candidates) == ["128x4", "64x2"]
    half = candidates["64x2"]
    assert (half.num_heads, half.intermediate_size, half.max_length) == (2, 256, largest.max_length)
    assert half.hidden_size % half.num_heads == 0


def test_small_data_fine_tunes_on_every_activity_large_data_on_the_last():
    settings = TrainSettings(epochs=3, batch_size=64, min_steps=1500)
    assert not settings.every_cut_for(35_000)  # 1,641 steps of last activities: enough
    assert settings.every_cut_for(4_300)  # 204 steps: every activity of each session a target
    assert not TrainSettings(epochs=3).every_cut_for(10)  # no step budget: the profile decides
