"""Training of the neural peers: cross-entropy over every activity at every position, epochs chosen on validation.

Both SASRec and GRU4Rec read a session left to right and predict, at each position, the activity
that follows it, scored against all activities (the full softmax: with hundreds of activities
nothing needs sampling). Batches group sessions of like length and are padded only to their longest;
padding comes after a session's end, where neither a causal attention nor a recurrence looks back
from a real position. After each epoch the validation split's last activities are predicted from
their prefixes, exactly as at test; training stops `patience` epochs after the best accuracy and
keeps that epoch's weights. A minimum of optimizer steps comes first, as SessionBERT's profiles set
one (`config.py`): where the train split makes fewer steps than that in `max_epochs`, epochs repeat
(up to REPEATED_EPOCHS), and here early stopping waits for them too: on `tiny` (10 steps an epoch)
SASRec sits for about 90 steps on a plateau of unigram frequencies before it learns transitions, and
stopped there it would be scored as a popularity model. The cost of waiting is bounded by the
minimum; the best epoch's weights are kept either way. Library code never sets the number of
threads: the caller's hold.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Self

import numpy as np
import polars as pl
import torch
from torch import nn

from sessionbert_core.model.batching import pad
from sessionbert_core.peers.protocol import PAD, RESERVED, DistributionPeer, Vocabulary, protocol_inputs

IGNORED = -100  # cross-entropy's ignore_index: targets past a session's end
REPEATED_EPOCHS = 100  # the most epochs a small train split repeats to make the minimum of steps
INFERENCE_BATCH = 512


def length_batches(lengths: np.ndarray, batch_size: int, generator: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Indices in batches of like length: sorted by length (random order within a length when a generator is
    given), cut into batches, the batches shuffled."""
    ties = generator.random(len(lengths)) if generator is not None else np.arange(len(lengths))
    order = np.lexsort((ties, lengths))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for b in generator.permutation(len(batches)) if generator is not None else range(len(batches)):
        yield batches[b]


class SequencePeer(DistributionPeer):
    """What SASRec and GRU4Rec share: the vocabulary, the training loop and batched prediction.

    Subclasses set `max_length`, `batch_size`, `max_epochs`, `patience`, `min_steps` and `seed` in `__init__`, and
    build their network and optimizer in `network(vocabulary)` and `optimizer(network)`; the network maps
    (batch, length) ids to (batch, length, activities) logits, position t scoring what follows it.
    """

    method: str
    max_length: int
    batch_size: int
    max_epochs: int
    patience: int
    min_steps: int
    seed: int
    max_seconds: float | None = None  # a budget of training time: no epoch starts past it (None: no budget)
    # a budget of optimizer steps, in whole epochs (None: none): unlike seconds, the same on any machine and under
    # any load, so a run is reproducible and a gate that compares against the peers cannot flip with the CPU
    max_steps: int | None = None

    def network(self, vocabulary: Vocabulary) -> nn.Module:
        raise NotImplementedError

    def optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def settings(self) -> dict:
        raise NotImplementedError

    def fit(self, train: pl.DataFrame, validation: pl.DataFrame) -> Self:
        started = time.perf_counter()
        self.vocabulary_ = Vocabulary.of(train)
        # the last max_length + 1 activities: max_length inputs, each followed by its target
        sequences = self.vocabulary_.encode(train.filter(pl.col("n_activities") >= 2)["activities"]
                                            .list.tail(self.max_length + 1)).to_list()
        inputs = protocol_inputs(validation)
        if not sequences or inputs.height == 0:
            raise ValueError(f"need sessions of two or more activities in train and validation to train and choose "
                             f"epochs on, not {len(sequences)} and {inputs.height}")
        with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state left as it was
            torch.manual_seed(self.seed)
            self.network_ = self.network(self.vocabulary_)
            curve = train_epochs(self.network_, self.optimizer(self.network_), sequences, self.batch_size,
                                 lambda: self.accuracy(inputs), self.max_epochs, self.patience, self.min_steps,
                                 np.random.default_rng(self.seed), self.max_seconds, self.max_steps)
        self.summary_ = {"method": self.method, **self.settings(), "train_sessions": len(sequences),
                         "parameters": sum(p.numel() for p in self.network_.parameters()), **curve,
                         "seconds": round(time.perf_counter() - started, 2)}
        return self

    @torch.inference_mode()
    def distribution(self, prefixes: pl.Series) -> np.ndarray:
        self.network_.eval()
        sequences = prefixes.list.tail(self.max_length).to_list()
        lengths = np.array([len(s) for s in sequences])
        out = np.zeros((len(sequences), self.vocabulary_.size), np.float32)
        for batch in length_batches(lengths, INFERENCE_BATCH, None):
            ids, _ = pad([sequences[i] for i in batch], PAD)
            logits = self.network_(ids)[torch.arange(len(batch)), torch.from_numpy(lengths[batch] - 1)]
            out[batch] = logits.softmax(-1).numpy()
        return out


def train_epochs(network: nn.Module, optimizer: torch.optim.Optimizer, sequences: list[list[int]], batch_size: int,
                 validation_accuracy: Callable[[], float], max_epochs: int, patience: int, min_steps: int,
                 generator: np.random.Generator, max_seconds: float | None = None,
                 max_steps: int | None = None) -> dict:
    """Epochs of next-activity cross-entropy at every position until validation accuracy has not improved for
    `patience` epochs, after `min_steps` optimizer steps at least, or until `max_seconds` have passed (the peers'
    share of a run's time, so they cost what the graph can afford), within `max_steps` optimizer steps rounded up to
    whole epochs (which also caps `min_steps`); the best epoch's weights are loaded back. Returns the epochs, the
    steps, the validation curve and whether a budget stopped it."""
    started = time.perf_counter()
    lengths = np.array([len(s) for s in sequences])
    steps_per_epoch = -(-len(sequences) // batch_size)
    max_epochs = max(max_epochs, min(-(-min_steps // steps_per_epoch), REPEATED_EPOCHS))
    if max_steps is not None:
        max_epochs, min_steps = min(max_epochs, max(-(-max_steps // steps_per_epoch), 1)), min(min_steps, max_steps)
    loss_of = nn.CrossEntropyLoss(ignore_index=IGNORED)
    best, best_epoch, best_state, curve, losses = -1.0, 0, None, [], []
    for epoch in range(1, max_epochs + 1):
        network.train()
        total, steps = 0.0, 0
        for batch in length_batches(lengths, batch_size, generator):
            ids, _ = pad([sequences[i] for i in batch], PAD)
            targets = torch.where(ids[:, 1:] == PAD, IGNORED, ids[:, 1:] - RESERVED)
            logits = network(ids[:, :-1])
            loss = loss_of(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(round(total / max(steps, 1), 5))
        curve.append(round(validation_accuracy(), 5))
        if curve[-1] > best:
            best, best_epoch, best_state = curve[-1], epoch, copy.deepcopy(network.state_dict())
        elif epoch - best_epoch >= patience and epoch * steps_per_epoch >= min_steps:
            break
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    network.load_state_dict(best_state)
    return {"epochs": best_epoch, "epochs_run": len(curve), "epochs_allowed": max_epochs,
            "steps": len(curve) * steps_per_epoch, "validation_accuracy": best, "validation_curve": curve,
            "training_loss": losses, "stopped_by_time_budget": bool(
                max_seconds is not None and time.perf_counter() - started > max_seconds),
            "step_budget": max_steps}
