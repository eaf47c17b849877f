"""Data: the landing folder read and checked, sessions serialized and split."""
