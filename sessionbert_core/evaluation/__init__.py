"""Evaluation: next-activity scores, the baselines, what serves, and the quality gates."""
