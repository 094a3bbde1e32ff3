"""RayS (Chen & Gu, KDD 2020): a hard-label L-inf attack, the paper's check beside AutoAttack.

It sees only the predicted class. It searches over ray directions ``d`` in ``{-1, +1}^D`` for
the one along which the decision boundary is closest, ``r(d) = min {r : f(x + r d) != y}``:
starting from ``d = 1``, it flips the sign of one block of coordinates at a time (the whole
input, then halves, quarters, ...) and keeps a flip when the boundary along the new direction
is nearer. One attempt costs a query at the current best radius (is the new ray already
adversarial there? if not, it cannot be nearer) plus a fixed ``search_steps``-query binary
search, so every example in a batch spends the same ``1 + search_steps`` queries per attempt.

The result is the point at radius ``min(r, eps)`` along the best ray: adversarial when
``r <= eps``. Points are clipped to the pixel range, so ``r`` is measured before clipping.
"""

import math

import tensorflow as tf

from atalp_tf import attacks

_FIRST_RADII = tuple(i / 10 for i in range(1, 11))


def rays(logits_fn, x, labels, *, eps, queries, search_steps=10, pixel_range=(0.0, 1.0)):
    """Examples within ``eps`` (L-inf) found with about ``queries`` hard-label queries."""
    lo, hi = pixel_range
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    flat_size = math.prod(x.shape[1:])
    coordinate = tf.reshape(tf.range(flat_size), [1, *x.shape[1:]])
    attempts = max((queries - len(_FIRST_RADII)) // (1 + search_steps), 0)

    def point(radius, direction):
        return tf.clip_by_value(x + radius[:, None, None, None] * direction, lo, hi)

    def fooled(radius, direction):
        logits = logits_fn(point(radius, direction))
        return tf.argmax(logits, axis=-1, output_type=tf.int32) != labels

    def refine(low, high, direction):
        # Bisection on [low, high], where high is adversarial and low is not.
        for _ in range(search_steps):
            mid = (low + high) / 2.0
            hit = fooled(mid, direction)
            low, high = tf.where(hit, low, mid), tf.where(hit, mid, high)
        return high

    direction = tf.ones_like(x)
    batch = tf.shape(x)[0]
    best = tf.fill([batch], math.inf)
    for radius in _FIRST_RADII:
        at = tf.fill([batch], radius)
        best = tf.where(tf.math.is_inf(best) & fooled(at, direction), at, best)
    found = tf.math.is_finite(best)
    best = tf.where(found, refine(tf.where(found, best - 0.1, 0.0), tf.where(found, best, 0.0), direction), best)

    def body(attempt, level, block, direction, best):
        blocks = 2**level
        size = (flat_size + blocks - 1) // blocks
        start, end = block * size, tf.minimum((block + 1) * size, flat_size)
        flip = (coordinate >= start) & (coordinate < end)
        candidate = tf.where(flip, -direction, direction)
        # Without a known boundary there is nothing to beat: try the far end instead.
        probe = tf.where(tf.math.is_inf(best), tf.ones_like(best), best)
        nearer = fooled(probe, candidate)
        radius = refine(tf.zeros_like(best), probe, candidate)
        better = nearer & (radius < best)
        direction = tf.where(better[:, None, None, None], candidate, direction)
        best = tf.where(better, radius, best)
        # Next block; after the last block of a level, split finer (back to one block at
        # the finest level, so a long budget keeps searching).
        last = (block + 1 == blocks) | (end >= flat_size)
        level = tf.where(last, tf.where(size <= 1, 0, level + 1), level)
        block = tf.where(last, 0, block + 1)
        return attempt + 1, level, block, direction, best

    _, _, _, direction, best = tf.while_loop(
        lambda attempt, *_: attempt < attempts,
        body,
        (tf.constant(0), tf.constant(0), tf.constant(0), direction, best),
        parallel_iterations=1,
    )
    radius = tf.minimum(best, eps)
    return attacks.project(point(radius, direction), x, eps, "linf", lo, hi), best
