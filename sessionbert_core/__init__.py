"""SessionBERT core: clickstream in, sessions, models, personas and recommendations out (no Dagster)."""

__version__ = "0.1.0"
