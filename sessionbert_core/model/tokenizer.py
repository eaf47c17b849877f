"""The session tokenizer: trained on serialized sessions, special and section tokens kept whole.

Three models are trained on the same text and measured on validation sessions: WordLevel (one
token per distinct word), WordPiece and BPE (frequent words whole, rare ones in subwords). All
three split on whitespace only, so `service;page` activities stay whole whenever they are in the
vocabulary. The rule that picks one: among the models whose unknown-token rate is within 0.1
percentage point of the lowest, the one with the fewest tokens per session; ties go to WordPiece,
then BPE, then WordLevel (subwords cover activities never seen in training instead of [UNK]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import polars as pl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sessionbert_core.data.serialize import SECTION_TOKENS
from sessionbert_core.model.inputs import MASK

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK, *SECTION_TOKENS)
ACTIVITY_TOKEN = "[activity]"
KINDS = ("wordpiece", "bpe", "wordlevel")
MAX_VOCABULARY = 30_000
UNK_TOLERANCE = 0.001


@dataclass(frozen=True)
class TokenizerStats:
    kind: str
    vocabulary_size: int
    unknown_token_rate: float  # [UNK] among all tokens of the validation sessions
    mean_tokens_per_session: float
    activities_as_one_token: float  # share of validation activity occurrences that are one token
    tokens_per_activity: float


def train_tokenizer(texts: Sequence[str], kind: str = "wordpiece", vocab_size: int = MAX_VOCABULARY,
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a tokenizer of the given kind on session texts; [CLS] text [SEP] is added on encoding. Without the
    trainer's progress bar: the run says what runs, and on a pipe the bar left only blank lines."""
    if kind == "wordlevel":
        model = models.WordLevel(unk_token=UNK)
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    elif kind == "wordpiece":
        model = models.WordPiece(unk_token=UNK, max_input_chars_per_word=512)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    elif kind == "bpe":
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: choose one of {', '.join(KINDS)}")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if kind == "wordpiece":
        tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=UNK, pad_token=PAD, cls_token=CLS, sep_token=SEP, mask_token=MASK,
        additional_special_tokens=list(SECTION_TOKENS), model_max_length=512,
    )


def embedding_rows(tokenizer: PreTrainedTokenizerFast) -> int:
    """Rows the model's token embedding needs: the largest id plus one. WordLevel can leave ids unused
    (a special token that also occurs in the text is counted, then merged), so `len(tokenizer)` may be less."""
    return max(tokenizer.get_vocab().values()) + 1


def measure(tokenizer: PreTrainedTokenizerFast, kind: str, texts: Sequence[str],
            activities: pl.Series) -> TokenizerStats:
    """Statistics on validation sessions: unknown tokens, length, and how activities are cut."""
    encoded = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    n_tokens = sum(len(ids) for ids in encoded)
    unk = tokenizer.unk_token_id
    n_unk = sum(ids.count(unk) for ids in encoded)
    distinct = activities.value_counts()
    pieces = tokenizer(distinct[activities.name].to_list(), add_special_tokens=False)["input_ids"]
    counts = distinct["count"].to_list()
    total = sum(counts)
    whole = sum(c for ids, c in zip(pieces, counts, strict=True) if len(ids) == 1 and ids[0] != unk)
    per_activity = sum(len(ids) * c for ids, c in zip(pieces, counts, strict=True))
    return TokenizerStats(kind, len(tokenizer), n_unk / max(n_tokens, 1), n_tokens / max(len(encoded), 1),
                          whole / max(total, 1), per_activity / max(total, 1))


def choose(stats: Sequence[TokenizerStats]) -> TokenizerStats:
    """The module docstring's rule."""
    lowest = min(s.unknown_token_rate for s in stats)
    eligible = [s for s in stats if s.unknown_token_rate <= lowest + UNK_TOLERANCE]
    return min(eligible, key=lambda s: (round(s.mean_tokens_per_session, 2), KINDS.index(s.kind)))


def train_and_choose(train_texts: Sequence[str], validation_texts: Sequence[str],
                     validation_activities: pl.Series) -> tuple[PreTrainedTokenizerFast, list[dict]]:
    """Train every kind, measure each on validation, keep the one the rule picks; also return the table."""
    trained = {kind: train_tokenizer(train_texts, kind) for kind in KINDS}
    stats = [measure(tok, kind, validation_texts, validation_activities) for kind, tok in trained.items()]
    chosen = choose(stats)
    return trained[chosen.kind], [asdict(s) | {"chosen": s.kind == chosen.kind} for s in stats]


KNOWN_ACTIVITIES = "known_activities.json"  # beside a saved tokenizer: the activities it was trained on


def vocabulary_drift(sessions: pl.DataFrame, known: set[str], window_days: int) -> dict:
    """How much of the recent traffic is in activities the tokenizer never saw in training.

    Recent = the sessions of the last `window_days` days of data. The share is of activity
    occurrences (page views), so a new service that few people open weighs little; the most
    frequent unseen activities are listed.
    """
    if sessions.is_empty():
        return {"drift": 0.0, "window_days": window_days, "window_sessions": 0, "recent_activities": 0,
                "unseen_activities": 0, "top_unseen": []}
    last_day = sessions["day"].max()
    recent = sessions.filter(pl.col("day") > pl.lit(last_day) - pl.duration(days=window_days))
    activities = recent.select(pl.col("activities").explode().drop_nulls().alias("activity"))
    unseen = activities.filter(~pl.col("activity").is_in(list(known)))
    top = unseen.group_by("activity").len().sort(["len", "activity"], descending=[True, False]).head(10)
    return {
        "drift": unseen.height / max(activities.height, 1),
        "window_days": window_days,
        "window_sessions": recent.height,
        "recent_activities": activities.height,
        "unseen_activities": unseen["activity"].n_unique(),
        "top_unseen": [f"{a} ({n})" for a, n in top.iter_rows()],
    }
