"""How many of N weights a density d keeps (torch-free: method registrations name their rule).

'round' is this project's rule (exactly round(d*N)); the others are the rules of the methods'
reference code, for reproducing a published mask exactly (``prune.count_rule: reference``; each
method registers its own).
"""
from __future__ import annotations

import math

COUNT_RULES = {
    "round": lambda d, n: int(round(d * n)),
    "floor": lambda d, n: int(d * n),  # FORCE / iterative SNIP (naver/force): int(keep_ratio * N)
    "ceil": lambda d, n: int(math.ceil(d * n)),  # ProsPr (mil-ad/prospr)
    "complement_floor": lambda d, n: n - int((1.0 - d) * n),  # Synaptic-Flow, NTK-SAP: prune int((1-d)N)
}


def kept_count(density: float, total: int, rule: str = "round") -> int:
    try:
        return min(total, max(0, COUNT_RULES[rule](density, total)))
    except KeyError:
        raise ValueError(f"unknown count rule {rule!r}; allowed: {', '.join(COUNT_RULES)}") from None
