"""Inference batches: texts tokenized a chunk at a time, sorted by length (little padding), padded in numpy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

TOKENIZE_CHUNK = 65_536  # texts tokenized at a time: memory stays bounded however many there are
# texts from which inference compiles the model: torch.compile's warm-up (about 15-20 s on 2 CPU cores)
# costs more than its ~1.3x faster batches save below this (benchmarks/NOTES.md)
COMPILE_ABOVE = 200_000


def maybe_compiled(model: torch.nn.Module, n_texts: int, compile: bool | None = None) -> torch.nn.Module:
    """The model, compiled with `torch.compile` (shapes dynamic) when asked or, with `compile=None`,
    when there are at least COMPILE_ABOVE texts to run."""
    if compile is None:
        compile = n_texts >= COMPILE_ABOVE
    return torch.compile(model, dynamic=True) if compile else model


def encode(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_length: int,
           keep: str = "start") -> list[list[int]]:
    """Token ids of each text, cut to `max_length` keeping its `start` or its `end` (the [MASK] slot)."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "right" if keep == "start" else "left"
    try:
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side


def pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids` and `attention_mask` of a batch, right-padded to its longest sequence."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    mask = np.arange(lengths.max(initial=0)) < lengths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


Batch = tuple[np.ndarray, torch.Tensor, torch.Tensor]


def length_sorted_batches(texts: Sequence[str], tokenizer: PreTrainedTokenizerFast, batch_size: int,
                          max_length: int, keep: str = "start") -> Iterator[Batch]:
    """`(positions, input_ids, attention_mask)` batches covering every text once; positions index `texts`."""
    for offset in range(0, len(texts), TOKENIZE_CHUNK):
        encoded = encode(tokenizer, list(texts[offset:offset + TOKENIZE_CHUNK]), max_length, keep)
        order = np.argsort(np.fromiter((len(x) for x in encoded), dtype=np.int64, count=len(encoded)), kind="stable")
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids, mask = pad([encoded[i] for i in chunk], tokenizer.pad_token_id)
            yield offset + chunk, ids, mask


def length_limit(model, max_length: int | None) -> int:
    """`max_length`, or where it is None the longest input the model was built for (what it was trained on)."""
    return max_length or model.config.max_position_embeddings
