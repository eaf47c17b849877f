"""Serving: the model as an MLflow pyfunc, and the HTTP server in front of it."""
