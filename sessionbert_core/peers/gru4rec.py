"""GRU4Rec: a GRU over the session's activities, trained with cross-entropy over all activities at every position.

Hidasi, Karatzoglou, Baltrunas & Tikk, "Session-based recommendations with recurrent neural
networks", ICLR 2016; settings after the official implementation, as Hidasi & Czapp, "The effect of
third party implementations on reproducibility", RecSys 2023, ask of a faithful reimplementation:
one GRU layer, cross-entropy over a softmax (the official `loss='cross-entropy'`), input embedding
shared with the output weights (`constrained_embedding`), an output bias, dropout on the hidden
state, Adagrad.

Settings (`GRU4Rec()`): hidden 100, dropout 0.3 on the hidden state and none on the embedding,
Adagrad lr 0.1 (the official `rsc15_cross-entropy` parameter sample; its momentum 0.7 is left out:
torch's Adagrad has none), batch 64 (the sample's 32 doubles the steps on 2 CPU cores; the official
parameter files range from 32 to 240), the last 50 activities. Epochs: at most 20, stopping 2 after
the best validation accuracy of the last activity, after 1,500 optimizer steps at least (as SASRec;
the official runs a fixed 10; on `small` the best comes within 3 to 6). Two departures,
both neutral at this scale: the full softmax instead of sampled negatives (hundreds of activities,
not millions of items), and sessions padded in like-length batches instead of the official
session-parallel mini-batches (the hidden state restarts at each session either way). The network
reads only the activities, never the session's context sections.
"""

from __future__ import annotations

import torch
from torch import nn

from sessionbert_core.peers.protocol import PAD, RESERVED, Vocabulary
from sessionbert_core.peers.training import SequencePeer


class GRU4RecNetwork(nn.Module):
    def __init__(self, n_activities: int, hidden: int, dropout_hidden: float, dropout_embedding: float):
        super().__init__()
        self.items = nn.Embedding(n_activities + RESERVED, hidden, padding_idx=PAD)
        nn.init.xavier_uniform_(self.items.weight)  # the official initialization (Glorot's uniform range)
        self.bias = nn.Parameter(torch.zeros(n_activities))
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.dropout_embedding, self.dropout_hidden = nn.Dropout(dropout_embedding), nn.Dropout(dropout_hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.dropout_embedding(self.items(ids)))
        return self.dropout_hidden(hidden) @ self.items.weight[RESERVED:].T + self.bias


class GRU4Rec(SequencePeer):
    """GRU4Rec with cross-entropy at every position and the constrained (shared) embedding."""

    method = "gru4rec"

    def __init__(self, hidden: int = 100, dropout_hidden: float = 0.3, dropout_embedding: float = 0.0,
                 learning_rate: float = 0.1, batch_size: int = 64, max_length: int = 50, max_epochs: int = 20,
                 patience: int = 2, min_steps: int = 1500, seed: int = 0):
        self.hidden, self.dropout_hidden, self.dropout_embedding = hidden, dropout_hidden, dropout_embedding
        self.learning_rate, self.batch_size, self.max_length = learning_rate, batch_size, max_length
        self.max_epochs, self.patience, self.min_steps, self.seed = max_epochs, patience, min_steps, seed

    def settings(self) -> dict:
        return {"hidden": self.hidden, "dropout_hidden": self.dropout_hidden,
                "dropout_embedding": self.dropout_embedding, "learning_rate": self.learning_rate,
                "optimizer": "Adagrad", "batch_size": self.batch_size, "max_length": self.max_length,
                "max_epochs": self.max_epochs, "patience": self.patience, "min_steps": self.min_steps,
                "seed": self.seed}

    def network(self, vocabulary: Vocabulary) -> nn.Module:
        return GRU4RecNetwork(vocabulary.size, self.hidden, self.dropout_hidden, self.dropout_embedding)

    def optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(network.parameters(), lr=self.learning_rate)
