"""Deterministic stratified splits, so a seed names one split on every machine."""

import numpy as np


def stratified_split(labels, fractions, seed):
    """Index arrays, one per fraction, with each class divided in the same proportions.

    Args:
        labels: 1-D integer labels.
        fractions: fractions of each class per split, summing to 1 (e.g. ``(0.7, 0.1, 0.2)``).
        seed: integer; the same seed and labels always give the same indices.

    Returns:
        A list of sorted index arrays, pairwise disjoint and together covering every example.
    """
    labels = np.asarray(labels)
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"`fractions` must be non-negative and sum to 1. Received: {fractions.tolist()}")
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.round(np.cumsum(fractions) * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, bounds[:-1])):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]
