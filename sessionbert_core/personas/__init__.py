"""Personas: session embeddings, what a user is, cosine K-means and the mapping to personas."""
