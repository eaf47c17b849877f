"""New-service recommendation: the rankers, the ranker chosen on validation users, Hit@k."""
