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
        counts = _allocate(len(members), fractions)
        for part, chunk in zip(parts, np.split(members, np.cumsum(counts)[:-1])):
            part.append(chunk)
    return [np.sort(np.concatenate(part)) for part in parts]


def _allocate(total, fractions):
    """Whole counts summing to ``total``, as near ``fractions * total`` as possible.

    Largest remainders get the rounding; then every part with a non-zero fraction gets at
    least one example when there are enough, so a small class still appears in each split.
    """
    exact = fractions * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    wanted = fractions > 0
    if total >= wanted.sum():
        for i in np.flatnonzero(wanted & (counts == 0)):
            counts[i] += 1
            counts[np.argmax(counts)] -= 1
    return counts
