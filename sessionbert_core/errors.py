"""Errors a user can act on: each message names the file or setting and what is wrong with it."""


class IngestError(ValueError):
    """A landing file that cannot be ingested at all; the message names the file and the problem."""
