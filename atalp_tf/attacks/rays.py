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
when ``r <= eps``. Under a ``core.EOT`` wrapper a query is answered by the expected logits over
the draws (each query then costs that many passes).
"""

import math

import tensorflow as tf

from atalp_tf.attacks import core


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
        logits = core.expected_logits(logits_fn, point(radius, direction))
        return tf.argmax(logits, axis=-1, output_type=tf.int32) != labels

    direction = tf.ones_like(x)
    wrong = fooled(tf.zeros([batch]), direction)
    used = tf.ones([batch], tf.int32)
    best = tf.where(wrong, 0.0, math.inf)

    def block_size(level):
        blocks = tf.bitwise.left_shift(tf.ones_like(level), level)
        return (flat_size + blocks - 1) // blocks

    def expand(v):
        return v[:, None, None, None]

    def body(level, block, direction, best, used, searching, low, high, candidate):
        # Every example still running asks exactly one query per iteration, of its own
        # state: a flip of its next block (is it adversarial at the best radius?) or a halving
        # of the bisection a successful flip started. So no example waits on another's
        # bisection, and the batch makes at most ``queries`` passes.
        asking = (used < queries) & (best > eps)
        size = block_size(level)
        start, end = block * size, tf.minimum((block + 1) * size, flat_size)
        flip = (order >= expand(start)) & (order < expand(end))
        flipped = tf.where(flip, -direction, direction)
        ray = tf.where(expand(searching), candidate, flipped)
        probe = tf.minimum(best, far)
        mid = (low + high) / 2.0
        hit = fooled(tf.where(searching, mid, probe), ray) & asking
        used = used + tf.cast(asking, tf.int32)
        # A flip that is adversarial at the best radius is nearer: bisect [0, probe] along it.
        starts = asking & ~searching & hit
        low = tf.where(starts, 0.0, tf.where(asking & searching & ~hit, mid, low))
        high = tf.where(starts, probe, tf.where(asking & searching & hit, mid, high))
        candidate = tf.where(expand(starts), flipped, candidate)
        searching = searching | starts
        # high is adversarial along the candidate and low is not; the search ends at the
        # tolerance or when the budget does, and keeps the candidate if it came nearer.
        done = searching & ((high - low <= tolerance) | (used >= queries))
        better = done & (high < best)
        direction = tf.where(expand(better), candidate, direction)
        best = tf.where(better, high, best)
        searching = searching & ~done
        # A flip asked and refused, or a search ended: that example moves to its next block;
        # after a level's last block, to the next level until blocks are single coordinates.
        moves = (asking & ~searching & ~starts) | done
        last = end >= flat_size
        level = tf.where(moves & last & (size > 1), level + 1, level)
        block = tf.where(moves, tf.where(last, 0, block + 1), block)
        return level, block, direction, best, used, searching, low, high, candidate

    zeros = tf.zeros([batch], tf.int32)
    state = (zeros, zeros, direction, best, used, tf.zeros([batch], tf.bool), tf.zeros([batch]),
             tf.zeros([batch]), direction)
    _, _, direction, best, used, *_ = tf.while_loop(
        lambda level, block, direction, best, used, *_: tf.reduce_any((used < queries) & (best > eps)),
        body, state, parallel_iterations=1,
    )
    radius = tf.minimum(best, eps)
    return core.project(point(radius, direction), x, eps, "linf", lo, hi), best, used


def run(logits_fn, x, labels, *, eps, budget, seed=None, pixel_range=(0.0, 1.0)):
    """The evaluation's entry point: RayS with ``budget`` queries per example; it draws nothing
    at random. Returns ``(x_adv, {"radius": ..., "queries": ...})``."""
    del seed
    x_adv, radius, used = rays(logits_fn, x, labels, eps=eps, queries=budget, pixel_range=pixel_range)
    return x_adv, {"radius": radius, "queries": used}


def cost(budget, num_classes, **options):
    """``(gradient passes, forward passes)`` of one ``run``, at most: the clean query and one
    pass per further query of the example that asks longest."""
    return 0, budget
