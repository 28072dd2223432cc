"""Scorer registry: a new method is one module plus one import line here."""
from .base import SCORERS, Scorer, ScoringBatches
from . import basic  # noqa: F401  (registers random, magnitude)
from . import synflow, px  # noqa: F401
from . import snip, grasp, prospr, phew, ntksap  # noqa: F401

__all__ = ["SCORERS", "Scorer", "ScoringBatches"]
