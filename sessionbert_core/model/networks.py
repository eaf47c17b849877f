"""SessionBERT models: a BERT encoder from scratch (MLM), and the next-service / next-page multitask model."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel, BertPreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import MaskedLMOutput
from transformers.utils import ModelOutput

from sessionbert_core.config import ModelSize
from sessionbert_core.model.precision import use_bf16


def attention_implementation(device: str, bf16: bool | None = None) -> str:
    """PyTorch's fused attention (SDPA), except on CPU under bf16 autocast, where BERT's own matmul-softmax
    attention ran 2x faster (SDPA's bf16 CPU path with a padding mask is slow); in fp32 on CPU SDPA is
    the faster one (1.2x in inference, level in training: benchmarks/NOTES.md). `bf16` None: the
    precision resolved for the device. Not saved with a model: pass it when loading."""
    return "eager" if torch.device(device).type == "cpu" and use_bf16(bf16, device) else "sdpa"


def encoder_config(size: ModelSize, vocab_size: int, pad_token_id: int, device: str = "cpu",
                   bf16: bool | None = None) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=size.hidden_size, num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads, intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_length, pad_token_id=pad_token_id, type_vocab_size=1,
        hidden_dropout_prob=size.dropout, attention_probs_dropout_prob=size.dropout,
        attn_implementation=attention_implementation(device, bf16),
    )


class SessionBertForMaskedLM(BertForMaskedLM):
    """BERT's masked-LM model, with the vocabulary scored only at the masked positions when labels are
    given: the same loss as `BertForMaskedLM`, without projecting the ~85% of positions that carry no
    label onto the vocabulary. Saved weights are `BertForMaskedLM`'s, loadable by any BERT class."""

    # the loss is the mean over this process's labelled positions: the Trainer must not rescale it by the
    # number of processes (which it does for models that take `num_items_in_batch`); DDP averages gradients
    accepts_loss_kwargs = False

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> MaskedLMOutput:
        if labels is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        chosen = labels != -100
        logits = self.cls(hidden[chosen])
        loss = nn.functional.cross_entropy(logits.float(), labels[chosen])
        return MaskedLMOutput(loss=loss, logits=logits)


@dataclass
class NextActivityOutput(ModelOutput):
    loss: torch.Tensor | None = None
    service_logits: torch.Tensor | None = None
    page_logits: torch.Tensor | None = None


class NextActivityHead(nn.Module):
    """BERT's prediction-head transform (dense, activation, layer norm), then one linear layer."""

    def __init__(self, config: BertConfig, n_labels: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, n_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(self.activation(self.dense(hidden))))


@strict
class SessionBertConfig(BertConfig):
    """BERT's config and what the two heads need: each head's label vocabulary, the id of the [MASK]
    slot they read, and the weight of each head's loss (0 turns a head off: the single-task ablations).

    `model_type` stays `bert`, so `AutoModel` still loads a fine-tuned model's encoder as a BertModel."""

    service_labels: list[str] | None = None
    page_labels: list[str] | None = None
    mask_token_id: int | None = None
    task_weights: dict | None = None

    def __post_init__(self, **kwargs):
        self.service_labels = list(self.service_labels or [])
        self.page_labels = list(self.page_labels or [])
        self.task_weights = dict(self.task_weights or {"service": 1.0, "page": 1.0})
        super().__post_init__(**kwargs)


class SessionBertForNextActivity(BertPreTrainedModel):
    """The pretrained encoder with a next-service head and a next-page head.

    The input ends with a [MASK] slot where the next activity goes (as at inference); both heads
    read the encoder's state at that slot. The config carries the label vocabularies
    (`service_labels`, `page_labels`) and the task weights; a weight of 0 turns a head's loss off
    (the single-task ablations).
    """

    config_class = SessionBertConfig
    accepts_loss_kwargs = False  # per-process mean losses; see SessionBertForMaskedLM

    def __init__(self, config: SessionBertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.service_head = NextActivityHead(config, len(config.service_labels))
        self.page_head = NextActivityHead(config, len(config.page_labels))
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                service_labels: torch.Tensor | None = None, page_labels: torch.Tensor | None = None,
                **_: object) -> NextActivityOutput:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        slot = _last_mask_position(input_ids, self.config.mask_token_id)
        state = hidden[torch.arange(hidden.shape[0], device=hidden.device), slot]
        service_logits, page_logits = self.service_head(state), self.page_head(state)
        loss = None
        if service_labels is not None and page_labels is not None:
            weights = self.config.task_weights
            loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
            loss = (weights["service"] * loss_fn(service_logits.float(), service_labels)
                    + weights["page"] * loss_fn(page_logits.float(), page_labels))
        return NextActivityOutput(loss=loss, service_logits=service_logits, page_logits=page_logits)


def _last_mask_position(input_ids: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(input_ids == mask_token_id, positions, -1).max(dim=1).values.clamp(min=0)


def load_next_activity_model(folder, device: str = "cpu", bf16: bool | None = None) -> SessionBertForNextActivity:
    """A saved fine-tuned model on `device`, in eval mode, with the attention suited to the device."""
    return SessionBertForNextActivity.from_pretrained(
        folder, attn_implementation=attention_implementation(device, bf16)).to(device).eval()


def next_activity_config(encoder: BertConfig, service_labels: list[str], page_labels: list[str],
                         mask_token_id: int, task_weights: dict[str, float]) -> SessionBertConfig:
    """The encoder's config with the heads' labels, [MASK] id and loss weights."""
    config = SessionBertConfig.from_dict(encoder.to_dict() | {
        "service_labels": list(service_labels), "page_labels": list(page_labels), "mask_token_id": mask_token_id,
        "task_weights": dict(task_weights)})
    config.architectures = [SessionBertForNextActivity.__name__]
    return config


@contextmanager
def heads_made_here():
    """Quiet transformers' load report while the next-activity model is made from the pretrained encoder: it
    would list the MLM head's weights as left over and the two heads' as newly initialized, which is what
    fine-tuning from that checkpoint means, on every run. Any other load keeps its report."""
    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
