"""Masks, scorers and pruning algorithms (IMP with rewinding, pruning at initialisation)."""
