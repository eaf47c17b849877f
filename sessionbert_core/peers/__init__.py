"""Next-activity peers: published session-based recommenders trained from scratch on the train split and scored under
SessionBERT's protocol (issue 38). Each is one module, its reference in its docstring; all share `protocol`."""

from sessionbert_core.peers.gru4rec import GRU4Rec
from sessionbert_core.peers.markov import HigherOrderMarkov
from sessionbert_core.peers.protocol import NextActivityPeer
from sessionbert_core.peers.sasrec import SASRec
from sessionbert_core.peers.sknn import VSKNN

__all__ = ["VSKNN", "GRU4Rec", "HigherOrderMarkov", "NextActivityPeer", "SASRec"]
