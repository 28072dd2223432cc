"""Shared substrate for every stage: datasets, models and the masked training loop.

Kept separate from `pipelines/`, `pruning/`, `distill/` and `search/` so that each of them can use the
same data splits, architectures and trainer without importing one another.
"""
