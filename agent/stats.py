"""Rank statistics shared by the detectors and the validity gauge: pure numpy, no agent imports.

One implementation, so the reference's rank correlation (``goodhart_rank_correlation``) and the
proxy's validity (``goodhart_proxy_validity``) can never disagree on the same numbers. They equal
``scipy.stats.rankdata(method="average")`` and ``scipy.stats.spearmanr``, computed directly because
the library calls spend most of their time validating input.

>>> import numpy as np
>>> average_ranks(np.array([3.0, 1.0, 3.0]))
array([2.5, 1. , 2.5])
>>> round(spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])), 2)
0.8
"""

from __future__ import annotations

import math

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy's ``rankdata(method='average')``)."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(x))
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 values or when
    either side is constant (a correlation of two points is always ±1, which says nothing)."""
    if len(x) < 3:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan
