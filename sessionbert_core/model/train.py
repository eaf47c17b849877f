"""Training: MLM pretraining on activities, multitask next-activity fine-tuning, batched prediction.

Both stages run on the Hugging Face `Trainer`: dynamic padding in the collators, length-grouped
batches, bf16 autocast where the hardware runs it natively (`sessionbert_core.model.precision`), checkpoints
every half epoch with resume from the last one, early stopping on validation loss, and callbacks
that report progress and metrics to the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    EarlyStoppingCallback,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as transformers_logging

from sessionbert_core.activity import service_of
from sessionbert_core.config import ModelSize, TrainingPlan, process_rank
from sessionbert_core.model.batching import encode
from sessionbert_core.model.inputs import next_activity_inputs
from sessionbert_core.model.networks import (
    SessionBertForMaskedLM,
    SessionBertForNextActivity,
    attention_implementation,
    encoder_config,
    heads_made_here,
    next_activity_config,
)
from sessionbert_core.model.precision import use_bf16
from sessionbert_core.model.tokenizer import ACTIVITY_TOKEN, embedding_rows

transformers_logging.disable_progress_bar()  # progress goes to the caller's log, not to tqdm bars

FinetuneTask = Literal["multitask", "service", "page"]  # both heads, or one of them (the paper's ablations)
HEAD_WEIGHTS: dict[str, dict[str, float]] = {"multitask": {"service": 1.0, "page": 1.0},
                                             "service": {"service": 1.0, "page": 0.0},
                                             "page": {"service": 0.0, "page": 1.0}}


@dataclass(frozen=True)
class TrainSettings:
    """How one training stage runs; the compute resource and the profile fill it in."""

    epochs: float = 3.0
    learning_rate: float = 5e-4
    batch_size: int = 64
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    patience: int = 3  # evaluations without a better validation loss before stopping
    evaluations_per_epoch: int = 2
    seed: int = 0
    device: str = "cpu"
    bf16: bool | None = None  # None: the precision resolved for the device (sessionbert_core.model.precision)
    threads: int = 0  # 0: leave torch's default
    max_train_sessions: int | None = None
    # validation sessions scored at each evaluation (a seeded sample): enough to rank checkpoints, and the
    # whole validation split of `small` (a third the size of its train split) cost a fifth of training
    max_validation_sessions: int | None = None
    every_cut: bool = False  # fine-tuning: every activity of a training session as a target, not only the last
    min_steps: int = 0  # at least this many optimizer steps: epochs repeat on small data, up to max_epochs
    max_epochs: float = 100.0

    def every_cut_for(self, last_targets: int) -> bool:
        """Every activity as a target where the sessions' last ones make fewer than `min_steps` steps in
        `epochs`: more distinct examples, not only more passes (a head overfits a few thousand targets
        within ten epochs)."""
        steps = math.ceil(last_targets / self.batch_size) * self.epochs
        return self.every_cut or (self.min_steps > 0 and steps < self.min_steps)

    def repeats_epochs(self, examples: int) -> bool:
        """Whether `examples` a pass make fewer than `min_steps` steps in `epochs`: data smaller than
        the profile was sized for."""
        return self.planned_epochs(math.ceil(examples / max(self.batch_size, 1))) > self.epochs

    def planned_epochs(self, steps_per_epoch: int) -> float:
        """`epochs`, or more where they make fewer than `min_steps` steps (at most `max_epochs`)."""
        return min(max(self.epochs, self.min_steps / max(steps_per_epoch, 1)), max(self.max_epochs, self.epochs))

    @classmethod
    def for_stage(cls, plan: TrainingPlan, stage: str, seed: int, max_length: int, device: str = "cpu",
                  bf16: bool | None = None, threads: int = 0, batch_size: int = 0) -> TrainSettings:
        """The settings of `stage` ("pretrain" or "finetune") from a profile's training plan."""
        pretraining = stage == "pretrain"
        return cls(
            epochs=plan.pretrain_epochs if pretraining else plan.finetune_epochs,
            learning_rate=plan.pretrain_learning_rate if pretraining else plan.finetune_learning_rate,
            batch_size=batch_size or plan.batch_size, max_length=max_length, seed=seed, device=device, bf16=bf16,
            threads=threads, every_cut=plan.finetune_every_cut and not pretraining, patience=plan.patience,
            max_validation_sessions=plan.validation_sessions, min_steps=plan.min_steps,
        )


@dataclass
class TrainResult:
    model_dir: Path
    summary: dict


class ProgressCallback(TrainerCallback):
    """Reports step, loss, useful (non-padding) tokens per second and time left, at most every `every` seconds."""

    def __init__(self, report: Callable[[str], None], every: float = 10.0):
        self.report, self.every = report, every

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last = time.perf_counter()
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        now = time.perf_counter()
        done = state.global_step >= state.max_steps
        if logs is None or "loss" not in logs or (now - self.last < self.every and not done):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        steps = max(state.global_step - self.start_step, 1)
        tokens_per_second = (state.num_input_tokens_seen - self.start_tokens) / elapsed
        left = (state.max_steps - state.global_step) * elapsed / steps
        self.report(f"step {state.global_step}/{state.max_steps} epoch {state.epoch:.2f} loss {logs['loss']:.4f} "
                    f"{tokens_per_second:,.0f} tokens/s, {left:.0f} s left")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and state.is_world_process_zero:
            shown = ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items()
                              if isinstance(v, float) and "runtime" not in k and "per_second" not in k)
            self.report(f"validation at step {state.global_step}: {shown}")


class MetricsCallback(TrainerCallback):
    """Hands every logged figure (training loss, learning rate, validation loss) to `sink(metrics, step)`."""

    def __init__(self, sink: Callable[[dict[str, float], int], None], prefix: str = ""):
        self.sink, self.prefix = sink, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            numbers = {f"{self.prefix}{k}": float(v) for k, v in logs.items()
                       if isinstance(v, int | float) and not isinstance(v, bool)}
            self.sink(numbers, state.global_step)


class WeightsOnlyCheckpoints(TrainerCallback):
    """Drops `training_args.bin` (a pickled object resume never reads) from each checkpoint, so every file
    left loads with `torch.load(weights_only=True)`: tensors, the optimizer and scheduler state, and the
    RNG state (numpy arrays, which the Trainer loads under its own allow-list)."""

    def on_save(self, args, state, control, **kwargs):
        Path(args.output_dir, f"checkpoint-{state.global_step}", "training_args.bin").unlink(missing_ok=True)


class ActivityMaskingCollator:
    """Dynamic padding and MLM masking drawn among activity tokens only.

    Per sequence, 15% of the activity positions (at least one, never all) are chosen afresh for
    every batch; of those, 80% become [MASK], 10% a random activity-section token, 10% stay.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast, probability: float = 0.15):
        self.tokenizer, self.probability = tokenizer, probability
        self.activity_id = tokenizer.convert_tokens_to_ids(ACTIVITY_TOKEN)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def activity_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        after_section = torch.cumsum(input_ids == self.activity_id, dim=1) > 0
        return after_section & ~torch.isin(input_ids, self.special_ids)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
        input_ids = batch["input_ids"]
        candidates = self.activity_positions(input_ids)
        n_candidates = candidates.sum(dim=1)
        n_masked = torch.where(n_candidates >= 2,
                               (n_candidates * self.probability).round().long().clamp(min=1), 0)
        n_masked = torch.minimum(n_masked, (n_candidates - 1).clamp(min=0))
        keys = torch.rand(input_ids.shape).masked_fill(~candidates, 2.0)
        ranks = keys.argsort(dim=1).argsort(dim=1)
        masked = (ranks < n_masked[:, None]) & candidates
        labels = torch.where(masked, input_ids, -100)
        draw = torch.rand(input_ids.shape)
        replaced = masked & (draw < 0.8)
        randomized = masked & (draw >= 0.8) & (draw < 0.9)
        # random replacements come from the batch's own activity tokens, so they look like activities
        pool = input_ids[candidates]
        random_tokens = pool[torch.randint(len(pool), input_ids.shape)] if len(pool) else input_ids
        input_ids = torch.where(replaced, self.tokenizer.mask_token_id, input_ids)
        input_ids = torch.where(randomized, random_tokens, input_ids)
        return {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels}


class NextActivityCollator:
    def __init__(self, tokenizer: PreTrainedTokenizerFast):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], return_tensors="pt")
        batch["service_labels"] = torch.tensor([f["service_labels"] for f in features])
        batch["page_labels"] = torch.tensor([f["page_labels"] for f in features])
        return dict(batch)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _arguments(settings: TrainSettings, output_dir: Path, n_train: int, label_names: list[str]) -> TrainingArguments:
    # under torchrun each of the WORLD_SIZE processes takes its share of the batch: the global batch,
    # the steps and the schedule stay those of one process
    processes = process_rank()[1]
    steps_per_epoch = max(math.ceil(n_train / settings.batch_size), 1)
    epochs = settings.planned_epochs(steps_per_epoch)
    total = math.ceil(steps_per_epoch * epochs)
    # two evaluations an epoch, but no more than about 20 a stage when epochs repeat on small data
    every = max(steps_per_epoch // settings.evaluations_per_epoch, total // 20 if epochs > settings.epochs else 1, 1)
    return TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, learning_rate=settings.learning_rate,
        per_device_train_batch_size=max(settings.batch_size // processes, 1),
        per_device_eval_batch_size=max(settings.batch_size * 2 // processes, 1),
        ddp_backend=("gloo" if settings.device == "cpu" else "nccl") if processes > 1 else None,
        weight_decay=settings.weight_decay, warmup_steps=int(total * settings.warmup_ratio),
        lr_scheduler_type="linear", eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        logging_steps=max(total // 100, 1), bf16=use_bf16(settings.bf16, settings.device),
        use_cpu=settings.device == "cpu", seed=settings.seed,
        data_seed=settings.seed, train_sampling_strategy="group_by_length", report_to="none", disable_tqdm=True,
        optim="adamw_torch_fused",  # one kernel for all parameters: +11% tokens/s on CPU (benchmarks/NOTES.md)
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, label_names=label_names,
    )


def _run(trainer: Trainer, output_dir: Path, report: Callable[[str], None]) -> dict:
    trainer.remove_callback(PrinterCallback)  # progress goes through ProgressCallback instead
    resume = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
    if resume:
        report(f"resuming from {Path(resume).name}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    state = trainer.state
    best = state.best_metric
    losses = [log["loss"] for log in state.log_history if "loss" in log]
    curve = [[log["step"], round(log["eval_loss"], 5)] for log in state.log_history if "eval_loss" in log]
    accuracy = [[log["step"], round(log["eval_service_accuracy"], 5), round(log["eval_page_accuracy"], 5)]
                for log in state.log_history if "eval_service_accuracy" in log]
    return {"steps": state.global_step, "epochs": round(state.epoch or 0.0, 3), "seconds": round(seconds, 2),
            "best_validation_loss": best, "final_training_loss": losses[-1] if losses else None,
            "training_curve": [[log["step"], round(log["loss"], 5)] for log in state.log_history if "loss" in log],
            "validation_curve": curve, "validation_accuracy": accuracy,
            "useful_tokens_seen": int(state.num_input_tokens_seen),
            "useful_tokens_per_second": round(state.num_input_tokens_seen / max(seconds, 1e-9), 1),
            "resumed_from": Path(resume).name if resume else None,
            "precision": "bf16" if trainer.args.bf16 else "fp32",
            "stopped_early": state.global_step < state.max_steps}


def _prepare(settings: TrainSettings) -> None:
    _seed_everything(settings.seed)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)


def pretrain(tokenizer: PreTrainedTokenizerFast, train_texts: Sequence[str], validation_texts: Sequence[str],
             size: ModelSize, settings: TrainSettings, output_dir: Path, report: Callable[[str], None] = print,
             callbacks: Sequence[TrainerCallback] = ()) -> tuple[BertForMaskedLM, dict]:
    """BertForMaskedLM from scratch on session texts; returns the best model (lowest validation loss)."""
    _prepare(settings)
    collator = ActivityMaskingCollator(tokenizer)
    train = _mlm_examples(tokenizer, train_texts, settings, collator, settings.max_train_sessions)
    validation = _mlm_examples(tokenizer, validation_texts, settings, collator, settings.max_validation_sessions)
    if not train or not validation:
        raise ValueError(f"too few sessions with two or more activities to pretrain on "
                         f"({len(train)} train, {len(validation)} validation)")
    model = SessionBertForMaskedLM(encoder_config(size, embedding_rows(tokenizer), tokenizer.pad_token_id,
                                                 settings.device, settings.bf16))
    trainer = Trainer(model=model, args=_arguments(settings, output_dir, len(train), ["labels"]),
                      train_dataset=train, eval_dataset=validation, data_collator=collator,
                      callbacks=[WeightsOnlyCheckpoints(), ProgressCallback(report),
                                 EarlyStoppingCallback(settings.patience), *callbacks])
    summary = _run(trainer, output_dir, report)
    summary |= {"train_sessions": len(train), "validation_sessions": len(validation),
                "validation_perplexity": math.exp(min(summary["best_validation_loss"] or 0.0, 50.0)),
                "parameters": sum(p.numel() for p in trainer.model.parameters())}
    return trainer.model, summary


def _mlm_examples(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], settings: TrainSettings,
                  collator: ActivityMaskingCollator, limit: int | None) -> list[dict]:
    texts = list(texts)
    if limit and len(texts) > limit:  # a seeded sample: texts are user-sorted
        keep = np.random.default_rng(settings.seed).choice(len(texts), limit, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    encoded = tokenizer(texts, truncation=True, max_length=settings.max_length)["input_ids"]
    examples = []
    for ids in encoded:
        if collator.activity_positions(torch.tensor([ids])).sum() >= 2:
            examples.append({"input_ids": ids})
    return examples


# ----------------------------------------------------------------------------------------------
# fine-tuning


def label_vocabularies(train: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Services and pages the heads can predict: every one seen in the training sessions."""
    activities = train.select(pl.col("activities").explode()).to_series().drop_nulls()
    pages = sorted(activities.unique().to_list())
    services = sorted({service_of(a) for a in pages})
    return services, pages


def _next_activity_examples(tokenizer, inputs: pl.DataFrame, services: list[str], pages: list[str],
                            max_length: int) -> list[dict]:
    service_index = {s: i for i, s in enumerate(services)}
    page_index = {p: i for i, p in enumerate(pages)}
    ids = encode(tokenizer, inputs["input_text"].to_list(), max_length, keep="end")  # the [MASK] slot
    return [{"input_ids": x, "service_labels": service_index.get(s, -100), "page_labels": page_index.get(p, -100)}
            for x, s, p in zip(ids, inputs["target_service"], inputs["target_page"], strict=True)]


def finetune(tokenizer: PreTrainedTokenizerFast, encoder_dir: Path, train_sessions: pl.DataFrame,
             validation_sessions: pl.DataFrame, settings: TrainSettings, output_dir: Path, task: str = "multitask",
             report: Callable[[str], None] = print,
             callbacks: Sequence[TrainerCallback] = ()) -> tuple[SessionBertForNextActivity, dict]:
    """The pretrained encoder with both heads, trained on next-activity targets (weights by `task`)."""
    if task not in HEAD_WEIGHTS:
        raise ValueError(f"unknown fine-tuning task {task!r}: choose one of {', '.join(HEAD_WEIGHTS)}")
    _prepare(settings)
    services, pages = label_vocabularies(train_sessions)
    every_cut = settings.every_cut_for(next_activity_inputs(train_sessions).height)
    train_inputs = next_activity_inputs(train_sessions, every_cut=every_cut)
    train_inputs = _sampled(train_inputs, settings.max_train_sessions, settings.seed)
    train = _next_activity_examples(tokenizer, train_inputs, services, pages, settings.max_length)
    validation_inputs = _sampled(next_activity_inputs(validation_sessions), settings.max_validation_sessions,
                                 settings.seed)
    validation = _next_activity_examples(tokenizer, validation_inputs, services, pages, settings.max_length)
    if not train or not validation:
        raise ValueError(f"too few sessions with two or more activities to fine-tune on "
                         f"({len(train)} train, {len(validation)} validation)")
    encoder = BertConfig.from_pretrained(encoder_dir)
    config = next_activity_config(encoder, services, pages, tokenizer.mask_token_id, HEAD_WEIGHTS[task])
    attention = attention_implementation(settings.device, settings.bf16)
    with heads_made_here():
        model = SessionBertForNextActivity.from_pretrained(encoder_dir, config=config, attn_implementation=attention)
    trainer = Trainer(model=model, args=_arguments(settings, output_dir, len(train), ["service_labels", "page_labels"]),
                      train_dataset=train, eval_dataset=validation, data_collator=NextActivityCollator(tokenizer),
                      compute_metrics=_head_accuracy, preprocess_logits_for_metrics=_argmax,
                      callbacks=[WeightsOnlyCheckpoints(), ProgressCallback(report),
                                 EarlyStoppingCallback(settings.patience), *callbacks])
    summary = _run(trainer, output_dir, report)
    summary |= {"train_examples": len(train), "train_sessions": train_inputs["session_id"].n_unique(),
                "validation_sessions": len(validation), "task": task, "every_cut": every_cut,
                "n_services": len(services), "n_pages": len(pages),
                "parameters": sum(p.numel() for p in trainer.model.parameters()), "settings": asdict(settings)}
    return trainer.model, summary


def _sampled(frame: pl.DataFrame, limit: int | None, seed: int) -> pl.DataFrame:
    """A seeded sample of at most `limit` rows (rows are user-sorted: a head would be a few users)."""
    return frame.sample(limit, seed=seed) if limit and frame.height > limit else frame


def _argmax(logits, labels):
    return tuple(x.argmax(dim=-1) for x in logits)


def _head_accuracy(prediction) -> dict[str, float]:
    service_pred, page_pred = prediction.predictions
    service_true, page_true = prediction.label_ids
    return {"service_accuracy": float((service_pred == service_true).mean()),
            "page_accuracy": float((page_pred == page_true).mean())}
