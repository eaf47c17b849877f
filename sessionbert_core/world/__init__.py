"""The synthetic world: its structure, its users and sessions, and its ground truth."""
