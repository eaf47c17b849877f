"""One training stage as a self-contained job: what the in-process asset runs, and what an external
process (`python -m sessionbert_external.train`, alone or under `torchrun`) runs from the same record.

A job names files, not objects: the tokenizer folder, the sessions Parquet, the encoder to fine-tune,
the checkpoint folder (the same job resumes from its last checkpoint) and the target folder the
model is saved to. Under `torchrun` every process trains its share of each batch (DDP: gloo on
CPU, NCCL on GPU) and the global batch stays the configured one; only the first process saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
from transformers import AutoTokenizer, TrainerCallback

from sessionbert_core import storage
from sessionbert_core.config import ModelSize, process_rank
from sessionbert_core.model.train import MetricsCallback, TrainSettings, finetune, pretrain

STAGES = ("pretrain", "finetune")


@dataclass(frozen=True)
class TrainingJob:
    stage: str  # pretrain | finetune
    tokenizer: str  # folder
    sessions: str  # session_splits Parquet (split column: train / validation / test)
    checkpoints: str
    target: str  # where the model is saved (atomically)
    settings: dict  # TrainSettings fields
    model: dict  # ModelSize fields (pretraining)
    encoder: str = ""  # the pretrained model folder (fine-tuning)
    task: str = "multitask"
    mlflow: dict = field(default_factory=dict)  # tracking_uri and run_id: metrics go to that run

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {self.stage!r}")
        if self.stage == "finetune" and not self.encoder:
            raise ValueError("a fine-tuning job needs the pretrained encoder's folder")

    @classmethod
    def from_dict(cls, data: dict) -> TrainingJob:
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    return process_rank()[0]


def world_size() -> int:
    return process_rank()[1]


def run_job(job: TrainingJob, report: Callable[[str], None] = print,
            metrics: Callable[[dict[str, float], int], None] | None = None,
            callbacks: Sequence[TrainerCallback] = ()) -> dict:
    """Train the job's stage, save the model to `job.target` (first process only), return the summary."""
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer)
    sessions = storage.read_table(Path(job.sessions))
    train, validation = (sessions.filter(pl.col("split") == name) for name in ("train", "validation"))
    settings = TrainSettings(**job.settings)
    extra = [*callbacks, MetricsCallback(metrics)] if metrics else list(callbacks)
    if job.stage == "pretrain":
        model, summary = pretrain(tokenizer, train["text"].to_list(), validation["text"].to_list(),
                                  ModelSize(**job.model), settings, Path(job.checkpoints), report, extra)
    else:
        model, summary = finetune(tokenizer, Path(job.encoder), train, validation, settings, Path(job.checkpoints),
                                  task=job.task, report=report, callbacks=extra)
    summary["processes"] = world_size()
    if rank() == 0:
        storage.save_pretrained(Path(job.target), model, tokenizer)
    return summary
