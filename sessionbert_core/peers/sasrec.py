"""SASRec: causal self-attention over the session's activities, trained with cross-entropy over all activities.

Kang & McAuley, "Self-attentive sequential recommendation", ICDM 2018: item embeddings (scaled by
sqrt(d)) plus learned positions, dropout, blocks of pre-norm single-head causal self-attention and a
point-wise feed-forward of the same width, a final layer norm, scores as the dot product with the
item embeddings (shared). Trained as Klenitskiy & Vasilev, "Turning dross into gold loss: is BERT4Rec
really better than SASRec?", RecSys 2023 (SASRec+): cross-entropy over all activities at every
position instead of one sampled negative.

Settings (`SASRec()`): 2 blocks, 1 head, hidden 64 (SASRec+; the original's 50 rounded to a power of
two), dropout 0.2 (the original on its dense data set, ML-1M), Adam lr 1e-3 with betas (0.9, 0.98)
and batch 128 (the original), the last 50 activities (the original's length for its sparse data sets;
sessions here hold about 9). Epochs: at most 20, stopping 2 after the best validation accuracy of the
last activity, after 1,500 optimizer steps at least (`training.train_epochs`; SessionBERT's own
minimum on `small`: a small train split repeats epochs to make them). On `small` (35,000 train
sessions) the curve still creeps up by hundredths of a point past 10 epochs; 20 keep the peer within
minutes on 2 cores.

Positions count from the first activity kept; padding follows the session's end (right-padding:
under a causal mask no real position sees it). The network reads only the activities, never the
session's context sections.
"""

from __future__ import annotations

import torch
from torch import nn

from sessionbert_core.peers.protocol import PAD, RESERVED, Vocabulary
from sessionbert_core.peers.training import SequencePeer


class SASRecNetwork(nn.Module):
    def __init__(self, n_activities: int, hidden: int, blocks: int, heads: int, dropout: float, max_length: int):
        super().__init__()
        self.items = nn.Embedding(n_activities + RESERVED, hidden, padding_idx=PAD)
        nn.init.normal_(self.items.weight, std=hidden ** -0.5)  # scaled by sqrt(d) below: unit entries, unit logits
        self.positions = nn.Embedding(max_length, hidden)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=hidden, dropout=dropout, activation="relu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, blocks, norm=nn.LayerNorm(hidden), enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.items(ids) * self.items.embedding_dim ** 0.5 + self.positions(torch.arange(length))
        x = self.dropout(x) * (ids != PAD).unsqueeze(-1)  # padding stays zero (the original's timeline mask)
        causal = nn.Transformer.generate_square_subsequent_mask(length)
        hidden = self.blocks(x, mask=causal, is_causal=True)
        return hidden @ self.items.weight[RESERVED:].T


class SASRec(SequencePeer):
    """SASRec trained with full cross-entropy at every position (SASRec+)."""

    method = "sasrec"

    def __init__(self, hidden: int = 64, blocks: int = 2, heads: int = 1, dropout: float = 0.2,
                 learning_rate: float = 1e-3, batch_size: int = 128, max_length: int = 50, max_epochs: int = 20,
                 patience: int = 2, min_steps: int = 1500, seed: int = 0):
        self.hidden, self.blocks, self.heads, self.dropout = hidden, blocks, heads, dropout
        self.learning_rate, self.batch_size, self.max_length = learning_rate, batch_size, max_length
        self.max_epochs, self.patience, self.min_steps, self.seed = max_epochs, patience, min_steps, seed

    def settings(self) -> dict:
        return {"hidden": self.hidden, "blocks": self.blocks, "heads": self.heads, "dropout": self.dropout,
                "learning_rate": self.learning_rate, "optimizer": "Adam (0.9, 0.98)", "batch_size": self.batch_size,
                "max_length": self.max_length, "max_epochs": self.max_epochs, "patience": self.patience,
                "min_steps": self.min_steps, "seed": self.seed}

    def network(self, vocabulary: Vocabulary) -> nn.Module:
        return SASRecNetwork(vocabulary.size, self.hidden, self.blocks, self.heads, self.dropout, self.max_length)

    def optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(network.parameters(), lr=self.learning_rate, betas=(0.9, 0.98))
