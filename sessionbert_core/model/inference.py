"""Batched inference of the fine-tuned model: top-k next services and pages at the [MASK] slot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from transformers import (
    PreTrainedTokenizerFast,
)

from sessionbert_core.model.batching import length_limit, length_sorted_batches, maybe_compiled
from sessionbert_core.model.inputs import next_activity_inputs
from sessionbert_core.model.networks import (
    SessionBertForNextActivity,
)
from sessionbert_core.model.precision import use_bf16

# ----------------------------------------------------------------------------------------------
# inference


def predict_top_k(model: SessionBertForNextActivity, tokenizer: PreTrainedTokenizerFast, texts: list[str],
                  batch_size: int = 256, max_length: int | None = None, top_k_services: int = 5, top_k_pages: int = 5,
                  bf16: bool | None = None, compile: bool | None = None) -> pl.DataFrame:
    """Top-k services and pages (with probabilities) at the last [MASK] slot of each text, in order.

    Texts are batched by length (little padding); memory is bounded by the batch size and the k's.
    `max_length` None: the model's own (the length it was trained on).
    `compile`: torch.compile the model (None: when there are enough texts for it to pay).
    """
    top = top_k_arrays(model, tokenizer, texts, batch_size, max_length, top_k_services, top_k_pages, bf16, compile)
    return pl.DataFrame([
        pl.Series("services", top.services.ravel()).reshape(top.services.shape).cast(pl.List(pl.String)),
        pl.Series("service_probabilities", top.service_p).cast(pl.List(pl.Float64)),
        pl.Series("pages", top.pages.ravel()).reshape(top.pages.shape).cast(pl.List(pl.String)),
        pl.Series("page_probabilities", top.page_p).cast(pl.List(pl.Float64)),
    ])


@dataclass(frozen=True)
class TopK:
    """Each text's top-k labels (rows in the texts' order, most probable first) and their probabilities."""

    services: np.ndarray  # (texts, k) of str
    service_p: np.ndarray  # (texts, k) float64
    pages: np.ndarray
    page_p: np.ndarray


@torch.inference_mode()
def top_k_arrays(model: SessionBertForNextActivity, tokenizer: PreTrainedTokenizerFast, texts: list[str],
                 batch_size: int = 256, max_length: int | None = None, top_k_services: int = 5, top_k_pages: int = 5,
                 bf16: bool | None = None, compile: bool | None = None) -> TopK:
    """`predict_top_k` as arrays (what the server's few-rows path reads, without a frame)."""
    if model.training:  # a walk over every module: 1.4 ms, more than a short text's tokenizing
        model.eval()
    device = next(model.parameters()).device
    autocast = use_bf16(bf16, device)  # None: the precision resolved for this device
    services, pages = np.array(model.config.service_labels), np.array(model.config.page_labels)
    k_service, k_page = min(top_k_services, len(services)), min(top_k_pages, len(pages))
    n = len(texts)
    service_index, page_index = np.zeros((n, k_service), np.int64), np.zeros((n, k_page), np.int64)
    service_p, page_p = np.zeros((n, k_service), np.float64), np.zeros((n, k_page), np.float64)
    forward = maybe_compiled(model, n, compile)
    for positions, input_ids, attention_mask in length_sorted_batches(texts, tokenizer, batch_size,
                                                                      length_limit(model, max_length), keep="end"):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = forward(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        for logits, k, index, probability in ((out.service_logits, k_service, service_index, service_p),
                                              (out.page_logits, k_page, page_index, page_p)):
            p, i = logits.float().softmax(-1).topk(k)
            index[positions], probability[positions] = i.cpu().numpy(), p.cpu().numpy()
    return TopK(services[service_index], service_p, pages[page_index], page_p)


def predict_next_activity(model: SessionBertForNextActivity, tokenizer: PreTrainedTokenizerFast,
                          sessions: pl.DataFrame, batch_size: int = 256, max_length: int | None = None, top_k: int = 5,
                          bf16: bool | None = None) -> pl.DataFrame:
    """Top-k next services and pages for each session of two or more activities, its last one held out."""
    inputs = next_activity_inputs(sessions)
    top = predict_top_k(model, tokenizer, inputs["input_text"].to_list(), batch_size, max_length, top_k, top_k, bf16)
    return pl.concat([inputs.select("user_id", "session_id", "previous", "target_service", "target_page"), top],
                     how="horizontal").with_columns(predicted_service=pl.col("services").list.first(),
                                                    predicted_page=pl.col("pages").list.first())
