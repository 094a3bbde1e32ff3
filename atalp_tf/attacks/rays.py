"""RayS (Chen & Gu, KDD 2020): a hard-label L-inf attack, the paper's check beside AutoAttack.

It sees only the predicted class. It searches over ray directions ``d`` in ``{-1, +1}^D`` for
the one along which the decision boundary is closest, ``r(d) = min {r : f(x + r d) != y}``,
with ``r`` the L-inf radius and points clipped to the pixel range. Starting from ``d = 1``,
it flips the sign of one block of coordinates at a time: the whole input, then its halves,
quarters, ... down to single coordinates, where it stays for the rest of the budget. Blocks
are cut in channel-major (CHW) order, as the reference cuts PyTorch's tensors, so a block at
a coarse level is a band of rows of one colour channel rather than of all three.

Query accounting follows the reference implementation (uclaml/RayS):

* a flip costs one query: is the flipped ray already adversarial at the current best radius?
  If not, it cannot be nearer, and the search moves on;
* only a flip that succeeds is refined, by bisection on ``[0, best]`` down to ``tolerance``
  (the reference's 1e-3 along the unit-L2 ray, ``1e-3 / sqrt(D)`` in L-inf radius), one
  query per halving;
* every example counts its own queries, including one for its clean prediction, and never
  spends more than ``queries``; an example stops once it is adversarial within ``eps`` (the
  radius only needs to go below eps) or out of budget, and the batch stops when all have.

The result is the point at radius ``min(r, eps)`` along the best ray: adversarial exactly
when ``r <= eps``.
"""

import math

import tensorflow as tf

from atalp_tf.attacks import pgd


def channel_major_order(shape):
    """For an image of ``shape`` (H, W, C), each pixel's position in CHW flattening."""
    height, width, channels = shape
    h = tf.range(height)[:, None, None]
    w = tf.range(width)[None, :, None]
    c = tf.range(channels)[None, None, :]
    return c * height * width + h * width + w


def rays(logits_fn, x, labels, *, eps, queries, tolerance=None, pixel_range=(0.0, 1.0)):
    """Examples within ``eps`` (L-inf) found with at most ``queries`` hard-label queries each.

    Returns ``(x_adv, radius, used)``: the points; per example, the smallest boundary radius
    found (0 for a misclassified input, ``inf`` when no ray met the boundary) and the queries
    it spent.
    """
    lo, hi = pixel_range
    x = tf.convert_to_tensor(x, tf.float32)
    labels = tf.cast(labels, tf.int32)
    flat_size = math.prod(x.shape[1:])
    if tolerance is None:
        tolerance = 1e-3 / math.sqrt(flat_size)
    order = channel_major_order(x.shape[1:])[None]
    batch = tf.shape(x)[0]
    # L-inf radius 1 spans the whole pixel range: the clipped ray ends at a corner of the box.
    far = tf.ones([batch])

    def point(radius, direction):
        return tf.clip_by_value(x + radius[:, None, None, None] * direction, lo, hi)

    def fooled(radius, direction):
        logits = logits_fn(point(radius, direction))
        return tf.argmax(logits, axis=-1, output_type=tf.int32) != labels

    def count(used, asking):
        return used + tf.cast(asking, tf.int32)

    direction = tf.ones_like(x)
    wrong = fooled(tf.zeros([batch]), direction)
    used = tf.ones([batch], tf.int32)
    best = tf.where(wrong, 0.0, math.inf)

    def active(used, best):
        return (used < queries) & (best > eps)

    def bisect(low, high, searching, used, candidate):
        # high is adversarial along the candidate ray and low is not, at every step.
        def open_(low, high, searching, used):
            return searching & (high - low > tolerance) & (used < queries)

        def body(low, high, searching, used):
            asking = open_(low, high, searching, used)
            mid = (low + high) / 2.0
            hit = fooled(mid, candidate)
            used = count(used, asking)
            high = tf.where(asking & hit, mid, high)
            low = tf.where(asking & ~hit, mid, low)
            return low, high, asking, used

        low, high, _, used = tf.while_loop(
            lambda *s: tf.reduce_any(open_(*s)), body, (low, high, searching, used),
            parallel_iterations=1,
        )
        return high, used

    def body(level, block, direction, best, used):
        size = (flat_size + 2**level - 1) // 2**level
        start, end = block * size, tf.minimum((block + 1) * size, flat_size)
        flip = (order >= start) & (order < end)
        candidate = tf.where(flip, -direction, direction)
        asking = active(used, best)
        probe = tf.minimum(best, far)
        nearer = asking & fooled(probe, candidate)
        used = count(used, asking)
        radius, used = bisect(tf.zeros_like(best), probe, nearer, used, candidate)
        better = nearer & (radius < best)
        direction = tf.where(better[:, None, None, None], candidate, direction)
        best = tf.where(better, radius, best)
        # Next block; after a level's last block, halve the blocks until they are single
        # coordinates, then keep cycling over those.
        last = end >= flat_size
        level = tf.where(last & (size > 1), level + 1, level)
        block = tf.where(last, 0, block + 1)
        return level, block, direction, best, used

    _, _, direction, best, used = tf.while_loop(
        lambda level, block, direction, best, used: tf.reduce_any(active(used, best)),
        body,
        (tf.constant(0), tf.constant(0), direction, best, used),
        parallel_iterations=1,
    )
    radius = tf.minimum(best, eps)
    return pgd.project(point(radius, direction), x, eps, "linf", lo, hi), best, used
