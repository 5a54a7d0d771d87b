"""Synthetic corpora at a requested diversity level."""
